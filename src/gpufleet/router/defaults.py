"""Per-route request defaults: sampling the client did not set, a max_tokens cap, a persona system prompt.

Thinking mode and the reasoning cap are not applied here: they change the dialect (see table.Candidate),
which turns them into Qwen's template switch and the response-side cap.
"""

from __future__ import annotations

from typing import Any

from gpufleet.config import RouteDefaults

# Every name an engine reads as "how many tokens to generate": OpenAI's two, llama.cpp's n_predict (which wins
# over max_tokens there), TGI's max_new_tokens, Ollama's num_predict. A cap applies to all of them, or a
# client walks around it with the engine's own spelling (issue 12).
TOKEN_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "n_predict", "max_new_tokens", "num_predict")

_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
    "stop",
)


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
    if cap is not None:
        for key in TOKEN_LIMIT_FIELDS:
            if key in out or key == token_key:
                out[key] = capped(out.get(key), cap)
    if defaults.system_prompt and kind == "chat" and isinstance(out.get("messages"), list):
        out["messages"] = with_system_prompt(out["messages"], defaults.system_prompt)
    return out


def capped(asked: Any, cap: int) -> int:
    """`asked` clamped to `cap`; anything but a positive int (unset, -1 = "until the context is full") → cap."""
    if isinstance(asked, int) and not isinstance(asked, bool) and 0 < asked <= cap:
        return asked
    return cap


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
