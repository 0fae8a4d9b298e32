"""The protocol adapters as pure functions: Anthropic Messages and OpenAI Responses <-> chat form.

Streams: raw Qwen3 text (`<think>`, `<tool_call>`) is split at every chunk boundary, run through the Qwen
dialect's StreamTransformer and then each protocol's encoder; the client must see the same blocks/items.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from gpufleet.dialects import StreamTransformer, model_dialect, prepare_request
from gpufleet.errors import RequestError
from gpufleet.protocols import (
    MessagesStreamEncoder,
    ResponsesStreamEncoder,
    chat_to_message,
    chat_to_response,
    messages_to_chat,
    responses_to_chat,
)
from gpufleet.protocols.chat_form import fold_system_messages, session_from_user_id

BASH = {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}


def anthropic(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **extra}


# --- Anthropic request -> chat ----------------------------------------------------------------------------


def test_messages_request_maps_every_supported_field() -> None:
    body = anthropic(
        system=[{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
        stop_sequences=["END"],
        top_k=5,
        temperature=0.2,
        top_p=0.9,
        tools=[BASH, {"type": "web_search_20250305", "name": "web_search"}, {"type": "bash_20250124", "name": "bash"}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 2048},
        metadata={"user_id": "user_x_account_y_session_s1"},
        context_management={"edits": []},
        output_config={"effort": "high"},
        stream=True,
    )
    out = messages_to_chat(body)
    p = out.payload
    assert p["messages"][0] == {"role": "system", "content": "A\n\nB"}
    assert (p["stop"], p["top_k"], p["temperature"], p["top_p"], p["max_tokens"]) == (["END"], 5, 0.2, 0.9, 64)
    assert [t["function"]["name"] for t in p["tools"]] == ["Bash"]
    assert out.dropped == ["web_search", "bash"]
    assert p["tool_choice"] == "required" and p["parallel_tool_calls"] is False
    assert p["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert p["user"] == out.session == "s1"
    assert p["stream_options"] == {"include_usage": True}
    assert "context_management" not in p and "output_config" not in p


def test_messages_content_blocks_become_chat_messages() -> None:
    out = messages_to_chat(
        anthropic(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                        {
                            "type": "document",
                            "title": "notes",
                            "source": {"type": "text", "media_type": "text/plain", "data": "doc body"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "x"},
                        {"type": "redacted_thinking", "data": "zz"},
                        {"type": "text", "text": "calling"},
                        {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "is_error": True,
                            "content": [{"type": "text", "text": "boom"}],
                        },
                        {"type": "text", "text": "fix it"},
                    ],
                },
            ]
        )
    )
    user, assistant, tool, follow = out.payload["messages"]
    assert user["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        {"type": "text", "text": "# notes\n\ndoc body"},
    ]
    assert assistant == {
        "role": "assistant",
        "content": "calling",
        "reasoning_content": "hmm",
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"ls"}'}}],
    }
    assert tool == {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}
    assert follow == {"role": "user", "content": "fix it"}
    assert out.dropped == ["redacted_thinking"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "any"}, "required"),
        ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}}),
    ],
)
def test_messages_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    assert messages_to_chat(anthropic(tools=[BASH], tool_choice=choice)).payload["tool_choice"] == expected


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        ({"type": "disabled"}, {"type": "disabled"}),
        ({"type": "adaptive", "display": "omitted"}, {"type": "enabled"}),
        ({"type": "enabled", "budget_tokens": 100}, {"type": "enabled", "budget_tokens": 100}),
    ],
)
def test_messages_thinking_maps_to_the_dialect_switch(thinking: dict[str, Any], expected: dict[str, Any]) -> None:
    assert messages_to_chat(anthropic(thinking=thinking)).payload["thinking"] == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        (anthropic(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (
            anthropic(messages=[{"role": "user", "content": [{"type": "tool_result"}]}]),
            "messages[0].content[0].tool_use_id",
        ),
        (
            anthropic(messages=[{"role": "user", "content": [{"type": "document", "source": {"type": "base64"}}]}]),
            "messages[0].content[0].source.type",
        ),
        (anthropic(max_tokens=0), "max_tokens"),
        (anthropic(thinking={"type": "enabled", "budget_tokens": -1}), "thinking.budget_tokens"),
        (anthropic(tools=[BASH], tool_choice={"type": "whatever"}), "tool_choice"),
    ],
)
def test_messages_bad_fields_are_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as err:
        messages_to_chat(body)
    assert err.value.param == param and err.value.status_code == 400


def test_system_messages_after_the_first_become_user_notes() -> None:
    folded = fold_system_messages(
        [
            {"role": "system", "content": "a"},
            {"role": "developer", "content": "b"},
            {"role": "user", "content": "u"},
            {"role": "system", "content": "late"},
        ]
    )
    assert folded == [
        {"role": "system", "content": "a\n\nb"},
        {"role": "user", "content": "u"},
        {"role": "user", "content": "[system note]\nlate"},
    ]


@pytest.mark.parametrize(
    ("user_id", "session"),
    [
        ("user_abc_account_def_session_123", "123"),
        ('{"device_id":"d","session_id":"s-9"}', "s-9"),
        ("plain", "plain"),
    ],
)
def test_claude_code_session_from_user_id(user_id: str, session: str) -> None:
    assert session_from_user_id(user_id) == session


# --- Responses request -> chat ----------------------------------------------------------------------------


def test_responses_input_items_become_chat_messages() -> None:
    out = responses_to_chat(
        {
            "model": "m",
            "instructions": "be brief",
            "prompt_cache_key": "sess",
            "max_output_tokens": 99,
            "reasoning": {"effort": "high", "summary": "auto"},
            "include": ["reasoning.encrypted_content"],
            "tools": [
                {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
                {"type": "web_search"},
                {"type": "namespace", "name": "multi_agent_v1"},
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}},
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
                {"role": "user", "content": "go"},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}], "encrypted_content": "E"},
                {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
                {"type": "message", "role": "developer", "content": "late note"},
            ],
        }
    )
    p = out.payload
    assert p["messages"] == [
        {"role": "system", "content": "be brief\n\ndev"},
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "plan",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        {"role": "user", "content": "[system note]\nlate note"},
    ]
    assert out.dropped == ["web_search", "multi_agent_v1"]
    assert p["thinking"] == {"type": "enabled"} and p["max_tokens"] == 99 and p["user"] == "sess"
    assert p["parallel_tool_calls"] is False and p["tool_choice"] == "auto"
    assert p["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }


@pytest.mark.parametrize(("effort", "kind"), [("none", "disabled"), ("minimal", "disabled"), ("low", "enabled")])
def test_responses_reasoning_effort(effort: str, kind: str) -> None:
    out = responses_to_chat({"model": "m", "input": "x", "reasoning": {"effort": effort}})
    assert out.payload["thinking"] == {"type": kind}


def test_responses_previous_conversation_comes_before_the_new_input() -> None:
    history = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]
    out = responses_to_chat({"model": "m", "input": "3", "instructions": "sys"}, history)
    assert [m["content"] for m in out.payload["messages"]] == ["sys", "1", "2", "3"]
    assert [m["content"] for m in out.history] == ["1", "2", "3"]


# --- answers ----------------------------------------------------------------------------------------------


def _chat_answer(message: dict[str, Any], finish: str = "stop", **choice: Any) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **choice}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 2}},
    }


LLAMACPP_VERBOSE_END = {"__verbose": {"stop_type": "word", "stopping_word": "END"}}


@pytest.mark.parametrize(
    ("finish", "choice", "answer", "reason", "sequence"),
    [
        ("stop", {}, {}, "end_turn", None),
        ("length", {}, {}, "max_tokens", None),
        ("tool_calls", {}, {}, "tool_use", None),
        ("stop", {"stop_reason": "END"}, {}, "stop_sequence", "END"),  # vLLM names the string it matched
        ("stop", {"stop_reason": None}, {}, "end_turn", None),  # vLLM: end of sequence
        ("stop", {"stop_reason": 151645}, {}, "end_turn", None),  # vLLM: a stop token id, no client sequence
        ("stop", {"stop_reason": "<|im_end|>"}, {}, "end_turn", None),  # a string the client never asked for
        ("stop", {}, LLAMACPP_VERBOSE_END, "stop_sequence", "END"),  # llama.cpp run verbose
        ("stop", {}, {"stop_type": "word", "stopping_word": "END"}, "stop_sequence", "END"),  # llama.cpp native
        ("stop", {}, {"__verbose": {"stop_type": "eos", "stopping_word": ""}}, "end_turn", None),
        ("length", {}, LLAMACPP_VERBOSE_END, "max_tokens", None),
    ],
)
def test_message_stop_reasons(
    finish: str, choice: dict[str, Any], answer: dict[str, Any], reason: str, sequence: str | None
) -> None:
    message = chat_to_message({**_chat_answer({"content": "x"}, finish, **choice), **answer}, "alias", ["END"])
    assert (message["stop_reason"], message["stop_sequence"], message["model"]) == (reason, sequence, "alias")
    assert message["usage"]["input_tokens"] == 7 and message["usage"]["output_tokens"] == 3


@pytest.mark.parametrize(
    ("last", "extra", "reason", "sequence"),
    [
        ({"finish_reason": "stop"}, None, "end_turn", None),
        ({"finish_reason": "stop", "stop_reason": "END"}, None, "stop_sequence", "END"),
        ({"finish_reason": "stop"}, LLAMACPP_VERBOSE_END, "stop_sequence", "END"),
        ({"finish_reason": "stop", "stop_reason": "other"}, None, "end_turn", None),
    ],
)
def test_message_stream_names_the_stop_sequence_only_when_the_engine_does(
    last: dict[str, Any], extra: dict[str, Any] | None, reason: str, sequence: str | None
) -> None:
    encoder = MessagesStreamEncoder("alias", ["END", "other-client-stop"])
    encoder.chunk({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]})
    encoder.chunk({"choices": [{"index": 0, "delta": {}, **last}]})
    if extra is not None:  # llama.cpp's verbose fields on a chunk of their own, after the finish
        encoder.chunk({"choices": [], **extra})
    delta = next(
        json.loads(line[6:])
        for line in encoder.done().decode().splitlines()
        if line.startswith("data: ") and '"message_delta"' in line
    )["delta"]
    assert (delta["stop_reason"], delta["stop_sequence"]) == (reason, sequence)


def test_response_object_from_chat() -> None:
    data = _chat_answer(
        {
            "content": "hi",
            "reasoning_content": "r",
            "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
        },
        "length",
    )
    response = chat_to_response(data, {"model": "alias", "store": False}, "alias")
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [item["type"] for item in response["output"]] == ["reasoning", "message", "function_call"]
    assert response["usage"]["output_tokens_details"]["reasoning_tokens"] == 2 and response["store"] is False


# --- streams, tags split at every boundary -----------------------------------------------------------------

RAW = '<think>\nplan it\n</think>\n\nok <tool_call>\n{"name": "Bash", "arguments": {"command": "ls -l"}}\n</tool_call>'


def _dialect_chunks(pieces: list[str]) -> list[dict[str, Any]]:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "tools": [{"type": "function", "function": {"name": "Bash", "parameters": BASH["input_schema"]}}],
    }
    transformer = StreamTransformer(prepare_request(body, kind="chat", defaults=model_dialect("Qwen/Qwen3-8B")).plan)
    chunks: list[dict[str, Any]] = []
    for piece in pieces:
        chunks.extend(transformer.feed({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}))
    chunks.extend(transformer.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    chunks.extend(transformer.finish())
    chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}})
    return chunks


def _sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


SPLITS = [[RAW[:i], RAW[i:]] for i in range(1, len(RAW))] + [list(RAW)]


@pytest.mark.parametrize("pieces", SPLITS, ids=lambda p: str(len(p[0])) if len(p) == 2 else "chars")
def test_messages_stream_from_split_raw_qwen(pieces: list[str]) -> None:
    encoder = MessagesStreamEncoder("alias")
    raw = b"".join(encoder.chunk(c) for c in _dialect_chunks(pieces)) + encoder.done()
    events = _sse(raw)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    blocks: dict[int, dict[str, Any]] = {}
    open_index = None
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None
            open_index = data["index"]
            blocks[open_index] = {**data["content_block"], "text": "", "thinking": "", "json": ""}
        elif name == "content_block_delta":
            assert data["index"] == open_index
            delta = data["delta"]
            block = blocks[open_index]
            key = {
                "text_delta": "text",
                "thinking_delta": "thinking",
                "input_json_delta": "partial_json",
                "signature_delta": "signature",
            }[delta["type"]]
            target = {"partial_json": "json", "signature": "signature"}.get(key, key)
            block[target] = (block.get(target) or "") + delta[key] if target != "signature" else delta[key]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert [b["type"] for b in blocks.values()] == ["thinking", "text", "tool_use"]
    assert blocks[0]["thinking"].strip() == "plan it" and blocks[0]["signature"]
    assert blocks[1]["text"].strip() == "ok"
    assert blocks[2]["name"] == "Bash" and json.loads(blocks[2]["json"]) == {"command": "ls -l"}
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 9


@pytest.mark.parametrize("pieces", SPLITS, ids=lambda p: str(len(p[0])) if len(p) == 2 else "chars")
def test_responses_stream_from_split_raw_qwen(pieces: list[str]) -> None:
    finals: list[dict[str, Any]] = []
    encoder = ResponsesStreamEncoder({"model": "alias"}, "alias", on_complete=finals.append)
    raw = b"".join(encoder.chunk(c) for c in _dialect_chunks(pieces)) + encoder.done()
    events = _sse(raw)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
    added = [data["item"]["type"] for name, data in events if name == "response.output_item.added"]
    assert added == ["reasoning", "message", "function_call"]
    deltas = "".join(data["delta"] for name, data in events if name == "response.function_call_arguments.delta")
    assert json.loads(deltas) == {"command": "ls -l"}
    final = events[-1][1]["response"]
    assert final == finals[0] and final["status"] == "completed" and final["usage"]["output_tokens"] == 9
    reasoning, message, call = final["output"]
    assert reasoning["summary"][0]["text"].strip() == "plan it" and message["content"][0]["text"].strip() == "ok"
    assert call["name"] == "Bash" and json.loads(call["arguments"]) == {"command": "ls -l"}


def test_responses_stream_events_are_compact_json_and_repeat_the_stored_object() -> None:
    """The encoder writes most events from byte templates (issue 23's per-stream cost): each must still be the
    compact JSON orjson writes, `type` and `sequence_number` first, and `response.completed` must carry exactly
    the object the route stores."""
    request = {"model": "alias", "instructions": "be brief", "tools": [{"type": "function", "name": "ls"}]}
    finals: list[dict[str, Any]] = []
    encoder = ResponsesStreamEncoder(request, "alias", on_complete=finals.append)
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"reasoning_content": 'why "so"'}}]},
        {"choices": [{"index": 0, "delta": {"content": 'say "hi"\n\u00e9'}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "ls"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    ]
    raw = b"".join(encoder.chunk(c) for c in chunks) + encoder.done()
    blocks = [block.split(b"\n") for block in raw.split(b"\n\n") if block]
    for sequence, (name, data) in enumerate(blocks):
        parsed = json.loads(data.removeprefix(b"data: "))
        assert data == b"data: " + orjson.dumps(parsed)
        assert list(parsed)[:2] == ["type", "sequence_number"] and parsed["sequence_number"] == sequence
        assert name == b"event: " + parsed["type"].encode()
    events = _sse(raw)
    created, in_progress, completed = events[0][1], events[1][1], events[-1][1]
    assert created["response"] == in_progress["response"]
    assert created["response"]["tools"] == request["tools"] and created["response"]["output"] == []
    assert blocks[-1][1] == b'data: {"type":"response.completed","sequence_number":%d,"response":%b}' % (
        len(blocks) - 1,
        orjson.dumps(finals[0]),
    )
    message_id = completed["response"]["output"][1]["id"]
    where = {"item_id": message_id, "output_index": 1, "content_index": 0}
    by_name = {name: data for name, data in events}
    text = 'say "hi"\n\u00e9'
    assert by_name["response.output_text.done"] == {
        "type": "response.output_text.done",
        "sequence_number": by_name["response.output_text.done"]["sequence_number"],
        **where,
        "text": text,
        "logprobs": [],
    }
    assert by_name["response.content_part.done"]["part"] == {"type": "output_text", "text": text, "annotations": []}
    assert by_name["response.function_call_arguments.done"]["arguments"] == '{"a":1}'
    assert by_name["response.reasoning_summary_part.done"]["part"] == {"type": "summary_text", "text": 'why "so"'}


def test_mid_stream_errors_end_each_protocol_in_its_own_shape() -> None:
    failure = {"error": {"message": "upstream broke", "type": "server_error", "code": "upstream_stream_error"}}
    anthropic_encoder = MessagesStreamEncoder("alias")
    anthropic_encoder.chunk({"choices": [{"index": 0, "delta": {"content": "par"}}]})
    name, data = _sse(anthropic_encoder.error(failure))[-1]
    assert name == "error" and data == {"type": "error", "error": {"type": "api_error", "message": "upstream broke"}}
    assert anthropic_encoder.done() == b""  # nothing after the error event
    responses_encoder = ResponsesStreamEncoder({"model": "alias"}, "alias")
    responses_encoder.chunk({"choices": [{"index": 0, "delta": {"content": "par"}}]})
    name, data = _sse(responses_encoder.error(failure))[-1]
    assert name == "response.failed" and data["response"]["status"] == "failed"
    assert data["response"]["error"] == {"code": "upstream_stream_error", "message": "upstream broke"}


def test_length_finish_makes_responses_incomplete() -> None:
    encoder = ResponsesStreamEncoder({"model": "alias"}, "alias")
    encoder.chunk({"choices": [{"index": 0, "delta": {"content": "abc"}, "finish_reason": "length"}]})
    name, data = _sse(encoder.done())[-1]
    assert name == "response.incomplete" and data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
