"""The common chat body recognised without pydantic: a yes here means `ChatCompletionRequest` accepts it.

`validate_request` (gateway/protocol.py) asks `is_plain_chat(payload)` first and runs the pydantic model only
when the answer is no: text messages, the usual sampling fields and no tools are most requests, and their
validation was 3-4% of a non-stream request's CPU (issue 22). The check is conservative: anything it does not
know for certain (content parts, tool calls, tools, a number out of range, a value of an unexpected type) says
no, and pydantic then accepts or rejects it with its own message, so the errors are the same as before.
`tests/test_plain_chat.py` holds it against the model on a table of bodies and their mutations.
"""

from __future__ import annotations

from typing import Any

# Engines keep token counts in 32-bit ints: 2**32 wrapped to a 1-token answer in llama.cpp, 2**63-1 passed.
MAX_TOKENS_LIMIT = 2**31 - 1
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TOOL_CHOICES = frozenset({"none", "auto", "required"})
# Every field ChatCompletionRequest / ChatMessage declares: any other key is an extra, allowed as is.
_REQUEST_FIELDS = frozenset(
    {
        "model",
        "stream",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stream_options",
        "messages",
        "max_completion_tokens",
        "tools",
        "tool_choice",
        "response_format",
    }
)


def is_plain_chat(payload: dict[str, Any]) -> bool:
    """True only when ChatCompletionRequest would accept `payload`; False says nothing (ask pydantic)."""
    model = payload.get("model")
    if type(model) is not str or not model:
        return False
    messages = payload.get("messages")
    if type(messages) is not list or not messages:
        return False
    for message in messages:
        if type(message) is not dict or not _plain_message(message):
            return False
    if len(payload) == 2:
        return True
    return all(_plain_field(key, value) for key, value in payload.items() if key in _REQUEST_FIELDS)


def _plain_message(message: dict[str, Any]) -> bool:
    role = message.get("role")
    if type(role) is not str or role not in _ROLES:
        return False
    content = message.get("content")
    if content is not None and type(content) is not str:
        return False  # content parts: pydantic checks each
    if len(message) == 2 and "content" in message:
        return True
    for key in ("name", "tool_call_id"):  # present means a string (an explicit null is refused)
        if key in message and type(message[key]) is not str:
            return False
    reasoning = message.get("reasoning_content")
    return (reasoning is None or type(reasoning) is str) and message.get("tool_calls") is None


def _plain_field(key: str, value: Any) -> bool:
    if key in ("model", "messages"):
        return True  # checked above
    if key == "stream":
        return type(value) is bool
    if value is None:
        return key != "stream"  # every other declared field may be null
    kind = type(value)
    if key in ("max_tokens", "max_completion_tokens"):
        return kind is int and 1 <= value <= MAX_TOKENS_LIMIT
    if key == "n":
        return kind is int and 1 <= value <= 128
    if key == "temperature":
        return (kind is int or kind is float) and 0 <= value <= 2
    if key == "top_p":
        return (kind is int or kind is float) and 0 < value <= 1
    if key in ("stream_options", "response_format"):
        return kind is dict and all(type(name) is str for name in value)
    if key == "tool_choice":
        return kind is str and value in _TOOL_CHOICES
    return False  # tools: pydantic checks each definition
