"""chat.completion -> Anthropic message, and Anthropic's error shapes."""

from __future__ import annotations

import secrets
from typing import Any

from gpufleet.protocols.chat_form import parse_arguments, reasoning_text

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic's error `type` per HTTP status (their documented table); anything else 5xx is an api_error.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# A gateway "not ready / overloaded" (503) is what Anthropic calls overloaded: 529, which its SDKs retry.
_STATUS_FOR_ANTHROPIC = {503: 529}

# Anthropic requires a signature on thinking blocks and clients send it back; no engine checks it.
THINKING_SIGNATURE = "gpufleet"


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def matched_stop(choice: dict[str, Any], answer: dict[str, Any]) -> str | None:
    """The stop string the engine says it matched, if it names one.

    vLLM: the choice's `stop_reason` (a string; an int is a stop token id, None is end of sequence).
    llama.cpp: `stop_type: "word"` with `stopping_word`, at the top of its native answers and in `__verbose`
    on its OpenAI routes when the server runs verbose (by default they name nothing: finish_reason "stop" only).
    """
    matched = choice.get("stop_reason")
    if isinstance(matched, str):
        return matched
    for source in (answer, answer.get("__verbose")):
        if isinstance(source, dict) and source.get("stop_type") == "word":
            word = source.get("stopping_word")
            if isinstance(word, str) and word:
                return word
    return None


def stop_reason(finish_reason: Any, matched: str | None, stops: list[str] | None) -> tuple[str | None, str | None]:
    """Anthropic (stop_reason, stop_sequence) for a chat finish_reason and the stop string the engine named.

    `stop_sequence` only when the engine named one of the client's `stop_sequences` (a string the dialect
    added is no client's sequence); a plain "stop" is `end_turn`: guessing from the text could name a
    sequence the model never produced.
    """
    if finish_reason is None:
        return None, None
    if finish_reason == "stop" and matched is not None and stops and matched in stops:
        return "stop_sequence", matched
    return _STOP_REASONS.get(str(finish_reason), "end_turn"), None


def usage_of(chat_usage: Any) -> dict[str, Any]:
    usage = chat_usage if isinstance(chat_usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": int(cached or 0),
    }


def chat_to_message(data: dict[str, Any], model: str, stops: list[str] | None = None) -> dict[str, Any]:
    """One chat.completion (after the dialect: reasoning split, tool calls parsed) as an Anthropic message."""
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = reasoning_text(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": THINKING_SIGNATURE})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                "name": function.get("name", ""),
                "input": parse_arguments(function.get("arguments")),
            }
        )
    finish = choice.get("finish_reason")
    if message.get("tool_calls") and finish == "stop":
        finish = "tool_calls"
    reason, sequence = stop_reason(finish or "stop", matched_stop(choice, data), stops)
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_of(data.get("usage")),
    }


def messages_error_status(status: int) -> int:
    return _STATUS_FOR_ANTHROPIC.get(status, status)


def messages_error_body(status: int, message: str) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}}` for an HTTP status (already mapped for Anthropic)."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}
