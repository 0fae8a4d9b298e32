"""OpenAI Responses request -> chat-completions payload.

`input` items become chat messages (function_call items are the assistant's tool_calls, function_call_output
items tool messages, reasoning summaries the next assistant turn's reasoning_content; encrypted reasoning is
dropped). Only function tools reach the model: hosted tools (`web_search`, `file_search`, `namespace`,
`custom`, `local_shell`, `mcp`, ...) are dropped and named. `previous_response_id` is resolved by the caller
(it owns the store) and handed in as the chat messages that conversation already had.
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
    typed_parts,
)

_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
# Items a stored or replayed conversation may hold that only a hosted tool produced.
_HOSTED_ITEMS = (
    "web_search_call",
    "file_search_call",
    "computer_call",
    "computer_call_output",
    "image_generation_call",
    "code_interpreter_call",
    "mcp_call",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "local_shell_call",
    "local_shell_call_output",
    "custom_tool_call",
    "custom_tool_call_output",
    "item_reference",
    "tool_search_call",
    "tool_search_output",
    "compaction",
)


def responses_to_chat(body: Any, history: list[dict[str, Any]] | None = None) -> Translated:
    """Translate one `POST /v1/responses` body; `history` is the chat form of `previous_response_id`."""
    require(isinstance(body, dict), "the request body must be a JSON object", "body")
    model = body.get("model")
    require(isinstance(model, str) and bool(model), "a model name is required", "model")
    out = Translated(payload={})
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        require(isinstance(instructions, str), "must be a string", "instructions")
        messages.append({"role": "system", "content": instructions})
    out.history = [*(history or ()), *input_messages(body.get("input"), out)]
    messages.extend(out.history)
    require(bool(messages), "input is required (a string or a list of items)", "input")
    payload: dict[str, Any] = {"model": model, "messages": fold_system_messages(messages)}
    _sampling(body, payload)
    _tools(body, payload, out)
    _reasoning(body, payload)
    _text_format(body, payload)
    session = body.get("prompt_cache_key") or body.get("user")
    if isinstance(session, str) and session:
        out.session = session
        payload["user"] = session
    if body.get("stream") is True:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    out.payload = payload
    return out


def input_messages(items: Any, out: Translated) -> list[dict[str, Any]]:
    """The chat messages of a Responses `input` (a string, or a list of items)."""
    if items is None:
        return []
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    require(isinstance(items, list), "must be a string or a list of items", "input")
    messages: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for index, item in enumerate(items):
        path = f"input[{index}]"
        require(isinstance(item, dict), "an input item must be an object", path)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            message = _message(item, path)
            if message["role"] == "assistant" and reasoning:
                message["reasoning_content"] = "\n".join(reasoning)
                reasoning = []
            messages.append(message)
        elif kind == "function_call":
            require(
                isinstance(item.get("name"), str) and isinstance(item.get("call_id"), str),
                "a function_call needs name and call_id",
                path,
            )
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": _arguments(item.get("arguments"))},
            }
            _assistant_for_call(messages, reasoning).setdefault("tool_calls", []).append(call)
            reasoning = []
        elif kind == "function_call_output":
            require(isinstance(item.get("call_id"), str), "a function_call_output needs call_id", f"{path}.call_id")
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": _output_text(item.get("output"))}
            )
        elif kind == "reasoning":
            # encrypted_content is OpenAI's own; only a readable summary or text can go back to the model.
            reasoning.extend(content_text(item.get("summary")).split("\n") if item.get("summary") else [])
            reasoning.extend([content_text(item.get("content"))] if item.get("content") else [])
            reasoning = [text for text in reasoning if text]
        elif kind in _HOSTED_ITEMS:
            out.drop(str(kind))
        else:
            raise invalid(f"unknown input item type {kind!r}", f"{path}.type")
    return messages


def _assistant_for_call(messages: list[dict[str, Any]], reasoning: list[str]) -> dict[str, Any]:
    """The assistant message a function_call belongs to: the one just before it, else a new one."""
    if messages and messages[-1].get("role") == "assistant":
        return messages[-1]
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if reasoning:
        message["reasoning_content"] = "\n".join(reasoning)
    messages.append(message)
    return message


def _message(item: dict[str, Any], path: str) -> dict[str, Any]:
    role = item.get("role")
    require(
        role in ("user", "assistant", "system", "developer"),
        "role must be user, assistant, system or developer",
        f"{path}.role",
    )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid("must be a string or a list of content parts", f"{path}.content")
    parts: list[dict[str, Any]] = []
    for where, part, kind in typed_parts(content, f"{path}.content", "content part"):
        if kind in _TEXT_PARTS or kind == "refusal":
            text = part.get("text") if kind != "refusal" else part.get("refusal")
            require(isinstance(text, str), "needs a string text", where)
            parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            url = part.get("image_url")
            require(isinstance(url, str), "an input_image needs image_url (file_id is not supported)", where)
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif (
            kind == "input_file"
            and isinstance(part.get("file_data"), str)
            and str(part.get("filename")).endswith((".txt", ".md"))
        ):
            parts.append({"type": "text", "text": part["file_data"]})
        else:
            raise invalid(f"content part type {kind!r} is not supported", f"{where}.type")
    if all(part["type"] == "text" for part in parts):
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    return {"role": role, "content": parts}


def _arguments(value: Any) -> str:
    return json_arguments(value)


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return content_text(output)
    return "" if output is None else str(output)


def _sampling(body: dict[str, Any], payload: dict[str, Any]) -> None:
    if body.get("max_output_tokens") is not None:
        payload["max_tokens"] = positive_int(body["max_output_tokens"], "max_output_tokens")
    copy_numbers(body, payload, ("temperature", "top_p"))


def _tools(body: dict[str, Any], payload: dict[str, Any], out: Translated) -> None:
    tools = body.get("tools")
    if tools is not None:
        require(isinstance(tools, list), "must be a list of tools", "tools")
        functions = []
        for index, tool in enumerate(tools):
            require(
                isinstance(tool, dict) and isinstance(tool.get("type"), str), "a tool needs a type", f"tools[{index}]"
            )
            if tool["type"] != "function":
                out.drop(str(tool.get("name") or tool["type"]))
                continue
            require(isinstance(tool.get("name"), str), "a function tool needs a name", f"tools[{index}].name")
            parameters = tool.get("parameters") or {"type": "object", "properties": {}}
            functions.append(function_tool(tool["name"], parameters, tool.get("description")))
        if functions:
            payload["tools"] = functions
    choice = body.get("tool_choice")
    if choice is not None and "tools" in payload:
        if isinstance(choice, str):
            require(choice in ("auto", "none", "required"), "must be auto, none, required or a function", "tool_choice")
            payload["tool_choice"] = choice
        else:
            named = isinstance(choice, dict) and choice.get("type") == "function"
            require(
                named and isinstance(choice.get("name"), str),
                "must be auto, none, required or {type: function, name}",
                "tool_choice",
            )
            payload["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    parallel = body.get("parallel_tool_calls")
    if isinstance(parallel, bool) and "tools" in payload:
        payload["parallel_tool_calls"] = parallel


def _reasoning(body: dict[str, Any], payload: dict[str, Any]) -> None:
    """`reasoning.effort` -> the dialect's thinking switch: none/minimal off, low/medium/high/xhigh on."""
    reasoning = body.get("reasoning")
    if reasoning is None:
        return
    require(isinstance(reasoning, dict), "must be an object {effort, summary}", "reasoning")
    effort = reasoning.get("effort")
    if effort is None:
        return
    require(isinstance(effort, str), "must be a string", "reasoning.effort")
    payload["thinking"] = {"type": "disabled" if effort in ("none", "minimal") else "enabled"}


def _text_format(body: dict[str, Any], payload: dict[str, Any]) -> None:
    """`text.format` -> chat's response_format (the dialect enforces json_schema where the engine cannot)."""
    text = body.get("text")
    if not isinstance(text, dict) or text.get("format") is None:
        return
    fmt = text["format"]
    require(
        isinstance(fmt, dict) and fmt.get("type") in ("text", "json_schema", "json_object"),
        "must be {type: text | json_schema | json_object}",
        "text.format",
    )
    if fmt["type"] == "json_object":
        payload["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        require(isinstance(fmt.get("schema"), dict), "a json_schema format needs a schema object", "text.format.schema")
        schema = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        if isinstance(fmt.get("strict"), bool):
            schema["strict"] = fmt["strict"]
        payload["response_format"] = {"type": "json_schema", "json_schema": schema}
