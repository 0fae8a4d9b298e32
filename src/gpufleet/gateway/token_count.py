"""Counting a chat-form prompt's tokens for `count_tokens`: the engine's own tokenizer, else an estimate.

vLLM: `POST /tokenize` with the messages (it applies the chat template). llama.cpp: `POST /apply-template`
then `POST /tokenize`. Only an engine that is already up is asked (counting never cold-starts a model);
otherwise, or when the engine cannot answer, the count is an estimate (4 characters a token) and the
`x-gpufleet-token-count` header says `estimate`.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import orjson

from gpufleet.errors import GpufleetError
from gpufleet.protocols.chat_form import content_text

if TYPE_CHECKING:
    from gpufleet.gateway.state import Gateway

_TIMEOUT_S = 10.0


async def count_prompt_tokens(gateway: Gateway, payload: dict[str, Any]) -> tuple[int, str]:
    """(tokens, method): method is `engine:<engine>` or `estimate`."""
    route = gateway.table.resolve(payload["model"], payload)
    target = route.primary
    model = gateway.config.models.get(target.model)
    engine = getattr(model, "engine", None)
    upstream = gateway.supervisor.ready_upstream(target.model) if target.remote is None else None
    if upstream is not None and engine in ("vllm", "llamacpp"):
        root = upstream.base_url.removesuffix("/").removesuffix("/v1")
        key = upstream.api_key  # the engine's per-start key: engines answer only the gateway
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                count = await (
                    _vllm(gateway, root, key, target.upstream_model, payload)
                    if engine == "vllm"
                    else _llamacpp(gateway, root, key, payload)
                )
        except (GpufleetError, TimeoutError, ValueError, KeyError, TypeError):
            count = None
        if count is not None:
            return count, f"engine:{engine}"
    return estimate_tokens(payload), "estimate"


def estimate_tokens(payload: dict[str, Any]) -> int:
    """About 4 characters a token over the messages' text and the tool definitions, plus a few per message."""
    chars = 0
    messages = payload.get("messages") or []
    for message in messages:
        chars += len(content_text(message.get("content"))) + len(str(message.get("reasoning_content") or ""))
        for call in message.get("tool_calls") or ():
            chars += len(orjson.dumps(call))
    if payload.get("tools"):
        chars += len(str(payload["tools"]))  # str, not JSON: any value a client sent has one
    return math.ceil(chars / 4) + 4 * len(messages)


async def _post(gateway: Gateway, url: str, key: str | None, body: dict[str, Any]) -> Any:
    response = await gateway.client.post(url, orjson.dumps(body), api_key=key, timeout_s=_TIMEOUT_S)
    raw = await response.read()
    response.release()
    if response.status != 200:
        raise ValueError(f"{url} answered HTTP {response.status}")
    return orjson.loads(raw)


async def _vllm(gateway: Gateway, root: str, key: str | None, model: str, payload: dict[str, Any]) -> int:
    body: dict[str, Any] = {"model": model, "messages": payload["messages"], "add_generation_prompt": True}
    if payload.get("tools"):
        body["tools"] = payload["tools"]
    data = await _post(gateway, root + "/tokenize", key, body)
    return int(data["count"])


async def _llamacpp(gateway: Gateway, root: str, key: str | None, payload: dict[str, Any]) -> int:
    body: dict[str, Any] = {"messages": payload["messages"]}
    if payload.get("tools"):
        body["tools"] = payload["tools"]
    prompt = (await _post(gateway, root + "/apply-template", key, body))["prompt"]
    tokens = (await _post(gateway, root + "/tokenize", key, {"content": prompt}))["tokens"]
    return len(tokens)
