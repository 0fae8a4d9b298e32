"""What both protocol adapters share: the translated request and the chat-form fix-ups Qwen templates need."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gpufleet.errors import RequestError

_SYSTEM_ROLES = ("system", "developer")


@dataclass
class Translated:
    """A client request turned into a chat-completions payload.

    `dropped` names what the model cannot use and was left out (hosted tools, server-tool blocks): the
    gateway reports it in the `x-gpufleet-dropped` header instead of refusing the request (agents always
    send such tools). `session` is the client's conversation id for replica affinity, if it sent one.
    """

    payload: dict[str, Any]
    dropped: list[str] = field(default_factory=list)
    session: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # the conversation, without instructions

    def drop(self, name: str) -> None:
        if name not in self.dropped:
            self.dropped.append(name)


def fold_system_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One system message, first; a system message later in the conversation becomes a user message.

    Qwen's chat templates raise "System message must be at the beginning" for any other layout, and agents
    inject system text mid-conversation (Claude Code's reminders, Codex's developer messages). Leading system
    messages are joined; a later one keeps its place (so the prompt prefix, and the engine's prefix cache,
    stay stable) as a user message marked as a system note.
    """
    head: list[str] = []
    index = 0
    while index < len(messages) and messages[index].get("role") in _SYSTEM_ROLES:
        head.append(content_text(messages[index].get("content")))
        index += 1
    out: list[dict[str, Any]] = []
    if head:
        out.append({"role": "system", "content": "\n\n".join(text for text in head if text)})
    for message in messages[index:]:
        if message.get("role") in _SYSTEM_ROLES:
            out.append({"role": "user", "content": "[system note]\n" + content_text(message.get("content"))})
        else:
            out.append(message)
    return out


def content_text(content: Any) -> str:
    """The text of a chat content (a string, or a list of parts whose text parts are joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def json_arguments(value: Any) -> str:
    """Tool-call arguments as the JSON string chat form carries (RequestError when not JSON-encodable)."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value if value is not None else {}).decode()
    except orjson.JSONEncodeError as err:  # an integer beyond 64 bits, nesting deeper than 254 levels
        raise RequestError(f"tool call arguments cannot be encoded as JSON: {err}", code="invalid_value") from None


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A chat tool call's arguments as an object (Anthropic's `input`); text that is not JSON is kept."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def positive_int(value: Any, param: str) -> int:
    """`value` when it is a positive integer (a bool is not one), else RequestError (400) naming `param`."""
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, "must be a positive integer", param)
    return int(value)


def copy_numbers(body: dict[str, Any], payload: dict[str, Any], keys: tuple[str, ...]) -> None:
    """The sampling numbers among `keys` that `body` sets, copied to `payload`; RequestError for a non-number."""
    for key in keys:
        value = body.get(key)
        if value is not None:
            require(isinstance(value, int | float) and not isinstance(value, bool), "must be a number", key)
            payload[key] = value


def function_tool(name: str, parameters: dict[str, Any], description: Any) -> dict[str, Any]:
    """A chat-form function tool (its description only when the client sent a string)."""
    function: dict[str, Any] = {"name": name, "parameters": parameters}
    if isinstance(description, str):
        function["description"] = description
    return {"type": "function", "function": function}


def reasoning_text(message: dict[str, Any]) -> str:
    """A chat message's or stream delta's reasoning (`reasoning_content`, or vLLM's newer `reasoning`); "" if none."""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return reasoning if isinstance(reasoning, str) else ""


def typed_parts(parts: list[Any], where: str, noun: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(path, part, its type) for each of a content list's parts; RequestError naming the part without a type.

    for path, block, kind in typed_parts(blocks, "messages[0].content", "content block"): ...
    """
    for index, part in enumerate(parts):
        path = f"{where}[{index}]"
        require(isinstance(part, dict) and isinstance(part.get("type"), str), f"a {noun} needs a type", path)
        yield path, part, part["type"]


def require(condition: bool, message: str, param: str) -> None:
    """RequestError (400) naming the field when `condition` is false."""
    if not condition:
        raise invalid(message, param)


def invalid(message: str, param: str) -> RequestError:
    """The 400 for a malformed field: `param: message`."""
    return RequestError(f"{param}: {message}", param=param, code="invalid_value")


def session_from_user_id(user_id: Any) -> str | None:
    """Claude Code's conversation in `metadata.user_id`: '..._session_<uuid>' or a JSON object's session_id."""
    if not isinstance(user_id, str) or not user_id:
        return None
    if user_id.startswith("{"):
        try:
            data = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return user_id
        if isinstance(data, dict) and isinstance(data.get("session_id"), str):
            return str(data["session_id"])
        return user_id
    marker = user_id.rfind("_session_")
    return user_id[marker + len("_session_") :] if marker >= 0 else user_id
