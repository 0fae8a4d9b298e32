"""Request validation for the OpenAI endpoints (pydantic).

Only the fields gpufleet must understand, and the shapes an engine crashes on, are checked; unknown fields
are kept and forwarded untouched (e.g. `chat_template_kwargs`, vLLM's sampling extensions). Validation never
rewrites the body: the original dict is what goes upstream.

Tool definitions, tool calls and content parts are checked here because llama.cpp answers a malformed one
(`"tools": [{"type": "function"}]`) with HTTP 500, which would count against the target's health: one bad
client would put a route into cooldown for everyone (issue 12).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from gpufleet.errors import RequestError

Number = StrictInt | StrictFloat
# OpenAI's rule for function names; llama.cpp and vLLM put the name into the prompt and the tool-call parser.
_FUNCTION_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionDefinition(_Open):
    name: StrictStr = Field(pattern=_FUNCTION_NAME)
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class ToolDefinition(_Open):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionCall(_Open):
    name: StrictStr = Field(min_length=1)
    # OpenAI sends a JSON string; some clients send the object itself, which chat templates also render.
    arguments: StrictStr | dict[str, Any]


class ToolCall(_Open):
    id: StrictStr | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(_Open):
    type: StrictStr = Field(min_length=1)
    text: StrictStr | None = None

    @model_validator(mode="after")
    def _text_part_has_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a 'text' content part needs a string 'text'")
        return self


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: StrictStr | None = None
    reasoning_content: StrictStr | None = None

    @model_validator(mode="after")
    def _present_means_a_string(self) -> ChatMessage:
        # llama.cpp answers `"name": null` / `"tool_call_id": null` with HTTP 500 (a parse error), which would put the
        # target into cooldown for everyone; absent is fine, an explicit null is the client's mistake.
        for field in ("name", "tool_call_id"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"'{field}' must be a string when present (leave it out instead of null)")
        return self


class FunctionName(_Open):
    name: StrictStr = Field(min_length=1)


class NamedToolChoice(_Open):
    type: Literal["function"] = "function"
    function: FunctionName


# Engines keep token counts in 32-bit ints: 2**32 wrapped to a 1-token answer in llama.cpp, 2**63-1 passed.
MAX_TOKENS_LIMIT = 2**31 - 1


class _SamplingFields(_Open):
    model: StrictStr = Field(min_length=1)
    stream: StrictBool = False
    max_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, gt=0, le=1)
    n: StrictInt | None = Field(None, ge=1, le=128)
    stream_options: dict[str, Any] | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_SamplingFields):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class EmbeddingRequest(_Open):
    model: StrictStr = Field(min_length=1)
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


_MODELS: dict[str, type[_Open]] = {
    "chat": ChatCompletionRequest,
    "completion": CompletionRequest,
    "embedding": EmbeddingRequest,
}

# Union members pydantic puts in error locations (`str`, `list[ContentPart]`, `NamedToolChoice`, `literal[...]`):
# a user wrote none of them. Field names are lower-case identifiers, so they never match.
_UNION_TAG = re.compile(r"^(str|int|float|bool|[a-z]+\[.*|[A-Z]\w*|function-.*)$")


def field_path(loc: tuple[int | str, ...]) -> str:
    """`("tools", 0, "function")` → `tools[0].function`, the way a JSON body is addressed."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _UNION_TAG.match(part):
            out += f".{part}" if out else part
    return out


def _best_error(errors: list[ErrorDetails]) -> ErrorDetails:
    # A union (content: str | list[part]) reports one error per member; the deepest one is the real problem.
    return max(errors, key=lambda e: len(e["loc"]))


def validate_request(kind: str, payload: Any) -> None:
    """Raise RequestError (400, naming the field) when `payload` is not a valid request of `kind`."""
    if not isinstance(payload, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(payload).__name__}")
    if kind == "embedding" and payload.get("model") == "auto":
        # `auto` picks a chat model by the request's complexity; an embedding request has no such choice to make.
        raise RequestError(
            "model: 'auto' chooses among chat models; name an embedding model", param="model", code="invalid_value"
        )
    try:
        _MODELS[kind].model_validate(payload)
    except ValidationError as err:
        first = _best_error(err.errors())
        param = field_path(tuple(first["loc"])) or None
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            msg = "field required"
        raise RequestError(f"{param}: {msg}" if param else msg, param=param, code="invalid_value") from None


# Content part types that carry media, and what they need the model to take.
_MEDIA_PARTS = {
    "image_url": "images",
    "input_image": "images",
    "image": "images",
    "input_audio": "audio",
    "audio_url": "audio",
    "video_url": "video",
    "file": "files",
}


def media_in(payload: dict[str, Any]) -> set[str]:
    """What media the request's messages carry ("images", "audio", ...): empty for a text-only request."""
    found: set[str] = set()
    for message in payload.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            found.update(
                _MEDIA_PARTS[t]
                for part in content
                if isinstance(part, dict) and (t := part.get("type")) in _MEDIA_PARTS
            )
    return found


def check_text_only(payload: dict[str, Any], model: str) -> None:
    """RequestError (400) when a request for a text-only model carries images or audio.

    llama.cpp without a projector answers such a part with HTTP 500, which would count against the target's health.
    """
    media = media_in(payload)
    if media:
        raise RequestError(
            f"model {model!r} does not take {', '.join(sorted(media))}; send text content parts only",
            param="messages",
            code="unsupported_content",
        )
