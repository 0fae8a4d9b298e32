"""The relay's fast path: plain content chunks pass as the upstream's bytes, with only `model` spliced in.

Every stream here goes through the rewriter twice, with the fast path and with it turned off: the client must
get the same JSON either way, and the same stats. The fast path must also leave a chunk it cannot be sure of
(escaped model name, reasoning, a finish_reason, usage) to the full path.
"""

from __future__ import annotations

import time
from typing import Any, cast

import orjson
import pytest

from gpufleet.dialects import prepare_request
from gpufleet.dialects.plan import DialectDefaults
from gpufleet.dialects.response import StreamTransformer
from gpufleet.gateway.client_protocol import StreamEncoder
from gpufleet.gateway.relay import SSERewriter, StreamStats
from gpufleet.protocols import MessagesStreamEncoder, ResponsesStreamEncoder


def chunk(delta: dict[str, Any], finish: str | None = None, model: str = "upstream-name") -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def stream(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


PLAIN = stream(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": 'lo "world" \\ ✓'}),
    chunk({"content": "!"}, model='odd "name\\'),
    chunk({"reasoning_content": "hmm"}),
    chunk({"content": "model"}),
    chunk({}, finish="stop"),
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream-name",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6},
    },
)


def relay(
    data: bytes, *, fast: bool, passthrough_plan: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[bytes, StreamStats]:
    transformer = None
    if passthrough_plan:
        plan = prepare_request({"messages": []}, kind="chat", defaults=DialectDefaults()).plan
        transformer = StreamTransformer(plan)
        assert transformer.relays_plain_content
    stats = StreamStats(started=time.perf_counter())
    rewriter = SSERewriter(
        served_model="served",
        client_wants_usage=True,
        stats=stats,
        transform=transformer.feed if transformer else None,
        flush=transformer.finish if transformer else None,
        plain_transform=transformer is not None,
    )
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(SSERewriter, "_relay_as_is", lambda self, payload, out: False)
        out = rewriter.feed(data) + rewriter.close()
    return out, stats


def events(data: bytes) -> list[Any]:
    return [orjson.loads(e[6:]) if e != b"data: [DONE]" else "[DONE]" for e in data.split(b"\n\n") if e]


@pytest.mark.parametrize("passthrough_plan", [False, True], ids=["no-dialect", "passthrough-plan"])
def test_fast_path_gives_the_client_the_same_stream_as_the_full_path(
    passthrough_plan: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, fast_stats = relay(PLAIN, fast=True, passthrough_plan=passthrough_plan, monkeypatch=monkeypatch)
    full, full_stats = relay(PLAIN, fast=False, passthrough_plan=passthrough_plan, monkeypatch=monkeypatch)
    assert events(fast) == events(full)
    assert all(e == "[DONE]" or e["model"] == "served" for e in events(fast))
    assert (fast_stats.chunks, fast_stats.completion_tokens) == (full_stats.chunks, full_stats.completion_tokens)


def test_a_plain_content_chunk_keeps_the_upstreams_bytes_but_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = orjson.dumps(chunk({"content": "Hel"}))
    out, _ = relay(
        stream(chunk({"content": "first"}), chunk({"content": "Hel"})),
        fast=True,
        passthrough_plan=False,
        monkeypatch=monkeypatch,
    )
    assert b"data: " + raw.replace(b'"model":"upstream-name"', b'"model":"served"') + b"\n\n" in out


def test_chunks_the_relay_must_read_take_the_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    original = SSERewriter._relay_as_is

    def spy(self: SSERewriter, payload: bytes, out: list[bytes]) -> bool:
        taken = original(self, payload, out)
        if taken:
            seen.append(payload)
        return taken

    monkeypatch.setattr(SSERewriter, "_relay_as_is", spy)
    relay(PLAIN, fast=True, passthrough_plan=True, monkeypatch=monkeypatch)
    taken = [orjson.loads(p)["choices"][0]["delta"] for p in seen]
    # Not the role chunk (before the first token), the escaped model name, the reasoning, the finish, the usage.
    assert taken == [{"content": 'lo "world" \\ ✓'}, {"content": "model"}]


# Under a client protocol encoder (Messages, Responses) the fast path decodes a plain chunk's text alone and
# hands it to the encoder; the client must get byte for byte what the full path writes.
AGENT_STREAM = stream(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": 'lo "world" \\ ✓ \\" "content":"x"'}),
    chunk({"content": "\\\\"}),
    chunk({"reasoning_content": "hmm"}),
    chunk({"content": "after thinking"}),
    chunk({"content": " more"}),
    {**chunk({"content": "STOP"}), "stopping_word": "STOP"},
    chunk({}, finish="stop"),
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream-name",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6},
    },
)


def agent_encoder(kind: str) -> StreamEncoder:
    if kind == "messages":
        encoder: Any = MessagesStreamEncoder("served", stops=["STOP"])
    else:
        encoder = ResponsesStreamEncoder({"model": "served", "input": "hi"}, "served", response_id="resp_fixed")
        encoder.created_at = 1
    return cast(StreamEncoder, encoder)


def relay_encoded(kind: str, *, fast: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, list[bytes]]:
    taken: list[bytes] = []
    original = SSERewriter._relay_as_is

    def spy(self: SSERewriter, payload: bytes, out: list[bytes]) -> bool:
        if not fast:
            return False
        relayed = original(self, payload, out)
        if relayed:
            taken.append(payload)
        return relayed

    rewriter = SSERewriter(
        served_model="served",
        client_wants_usage=True,
        stats=StreamStats(started=time.perf_counter()),
        encoder=agent_encoder(kind),
    )
    with monkeypatch.context() as patch:
        patch.setattr(SSERewriter, "_relay_as_is", spy)
        patch.setattr("gpufleet.protocols.messages_stream.message_id", lambda: "msg_fixed")
        ids = iter(range(100))
        patch.setattr("gpufleet.protocols.responses_stream.new_id", lambda prefix: f"{prefix}_{next(ids)}")
        out = rewriter.feed(AGENT_STREAM) + rewriter.close()
    return out, taken


@pytest.mark.parametrize("kind", ["messages", "responses"])
def test_encoded_fast_path_writes_the_same_bytes_as_the_full_path(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, taken = relay_encoded(kind, fast=True, monkeypatch=monkeypatch)
    full, _ = relay_encoded(kind, fast=False, monkeypatch=monkeypatch)
    assert fast == full
    texts = [orjson.loads(p)["choices"][0]["delta"]["content"] for p in taken]
    # Not the first text (it opens the block), not after the thinking (the text block reopens), not the chunk
    # that names the stop string (the Messages encoder reads it).
    assert texts == ['lo "world" \\ ✓ \\" "content":"x"', "\\\\", " more"]
    assert b"STOP" in fast and b"after thinking" in fast


# After the fast path took one plain chunk, chunks of the same shape (only the text differs) are relayed by two
# byte comparisons (relay.py's _chunk_shape). A text that would complete a key the fast path looks for, a
# chunk shaped otherwise, or an event with a line break must still go where the fast path would send it.
SHAPED = stream(
    chunk({"role": "assistant", "content": ""}),
    *(
        chunk({"content": text})
        for text in ["Hel", "lo", " ✓", "usage", "model", "error", "finish_reason", "tool_calls", "content", ":"]
    ),
    *(chunk({"content": text}) for text in ["reasoning", "reasoning_content", 'a "q" b', "back\\", "\\", "x"]),
    chunk({"content": "other model"}, model="another"),
    {**chunk({"content": "with logprobs"}), "system_fingerprint": "fp"},
    chunk({"content": "", "reasoning_content": "r"}),
    chunk({"content": "after"}),
    chunk({}, finish="stop"),
)


def relay_bytes(data: bytes, pieces: int, *, shapes: bool, plan: bool, monkeypatch: pytest.MonkeyPatch) -> bytes:
    transformer = None
    if plan:
        transformer = StreamTransformer(prepare_request({"messages": []}, kind="chat", defaults=DialectDefaults()).plan)
    rewriter = SSERewriter(
        served_model="served",
        client_wants_usage=True,
        stats=StreamStats(started=time.perf_counter()),
        transform=transformer.feed if transformer else None,
        flush=transformer.finish if transformer else None,
        plain_transform=transformer is not None,
    )
    size = -(-len(data) // pieces)
    with monkeypatch.context() as patch:
        if not shapes:
            patch.setattr("gpufleet.gateway.relay._chunk_shape", lambda payload, relayed: None)
        out = b"".join(rewriter.feed(data[i : i + size]) for i in range(0, len(data), size))
    out += rewriter.close() if rewriter.failure is None else b""  # as the relay does
    return out + repr((rewriter.failure, rewriter.stats.chunks)).encode()


@pytest.mark.parametrize("plan", [False, True], ids=["no-dialect", "passthrough-plan"])
@pytest.mark.parametrize("pieces", [1, 7, 400])
def test_chunks_of_a_known_shape_get_the_same_bytes(plan: bool, pieces: int, monkeypatch: pytest.MonkeyPatch) -> None:
    shaped = relay_bytes(SHAPED, pieces, shapes=True, plan=plan, monkeypatch=monkeypatch)
    assert shaped == relay_bytes(SHAPED, pieces, shapes=False, plan=plan, monkeypatch=monkeypatch)
    assert b'"content":"usage"' in shaped and b'"model":"served"' in shaped and b'"model":"another"' not in shaped


def test_an_event_with_a_line_break_is_not_taken_for_a_known_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = stream(chunk({"role": "assistant", "content": ""}), chunk({"content": "a"}), chunk({"content": "b"}))
    broken = plain.replace(b'"content":"b"', b'"content":"b\nc"')
    shaped = relay_bytes(broken, 1, shapes=True, plan=False, monkeypatch=monkeypatch)
    assert shaped == relay_bytes(broken, 1, shapes=False, plan=False, monkeypatch=monkeypatch)
    assert b"malformed" in shaped
