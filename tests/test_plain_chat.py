"""The chat body recognised without pydantic (gateway/plain_chat.py) is never one the model would refuse.

`is_plain_chat` lets the common body skip pydantic; if it ever said yes to a body `ChatCompletionRequest`
refuses, a bad request would reach the engine (issue 12: llama.cpp answers some with HTTP 500). Every body
below and every one-field mutation of them is held against the model; the plain ones must also be
recognised, or the fast path would be dead code.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from gpufleet.errors import RequestError
from gpufleet.gateway.plain_chat import MAX_TOKENS_LIMIT, is_plain_chat
from gpufleet.gateway.protocol import ChatCompletionRequest, validate_request

PLAIN: list[dict[str, Any]] = [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
    {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.7,
        "top_p": 1,
        "n": 1,
        "max_completion_tokens": MAX_TOKENS_LIMIT,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "chat_template_kwargs": {"enable_thinking": False},
        "seed": 3,
    },
    {"model": "m", "messages": [{"role": "assistant", "content": None, "name": "bot", "reasoning_content": "x"}]},
    {"model": "m", "messages": [{"role": "tool", "content": "42", "tool_call_id": "call_1"}], "temperature": None},
]

# Values tried in place of each field: the right type at its limits, the wrong types, nulls, absent.
_ODD: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    3,
    128,
    129,
    MAX_TOKENS_LIMIT,
    MAX_TOKENS_LIMIT + 1,
    0.0,
    0.5,
    1.0,
    2.0,
    2.5,
    -0.1,
    float("nan"),
    float("inf"),
    "",
    "x",
    "auto",
    "none",
    "required",
    "user",
    "moderator",
    [],
    [{"type": "text", "text": "hi"}],
    [{"type": "text"}],
    {},
    {"type": "function", "function": {"name": "f"}},
    {1: "x"},
    [{"type": "function"}],
    [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
]
_ABSENT = object()
_REQUEST_KEYS = [
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
    "extra",
]
_MESSAGE_KEYS = ["role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content", "extra"]


def _accepted(payload: dict[str, Any]) -> bool:
    try:
        ChatCompletionRequest.model_validate(payload)
    except ValidationError:
        return False
    return True


def _set(body: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = dict(body)
    if value is _ABSENT:
        out.pop(key, None)
    else:
        out[key] = value
    return out


def _mutations() -> list[dict[str, Any]]:
    found = []
    for body, value in itertools.product(PLAIN, [*_ODD, _ABSENT]):
        found += [_set(body, key, value) for key in _REQUEST_KEYS]
        message = body["messages"][0]
        found += [{**body, "messages": [_set(message, key, value)]} for key in _MESSAGE_KEYS]
        found.append({**body, "messages": [message, value]})
    return found


@pytest.mark.parametrize("payload", PLAIN)
def test_plain_bodies_are_recognised(payload: dict[str, Any]) -> None:
    assert _accepted(payload)
    assert is_plain_chat(payload)


def test_no_body_the_model_refuses_is_taken_for_plain() -> None:
    bodies = _mutations()
    wrongly_plain = [body for body in bodies if is_plain_chat(body) and not _accepted(body)]
    assert wrongly_plain == []
    # The mutations reach both sides: many stay plain, many are left to pydantic (and refused by it).
    assert sum(map(is_plain_chat, bodies)) > 500
    assert sum(not _accepted(body) for body in bodies) > 500


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"model": "m", "messages": []}, "messages: List should have at least 1 item after validation, not 0"),
        ({"model": "m", "messages": [{"role": "user", "content": "x", "name": None}]}, "messages[0]: 'name' must"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens: Input should be greater"),
        ({"model": "m", "messages": [{"role": "user"}], "stream": None}, "stream: Input should be a valid boolean"),
    ],
)
def test_refusals_keep_the_models_messages(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError) as caught:
        validate_request("chat", payload)
    assert str(caught.value).startswith(message)
