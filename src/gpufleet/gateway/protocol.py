"""Request validation for the OpenAI endpoints (pydantic).

Only the fields gpufleet must understand are checked; unknown fields are kept and forwarded untouched
(e.g. `chat_template_kwargs`, vLLM's sampling extensions). Validation never rewrites the body: the
original dict is what goes upstream.
"""

from __future__ import annotations

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
)

from gpufleet.errors import RequestError

Number = StrictInt | StrictFloat


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[Any] | None = None


class _SamplingFields(_Open):
    model: StrictStr = Field(min_length=1)
    stream: StrictBool = False
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, gt=0, le=1)
    n: StrictInt | None = Field(None, ge=1, le=128)
    stream_options: dict[str, Any] | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None


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


def validate_request(kind: str, payload: Any) -> None:
    """Raise RequestError (400, naming the field) when `payload` is not a valid request of `kind`."""
    if not isinstance(payload, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(payload).__name__}")
    try:
        _MODELS[kind].model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        msg = first["msg"]
        if first["type"] == "missing":
            msg = "field required"
        raise RequestError(f"{param}: {msg}" if param else msg, param=param, code="invalid_value") from None
