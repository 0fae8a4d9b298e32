"""Qwen dialect: the same client-facing behaviour whatever engine serves the model.

The gateway calls, per request:
    prepared = prepare_request(body, kind="chat", defaults=route_defaults)   # send prepared.body upstream
    resp = transform_response(upstream_json, prepared.plan)                  # non-streamed
    problem = validate_structured(resp, prepared.plan)                       # None when valid
or, streamed: `t = StreamTransformer(prepared.plan)`, `t.feed(chunk)` per upstream chunk, `t.finish()`.
"""

from __future__ import annotations

from gpufleet.dialects.plan import DialectDefaults, PreparedRequest, RequestKind, ResponsePlan
from gpufleet.dialects.profiles import model_dialect
from gpufleet.dialects.registry import (
    REASONING_PARSERS,
    TOOL_PARSERS,
    get_reasoning_parser,
    get_tool_parser,
)
from gpufleet.dialects.request import GPUFLEET_ONLY_FIELDS, prepare_request
from gpufleet.dialects.response import StreamTransformer, transform_response
from gpufleet.dialects.schemas import DOCUMENT_CLASSIFICATION_SCHEMA, document_classification_format
from gpufleet.dialects.structured import retry_body, validate_structured
from gpufleet.dialects.thinking import NON_THINKING_SAMPLING, THINKING_SAMPLING, resolve_thinking

__all__ = [
    "DOCUMENT_CLASSIFICATION_SCHEMA",
    "GPUFLEET_ONLY_FIELDS",
    "NON_THINKING_SAMPLING",
    "REASONING_PARSERS",
    "THINKING_SAMPLING",
    "TOOL_PARSERS",
    "DialectDefaults",
    "PreparedRequest",
    "RequestKind",
    "ResponsePlan",
    "StreamTransformer",
    "document_classification_format",
    "get_reasoning_parser",
    "get_tool_parser",
    "model_dialect",
    "prepare_request",
    "resolve_thinking",
    "retry_body",
    "transform_response",
    "validate_structured",
]
