"""Anthropic Messages request -> chat-completions payload (the form the router, relay and dialect speak).

Unknown top-level fields (`context_management`, `output_config`, `service_tier`, ...) are ignored: clients
send them to any server. Server tools and blocks only Anthropic can run are dropped and named.
"""

from __future__ import annotations

from typing import Any

from gpufleet.protocols.chat_form import (
    Translated,
    content_text,
    copy_numbers,
    fold_system_messages,
    function_tool,
    invalid,
    json_arguments,
    positive_int,
    require,
    session_from_user_id,
    typed_parts,
)

# Blocks produced or consumed by Anthropic-hosted tools: nothing a local model can see or run.
_SERVER_BLOCKS = (
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
    "search_result",
    "tool_search_tool_result",
)


def messages_to_chat(body: Any) -> Translated:
    """Translate one `POST /v1/messages` body; RequestError (400) naming the field when it is malformed."""
    require(isinstance(body, dict), "the request body must be a JSON object", "body")
    model = body.get("model")
    require(isinstance(model, str) and bool(model), "a model name is required", "model")
    messages = body.get("messages")
    require(isinstance(messages, list) and bool(messages), "a non-empty list of messages is required", "messages")
    out = Translated(payload={})
    chat: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        chat.append({"role": "system", "content": _system_text(system)})
    for index, message in enumerate(messages):
        chat.extend(_message(message, f"messages[{index}]", out))
    payload: dict[str, Any] = {"model": model, "messages": fold_system_messages(chat)}
    _sampling(body, payload)
    _tools(body, payload, out)
    _thinking(body, payload)
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        out.session = session_from_user_id(metadata.get("user_id"))
        if out.session:
            payload["user"] = out.session
    if body.get("stream") is True:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    out.payload = payload
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    require(isinstance(system, list), "must be a string or a list of text blocks", "system")
    texts = []
    for index, block in enumerate(system):
        require(
            isinstance(block, dict) and isinstance(block.get("text"), str),
            "each system block needs a string 'text' (cache_control is ignored)",
            f"system[{index}]",
        )
        texts.append(block["text"])
    return "\n\n".join(texts)


def _sampling(body: dict[str, Any], payload: dict[str, Any]) -> None:
    if body.get("max_tokens") is not None:
        payload["max_tokens"] = positive_int(body["max_tokens"], "max_tokens")
    copy_numbers(body, payload, ("temperature", "top_p", "top_k"))
    stops = body.get("stop_sequences")
    if stops:
        require(
            isinstance(stops, list) and all(isinstance(s, str) for s in stops),
            "must be a list of strings",
            "stop_sequences",
        )
        payload["stop"] = stops


def _message(message: Any, where: str, out: Translated) -> list[dict[str, Any]]:
    require(isinstance(message, dict), "must be an object with role and content", where)
    role = message.get("role")
    # Claude Code 2.1 also puts `system` messages among the turns (its environment notes).
    require(role in ("user", "assistant", "system"), "role must be 'user' or 'assistant'", f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    require(isinstance(content, list), "must be a string or a list of content blocks", f"{where}.content")
    if role == "system":
        return [{"role": "system", "content": _system_text(content)}]
    if role == "assistant":
        return [_assistant(content, f"{where}.content", out)]
    return _user(content, f"{where}.content", out)


def _user(blocks: list[Any], where: str, out: Translated) -> list[dict[str, Any]]:
    """Tool results become tool messages (first, as chat templates expect them right after the call)."""
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for path, block, kind in typed_parts(blocks, where, "content block"):
        if kind == "tool_result":
            require(isinstance(block.get("tool_use_id"), str), "tool_use_id is required", f"{path}.tool_use_id")
            text, images = _tool_result_content(block.get("content"), f"{path}.content")
            if block.get("is_error"):
                text = "Error: " + text
            tool_messages.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            parts.extend(images)  # a chat tool message carries text only: its images follow as user content
        elif kind in _SERVER_BLOCKS:
            out.drop(kind)
        else:
            part = _content_part(block, path, out)
            if part is not None:
                parts.append(part)
    result = list(tool_messages)
    if parts:
        result.append({"role": "user", "content": _simplify(parts)})
    return result


def _assistant(blocks: list[Any], where: str, out: Translated) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for path, block, kind in typed_parts(blocks, where, "content block"):
        if kind == "text":
            require(isinstance(block.get("text"), str), "needs a string 'text'", f"{path}.text")
            texts.append(block["text"])
        elif kind == "thinking":
            if isinstance(block.get("thinking"), str):
                reasoning.append(block["thinking"])
        elif kind == "tool_use":
            require(
                isinstance(block.get("id"), str) and isinstance(block.get("name"), str),
                "a tool_use block needs string id and name",
                path,
            )
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json_arguments(block.get("input"))},
                }
            )
        elif kind == "redacted_thinking" or kind in _SERVER_BLOCKS:
            out.drop(kind)  # encrypted by Anthropic, or run by Anthropic: nothing a local model can read
        else:
            out.drop(kind)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return message


def _content_part(block: dict[str, Any], path: str, out: Translated) -> dict[str, Any] | None:
    kind = block["type"]
    if kind == "text":
        require(isinstance(block.get("text"), str), "needs a string 'text'", f"{path}.text")
        return {"type": "text", "text": block["text"]}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source"), f"{path}.source")}}
    if kind == "document":
        return {"type": "text", "text": _document_text(block, path)}
    if kind in ("thinking", "redacted_thinking"):
        return None  # only meaningful in assistant turns
    out.drop(kind)
    return None


def _image_url(source: Any, path: str) -> str:
    require(isinstance(source, dict), "an image needs a source object", path)
    if source.get("type") == "base64":
        require(
            isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str),
            "a base64 image source needs media_type and data",
            path,
        )
        return f"data:{source['media_type']};base64,{source['data']}"
    require(
        source.get("type") == "url" and isinstance(source.get("url"), str),
        "source.type must be 'base64' or 'url'",
        f"{path}.type",
    )
    return str(source["url"])


def _document_text(block: dict[str, Any], path: str) -> str:
    """A document block as text: plain-text and content sources only (no PDF reader behind a chat engine)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid("a document needs a source object", f"{path}.source")
    title = block.get("title")
    prefix = f"# {title}\n\n" if isinstance(title, str) and title else ""
    if source.get("type") == "text":
        require(isinstance(source.get("data"), str), "a text source needs string data", f"{path}.source.data")
        return prefix + str(source["data"])
    if source.get("type") == "content":
        content = source.get("content")
        if isinstance(content, str):
            return prefix + content
        require(isinstance(content, list), "a content source needs content", f"{path}.source.content")
        return prefix + content_text(content)
    raise invalid(
        f"document source type {source.get('type')!r} is not supported: send the document as text "
        "(source.type 'text' or 'content')",
        f"{path}.source.type",
    )


def _tool_result_content(content: Any, path: str) -> tuple[str, list[dict[str, Any]]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    require(isinstance(content, list), "must be a string or a list of blocks", path)
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        require(isinstance(block, dict), "must be a content block", f"{path}[{index}]")
        if block.get("type") == "image":
            images.append(
                {"type": "image_url", "image_url": {"url": _image_url(block.get("source"), f"{path}[{index}].source")}}
            )
        elif block.get("type") == "document":
            texts.append(_document_text(block, f"{path}[{index}]"))
        elif isinstance(block.get("text"), str):
            texts.append(block["text"])
    return "\n".join(texts), images


def _simplify(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string: every chat template renders a string."""
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _tools(body: dict[str, Any], payload: dict[str, Any], out: Translated) -> None:
    tools = body.get("tools")
    if tools is not None:
        require(isinstance(tools, list), "must be a list of tools", "tools")
        functions = []
        for index, tool in enumerate(tools):
            require(
                isinstance(tool, dict) and isinstance(tool.get("name"), str), "a tool needs a name", f"tools[{index}]"
            )
            kind = tool.get("type")
            if kind not in (None, "custom") or not isinstance(tool.get("input_schema"), dict):
                out.drop(str(tool["name"]))  # web_search_2025..., bash_2025..., computer_...: Anthropic-defined
                continue
            functions.append(function_tool(tool["name"], tool["input_schema"], tool.get("description")))
        if functions:
            payload["tools"] = functions
    choice = body.get("tool_choice")
    if choice is None:
        return
    require(
        isinstance(choice, dict) and choice.get("type") in ("auto", "any", "tool", "none"),
        "must be {type: auto|any|tool|none}",
        "tool_choice",
    )
    kind = choice["type"]
    if "tools" not in payload:
        return  # every tool was dropped (or none sent): a choice among none means nothing to the engine
    if kind == "tool":
        require(isinstance(choice.get("name"), str), "a 'tool' choice needs the tool's name", "tool_choice.name")
        payload["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        payload["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") is True:
        payload["parallel_tool_calls"] = False


def _thinking(body: dict[str, Any], payload: dict[str, Any]) -> None:
    """`thinking` -> the dialect's own field: Qwen's enable_thinking switch and the reasoning cap."""
    thinking = body.get("thinking")
    if thinking is None:
        return
    require(
        isinstance(thinking, dict) and thinking.get("type") in ("enabled", "disabled", "adaptive"),
        "must be {type: enabled, budget_tokens} or {type: disabled}",
        "thinking",
    )
    if thinking["type"] == "disabled":
        payload["thinking"] = {"type": "disabled"}
        return
    budget = thinking.get("budget_tokens")
    if budget is not None:
        payload["thinking"] = {"type": "enabled", "budget_tokens": positive_int(budget, "thinking.budget_tokens")}
    else:
        payload["thinking"] = {"type": "enabled"}
