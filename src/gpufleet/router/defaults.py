"""Per-route request defaults: sampling the client did not set, a max_tokens cap, a persona system prompt.

Thinking mode and the reasoning cap are not applied here: they change the dialect (see table.Candidate),
which turns them into Qwen's template switch and the response-side cap.
"""

from __future__ import annotations

from typing import Any

from gpufleet.config import RouteDefaults

_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
             "repetition_penalty", "seed", "stop")


def apply_request_defaults(payload: dict[str, Any], defaults: RouteDefaults, *, kind: str) -> dict[str, Any]:
    """A copy of `payload` with the route's defaults where the client chose nothing, and its caps applied.

    The persona's system prompt goes first; a system message the client sent is kept after it (in the same
    system message, since chat templates such as Qwen's render only a leading system message as such).
    """
    out = dict(payload)
    for key in _SAMPLING:
        value = getattr(defaults, key)
        if value is not None and out.get(key) is None:
            out[key] = value
    token_key = "max_completion_tokens" if out.get("max_completion_tokens") is not None else "max_tokens"
    asked = out.get(token_key)
    if asked is None and defaults.max_tokens is not None:
        asked = out[token_key] = defaults.max_tokens
    cap = defaults.max_tokens_cap
    if cap is not None and (asked is None or (isinstance(asked, int) and asked > cap)):
        out[token_key] = cap
    if defaults.system_prompt and kind == "chat" and isinstance(out.get("messages"), list):
        out["messages"] = with_system_prompt(out["messages"], defaults.system_prompt)
    return out


def with_system_prompt(messages: list[Any], prompt: str) -> list[Any]:
    """`messages` with `prompt` as (the start of) the leading system message."""
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") == "system":
        content = first.get("content")
        if isinstance(content, str):
            return [{**first, "content": f"{prompt}\n\n{content}"}, *messages[1:]]
        if isinstance(content, list):
            return [{**first, "content": [{"type": "text", "text": prompt}, *content]}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]
