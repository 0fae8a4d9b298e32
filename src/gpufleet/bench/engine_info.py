"""Which engine answered a target, and its version, as far as the servers say (best effort, for the report).

    await engine_info(target, api_key=key)   # {"name": "vllm", "version": "0.11.0", "source": "..."}

A gateway target: the engine of its model from the gateway's `/status` (admin key where keys are set; a
route has no single engine). An engine URL: `owned_by` of its `/v1/models` entry, vLLM's `GET /version`,
llama.cpp's `GET /props` (`build_info`; the embedded xllamacpp build says `b0-unknown`). Nothing here fails
a benchmark: what a server does not answer stays None.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from gpufleet.bench.load import auth_headers
from gpufleet.bench.targets import BenchTarget

PROBE_TIMEOUT_S = 5


async def _get_json(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    try:
        async with session.get(url, headers=headers) as response:
            if response.status != 200:
                return None
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
        return None


def _status_engine(status: Any, model: str) -> str | None:
    models = status.get("models") if isinstance(status, dict) else None
    for entry in models if isinstance(models, list) else []:
        if isinstance(entry, dict) and (entry.get("name") == model or model in (entry.get("aliases") or [])):
            engine = entry.get("engine")
            return engine if isinstance(engine, str) else None
    return None


def _owned_by(listing: Any, model: str) -> str | None:
    data = listing.get("data") if isinstance(listing, dict) else None
    entries = [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []
    chosen = next((entry for entry in entries if entry.get("id") == model), entries[0] if entries else None)
    owner = chosen.get("owned_by") if chosen is not None else None
    return owner if isinstance(owner, str) else None


async def engine_info(target: BenchTarget, *, api_key: str | None) -> dict[str, Any]:
    """{"name", "version", "source"} of the engine behind `target`; None where the server does not say."""
    root = target.base_url.removesuffix("/v1")
    headers = auth_headers(target.api_key or api_key)
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if target.via_gateway:
            name = _status_engine(await _get_json(session, f"{root}/status", headers), target.model)
            return {
                "name": name,
                "version": None,
                "source": "gateway /status" if name else "gateway (a route, or /status not readable)",
            }
        owner = _owned_by(await _get_json(session, f"{target.base_url}/models", headers), target.model)
        version_body = await _get_json(session, f"{root}/version", headers)
        version = version_body.get("version") if isinstance(version_body, dict) else None
        source = "/v1/models owned_by"
        if isinstance(version, str):
            source += ", /version"
        else:
            props = await _get_json(session, f"{root}/props", headers)
            build = props.get("build_info") if isinstance(props, dict) else None
            version = build if isinstance(build, str) else None
            if version is not None:
                source += ", /props build_info"
        return {"name": owner, "version": version if isinstance(version, str) else None, "source": source}
