"""vLLM sleep mode calls and the host-RAM check that decides whether a model may sleep.

vLLM started with `--enable-sleep-mode` and `VLLM_SERVER_DEV_MODE=1` (the routes exist only in dev mode) answers
`POST /sleep?level=1` (weights offloaded to host RAM, KV cache dropped), `POST /wake_up` and
`GET /is_sleeping` → `{"is_sleeping": bool}`. 0.26 answers sleep/wake with an empty 200 and 0.33 with a JSON
status, so success is judged by `/is_sleeping`, not by the body (reference/vllm-facts.md §2).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson

from gpufleet.errors import EngineError

MEMINFO = Path("/proc/meminfo")
_SLEEP_TIMEOUT = aiohttp.ClientTimeout(total=120)  # offloading tens of GiB of weights takes seconds


def engine_root(base_url: str) -> str:
    """`http://127.0.0.1:PORT` from an OpenAI base URL `http://127.0.0.1:PORT/v1`."""
    return base_url.removesuffix("/").removesuffix("/v1")


async def _is_sleeping(http: aiohttp.ClientSession, root: str) -> bool:
    async with http.get(f"{root}/is_sleeping") as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise EngineError(f"GET /is_sleeping answered HTTP {resp.status}: {raw[:200]!r}")
    data = orjson.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("is_sleeping"), bool):
        raise EngineError(f"GET /is_sleeping answered {raw[:200]!r}, not {{'is_sleeping': bool}}")
    return bool(data["is_sleeping"])


async def _post(http: aiohttp.ClientSession, url: str) -> None:
    async with http.post(url, timeout=_SLEEP_TIMEOUT) as resp:
        raw = await resp.read()
        if resp.status != 200:
            hint = " (is VLLM_SERVER_DEV_MODE=1 set?)" if resp.status == 404 else ""
            raise EngineError(f"POST {url} answered HTTP {resp.status}{hint}: {raw[:300]!r}")


async def sleep_engine(http: aiohttp.ClientSession, root: str, *, level: int = 1) -> None:
    """Put a vLLM engine to sleep; raises EngineError when it is not asleep afterwards."""
    try:
        await _post(http, f"{root}/sleep?level={level}")
        if not await _is_sleeping(http, root):
            raise EngineError("the engine accepted /sleep but /is_sleeping still says false")
    except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError) as err:
        raise EngineError(f"sleep failed: {type(err).__name__}: {err}") from None


async def wake_engine(http: aiohttp.ClientSession, root: str) -> None:
    """Wake a sleeping vLLM engine; raises EngineError when it is still asleep afterwards."""
    try:
        await _post(http, f"{root}/wake_up")
        if await _is_sleeping(http, root):
            raise EngineError("the engine accepted /wake_up but /is_sleeping still says true")
    except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError) as err:
        raise EngineError(f"wake_up failed: {type(err).__name__}: {err}") from None


def host_available_mib(meminfo: Path = MEMINFO) -> int | None:
    """MemAvailable from /proc/meminfo in MiB, or None where it cannot be read (not Linux)."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) // 1024
    return None


def sleep_refusal(need_mib: int | None, available_mib: int | None, reserve_mib: int) -> str | None:
    """Why a model must be stopped rather than slept (level 1 puts its weights in host RAM), or None if it may sleep.

    >>> sleep_refusal(8000, 20000, 2048) is None
    True
    """
    if need_mib is None:
        return "its memory_mib is not declared, so the host RAM its weights need is unknown"
    if available_mib is None:
        return "host RAM cannot be read (/proc/meminfo)"
    if available_mib - need_mib < reserve_mib:
        return (
            f"host RAM is short: {available_mib} MiB available, its weights need up to {need_mib} MiB "
            f"and {reserve_mib} MiB must stay free"
        )
    return None
