"""`GET /openapi.json`: an OpenAPI 3.1 document of the gateway's endpoints.

The request bodies come from the pydantic models the gateway validates with (protocol.py), so the document
cannot drift from what is checked; they allow extra fields, which are forwarded to the engine. Clients and
API fuzzers (tests/test_fuzz.py) read it.

    curl -s http://127.0.0.1:8000/openapi.json | jq '.paths | keys'
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

import gpufleet
from gpufleet.gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from gpufleet.gateway.usage_routes import KeyRequest

_REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
                "src": {"type": "string"},
            },
        }
    },
}

_PERSONA_CHAT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["message"],
    "properties": {
        "persona": {"type": "string", "description": "optional when exactly one persona is configured"},
        "message": {"type": "string", "minLength": 1},
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {"role": {"enum": ["user", "assistant"]}, "content": {"type": "string"}},
            },
        },
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "thinking": {"type": "boolean"},
        "user": {"type": "string"},
    },
}


# Anthropic Messages and OpenAI Responses: the fields gpufleet reads (docs/agents.md has the status of each);
# every other field is accepted and ignored.
_MESSAGES = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "system": {"type": ["string", "array"]},
        "stream": {"type": "boolean"},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["user", "assistant", "system"]},
                    "content": {"type": ["string", "array"]},
                },
            },
        },
        "tools": {"type": "array"},
        "tool_choice": {"type": "object"},
        "thinking": {"type": "object"},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object"},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "top_k": {"type": "integer"},
    },
}
_RESPONSES = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {"type": "string"},
        "input": {"type": ["string", "array"]},
        "instructions": {"type": "string"},
        "stream": {"type": "boolean"},
        "store": {"type": "boolean"},
        "previous_response_id": {"type": "string"},
        "tools": {"type": "array"},
        "tool_choice": {"type": ["string", "object"]},
        "parallel_tool_calls": {"type": "boolean"},
        "reasoning": {"type": "object"},
        "text": {"type": "object"},
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "prompt_cache_key": {"type": "string"},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}
    return {str(s): {"description": "OpenAI-shaped error", "content": content} for s in statuses}


def _post(summary: str, schema: str, *, stream: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if stream:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(model=schema)}}},
            },
            "responses": {
                "200": {"description": "the engine's answer", "content": ok},
                **_errors(400, 401, 403, 404, 413, 429, 502, 503, 504),
            },
        }
    }


def _get(summary: str, media: str = "application/json") -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {
                    "description": summary,
                    "content": {
                        media: {"schema": {"type": "object"} if media == "application/json" else {"type": "string"}}
                    },
                },
                **_errors(401, 403),
            },
        }
    }


def _admin(summary: str) -> dict[str, Any]:
    parameters = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "post": {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "done", "content": {"application/json": {"schema": {"type": "object"}}}},
                **_errors(401, 403, 404, 503),
            },
        }
    }


@lru_cache(maxsize=1)
def openapi_document() -> bytes:
    """The document, serialized once."""
    schemas: dict[str, Any] = {
        "Error": _ERROR,
        "PersonaChatRequest": _PERSONA_CHAT,
        "MessagesRequest": _MESSAGES,
        "ResponsesRequest": _RESPONSES,
        "KeyRequest": KeyRequest.model_json_schema(),
    }
    for model in (ChatCompletionRequest, CompletionRequest, EmbeddingRequest):
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "gpufleet gateway",
            "version": gpufleet.__version__,
            "description": "OpenAI-compatible API; unknown request fields are forwarded to the engine.",
        },
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"bearer": []}],
        "paths": {
            "/v1/chat/completions": _post("Chat completion", "ChatCompletionRequest", stream=True),
            "/v1/completions": _post("Text completion", "CompletionRequest", stream=True),
            "/v1/embeddings": _post("Embeddings", "EmbeddingRequest", stream=False),
            "/v1/messages": _post("Anthropic Messages (errors in Anthropic's shape)", "MessagesRequest", stream=True),
            "/v1/messages/count_tokens": _post("Anthropic token count", "MessagesRequest", stream=False),
            "/v1/responses": _post("OpenAI Responses", "ResponsesRequest", stream=True),
            "/v1/responses/{response_id}": {
                **_get("A stored response"),
                "delete": {
                    "summary": "Delete a stored response",
                    "responses": {"200": {"description": "deleted"}, **_errors(401, 404)},
                },
            },
            "/chat": _post("Persona chat (one message in, one reply out)", "PersonaChatRequest", stream=False),
            "/v1/models": _get("Served model names, aliases, routes and personas"),
            "/health": _get("Liveness"),
            "/health/ready": _get("Readiness: 200 once every preloaded model is ready, else 503"),
            "/status": _get("Engines, targets and swap groups"),
            "/metrics": _get("Prometheus metrics", "text/plain"),
            "/admin/models/{name}/start": _admin("Load a model now"),
            "/admin/models/{name}/stop": _admin("Unload a model now"),
            "/admin/models/{name}/swap": _admin("Bring a swap-group member up, freeing idle members"),
            "/admin/usage": _get("Usage ledger totals, admin keys only (?since=7d&by=key,model)"),
            "/admin/keys": {
                **_get("Team keys, admin keys only (never a key or its hash)"),
                **_post("Make a team key (admin keys only); 201 shows the key, once", "KeyRequest", stream=False),
            },
            "/admin/keys/{name}/revoke": _admin("Revoke a team key"),
        },
    }
    return orjson.dumps(document)


async def openapi_json(request: Request) -> Response:
    return Response(openapi_document(), media_type="application/json")
