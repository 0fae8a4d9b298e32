"""chat.completion -> OpenAI Responses `response` object (also the final object of a stream)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from gpufleet.protocols.chat_form import reasoning_text

# Echoed back as the Responses API does: what the request asked for.
_ECHOED = (
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
    "prompt_cache_key",
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def response_usage(chat_usage: Any) -> dict[str, Any]:
    usage = chat_usage if isinstance(chat_usage, dict) else {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0
    reasoning = completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached or 0)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning or 0)},
        "total_tokens": prompt + completion,
    }


def echoed_fields(request: dict[str, Any]) -> dict[str, Any]:
    """What a response object repeats of its request (the `_ECHOED` keys it sent, and defaults for the rest)."""
    echoed = {key: request[key] for key in _ECHOED if key in request}
    echoed.setdefault("tools", [])
    echoed.setdefault("tool_choice", "auto")
    echoed.setdefault("parallel_tool_calls", True)
    echoed.setdefault("store", True)
    return echoed


def response_object(
    request: dict[str, Any],
    *,
    response_id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `response` object in any state (in_progress, completed, incomplete, failed)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": model,
        "output": output,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "usage": usage,
        **echoed_fields(request),
    }


def reasoning_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id or new_id("rs"), "summary": [{"type": "summary_text", "text": text}]}


def message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call_item(call: dict[str, Any], item_id: str | None = None, status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    return {
        "type": "function_call",
        "id": item_id or new_id("fc"),
        "status": status,
        "call_id": call.get("id") or new_id("call"),
        "name": function.get("name") or "",
        "arguments": arguments if isinstance(arguments, str) else "{}",
    }


def chat_to_response(
    data: dict[str, Any], request: dict[str, Any], model: str, response_id: str | None = None
) -> dict[str, Any]:
    """One chat.completion (after the dialect) as a Responses `response` object."""
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    reasoning = reasoning_text(message)
    if reasoning:
        output.append(reasoning_item(reasoning))
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(message_item(text))
    for call in message.get("tool_calls") or ():
        output.append(function_call_item(call))
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    return response_object(
        request,
        response_id=response_id or new_id("resp"),
        model=model,
        created_at=int(time.time()),
        status=status,
        output=output,
        usage=response_usage(data.get("usage")),
    )


def output_to_chat(output: list[dict[str, Any]]) -> dict[str, Any]:
    """A response's output items as the assistant chat message (for the next turn's history)."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    texts: list[str] = []
    for item in output:
        if item.get("type") == "reasoning":
            message["reasoning_content"] = "".join(part.get("text", "") for part in item.get("summary") or ())
        elif item.get("type") == "message":
            texts.extend(part.get("text", "") for part in item.get("content") or ())
        elif item.get("type") == "function_call":
            message.setdefault("tool_calls", []).append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }
            )
    if texts:
        message["content"] = "".join(texts)
    return message
