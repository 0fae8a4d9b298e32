"""The SSE rewriter: events split at any byte boundary come out whole, rewritten, in order."""

from __future__ import annotations

import time

import orjson
import pytest

from gpufleet.gateway.relay import SSERewriter, StreamStats


def upstream_bytes() -> bytes:
    chunks = [
        {"id": "x", "model": "l", "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
        {"id": "x", "model": "l", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"id": "x", "model": "l", "choices": [{"index": 0, "delta": {"content": "lo ✓"}}]},
        {"id": "x", "model": "l", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "x", "model": "l", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
    ]
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def run(pieces: list[bytes], wants_usage: bool) -> tuple[bytes, StreamStats]:
    stats = StreamStats(started=time.perf_counter())
    rewriter = SSERewriter(served_model="qwen", client_wants_usage=wants_usage, stats=stats)
    out = b"".join(rewriter.feed(p) for p in pieces) + rewriter.close()
    return out, stats


WHOLE, _ = run([upstream_bytes()], wants_usage=True)


@pytest.mark.parametrize("cut", range(1, len(upstream_bytes())))
def test_events_split_at_every_position_give_the_same_output(cut: int) -> None:
    data = upstream_bytes()
    out, stats = run([data[:cut], data[cut:]], wants_usage=True)
    assert out == WHOLE
    assert stats.completion_tokens == 2


def test_model_is_rewritten_and_done_sent_once() -> None:
    events = WHOLE.decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    assert events.count("data: [DONE]") == 1
    assert all(orjson.loads(e[6:])["model"] == "qwen" for e in events[:-1])


def test_usage_chunk_dropped_but_counted_when_client_did_not_ask() -> None:
    out, stats = run([upstream_bytes()], wants_usage=False)
    assert b'"usage"' not in out
    assert (stats.prompt_tokens, stats.completion_tokens) == (7, 2)


def test_crlf_separated_events_are_understood() -> None:
    out, _ = run([upstream_bytes().replace(b"\n", b"\r\n")], wants_usage=True)
    assert out == WHOLE


def test_stream_without_done_gets_one_at_close() -> None:
    data = upstream_bytes().replace(b"data: [DONE]\n\n", b"")
    out, _ = run([data], wants_usage=True)
    assert out.endswith(b"data: [DONE]\n\n")


def test_first_token_time_is_set_by_content_not_by_the_role_chunk() -> None:
    data = upstream_bytes()
    first_event_end = data.index(b"\n\n") + 2
    stats = StreamStats(started=time.perf_counter())
    rewriter = SSERewriter(served_model="qwen", client_wants_usage=False, stats=stats)
    rewriter.feed(data[:first_event_end])
    assert stats.first_token_at is None
    rewriter.feed(data[first_event_end:])
    assert stats.first_token_at is not None
