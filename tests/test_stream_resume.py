"""A stream that breaks after its first byte continues on another replica of its route (issue 26).

The replicas here are STAND-IN upstreams (`PieceUpstream`, not an engine): each streams one fixed answer piece by
piece and, asked with the answer's beginning as a final assistant message (or appended to the prompt), streams only
the rest, as llama.cpp does with an assistant prefill. The real engines: test_stream_resume_real.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from tests.gateway_harness import served_app
from tests.standin_kit import SSE_DONE, LoopbackUvicorn, sse

STORY = [f"word{i} " for i in range(12)]
# A raw Qwen3 answer: reasoning, then a tool call, as the Qwen dialect receives it from an engine without parsers.
QWEN_RAW = [
    "<think>",
    "\nThe user",
    " wants a file",
    ".\n",
    "</think>",
    "\n\n",
    "<tool_call>",
    '\n{"name": ',
    '"write_file", ',
    '"arguments": ',
    '{"path": ',
    '"a.txt"}}',
    "\n</tool_call>",
]


class PieceUpstream:
    """STAND-IN replica: streams `pieces` (or the rest of them after a prefill); `die_after` cuts the connection."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.die_after: int | None = None
        self.stall_after: int | None = None  # goes silent (but keeps the connection) after this many pieces
        self.refuse_prefill = False  # a target that cannot continue a final assistant message
        self.received: list[dict[str, Any]] = []
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._answer, methods=["POST"]),
                Route("/v1/completions", self._answer, methods=["POST"]),
                Route("/v1/models", lambda r: Response(b'{"data": []}'), methods=["GET"]),
            ]
        )
        self._server = LoopbackUvicorn(app, log_level="critical", lifespan="off")
        self.port = self._server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> PieceUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout_s=5)

    def _prefix(self, body: dict[str, Any]) -> str:
        messages = body.get("messages")
        if isinstance(messages, list) and messages and messages[-1].get("role") == "assistant":
            return str(messages[-1].get("content") or "")
        prompt = str(body.get("prompt") or "")
        return prompt.removeprefix("Tell a story:")

    async def _answer(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.received.append(body)
        prefix = self._prefix(body)
        if prefix and self.refuse_prefill:
            error = {"error": {"message": "cannot continue a final assistant message", "type": "invalid_request"}}
            return Response(orjson.dumps(error), status_code=400, media_type="application/json")
        full = "".join(self.pieces)
        assert full.startswith(prefix), f"the stand-in was asked to continue {prefix!r}, not a prefix of its answer"
        rest, start, done = [], 0, 0  # the pieces after the prefix; one cut by it continues with its rest
        for piece in self.pieces:
            if done + len(piece) <= len(prefix):
                start += 1
            else:
                rest.append(piece[max(0, len(prefix) - done) :])
            done += len(piece)
        completion = "messages" not in body
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(rest)}
            answer = {
                "id": f"cmpl-{self.port}",
                "object": "chat.completion",
                "model": "standin",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
            return Response(orjson.dumps(answer), media_type="application/json")
        return StreamingResponse(self._stream(rest, completion, start), media_type="text/event-stream")

    async def _stream(self, pieces: list[str], completion: bool, prefilled: int) -> AsyncIterator[bytes]:
        base = {
            "id": f"cmpl-{self.port}",
            "created": self.port,
            "model": "standin",
            "object": "text_completion" if completion else "chat.completion.chunk",
        }
        if not completion:
            opening = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            yield sse({**base, "choices": [opening]})
        for index, piece in enumerate(pieces):
            choice = {"index": 0, "text": piece} if completion else {"index": 0, "delta": {"content": piece}}
            yield sse({**base, "choices": [{**choice, "finish_reason": None}]})
            await asyncio.sleep(0.005)
            if self.die_after is not None and index + 1 >= self.die_after:
                raise RuntimeError("stand-in replica dies mid-stream")
            if self.stall_after is not None and index + 1 >= self.stall_after:
                await asyncio.sleep(30)
        last: dict[str, Any] = {"index": 0, "finish_reason": "stop", **({"text": ""} if completion else {"delta": {}})}
        yield sse({**base, "choices": [last]})
        usage = {"prompt_tokens": 10 + prefilled, "completion_tokens": len(pieces), "total_tokens": 0}
        yield sse({**base, "choices": [], "usage": usage})
        yield SSE_DONE


@pytest.fixture
def replicas(request: pytest.FixtureRequest) -> Iterator[tuple[PieceUpstream, PieceUpstream]]:
    pieces = getattr(request, "param", STORY)
    a, b = PieceUpstream(pieces).start(), PieceUpstream(pieces).start()
    yield a, b
    a.stop()
    b.stop()


def gateway_config(a: PieceUpstream, b: PieceUpstream, **router: Any) -> dict[str, Any]:
    return {
        "models": {
            "rep-a": {"engine": "remote", "url": a.url, "upstream_model": "m", "listed": False},
            "rep-b": {"engine": "remote", "url": b.url, "upstream_model": "m", "listed": False},
        },
        "routes": {"story": {"targets": ["rep-a", "rep-b"], "affinity": True}},
        "router": {"retry_backoff_s": 0, **router},
    }


@pytest.fixture
def gateway_url(replicas: tuple[PieceUpstream, PieceUpstream]) -> Iterator[str]:
    with served_app(build_app(parse_config(gateway_config(*replicas)))) as url:
        yield url


def events(text: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"
    ]


def first_served(replicas: tuple[PieceUpstream, PieceUpstream], url: str, session: str) -> PieceUpstream:
    """Which replica a session lands on (affinity keeps it there): that one is made to die."""
    reply = httpx.post(
        f"{url}/v1/chat/completions",
        headers={"x-gpufleet-session": session},
        timeout=30,
        json={"model": "story", "messages": [{"role": "user", "content": "Tell a story"}]},
    )
    return replicas[0] if reply.headers["x-gpufleet-model"] == "rep-a" else replicas[1]


@pytest.mark.parametrize("cut", [1, 6, 11])
def test_a_chat_stream_cut_after_n_chunks_reads_as_one_uninterrupted_answer(
    replicas: tuple[PieceUpstream, PieceUpstream], gateway_url: str, cut: int
) -> None:
    session = f"s{cut}"
    home = first_served(replicas, gateway_url, session)
    other = replicas[1] if home is replicas[0] else replicas[0]
    home.die_after = cut
    body = {
        "model": "story",
        "messages": [{"role": "user", "content": "Tell a story"}],
        "stream": True,
        "max_tokens": 100,
        "stream_options": {"include_usage": True},
    }
    reply = httpx.post(
        f"{gateway_url}/v1/chat/completions", json=body, timeout=30, headers={"x-gpufleet-session": session}
    )
    assert reply.status_code == 200 and reply.text.rstrip().endswith("data: [DONE]")
    chunks = events(reply.text)
    assert all("error" not in c for c in chunks), reply.text
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    assert text == "".join(STORY)  # nothing repeated, nothing missing
    assert {c["id"] for c in chunks} == {f"cmpl-{home.port}"}  # one stream: the first part's id throughout
    finals = [c for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")]
    assert len(finals) == 1 and finals[0]["gpufleet"] == {"resumed": 1}
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == len(STORY) and usage["prompt_tokens"] == 10
    # The continuing replica was asked to continue exactly what the client had, with what was left to generate.
    continued = other.received[-1]
    # It ends before the last whitespace relayed (re-tokenizing a cut word can drift); what follows is written
    # again by the continuation and not shown twice.
    relayed = "".join(STORY[:cut])
    assert continued["messages"][-1] == {"role": "assistant", "content": relayed[: relayed.rfind(" ")]}
    assert continued["continue_final_message"] is True and continued["add_generation_prompt"] is False
    assert continued["max_tokens"] == 100 - cut + 1  # the last piece is written again
    status = httpx.get(f"{gateway_url}/status", timeout=10).json()
    assert status["stream_resumes"]["resumed"] >= 1
    metrics = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    assert 'gpufleet_stream_resumes_total{from_model="rep-' in metrics and 'outcome="resumed"' in metrics


def test_a_completions_stream_continues_after_the_prompt(
    replicas: tuple[PieceUpstream, PieceUpstream], gateway_url: str
) -> None:
    home = first_served(replicas, gateway_url, "c")
    other = replicas[1] if home is replicas[0] else replicas[0]
    home.die_after = 5
    body = {"model": "story", "prompt": "Tell a story:", "stream": True, "max_tokens": 50}
    reply = httpx.post(f"{gateway_url}/v1/completions", json=body, timeout=30, headers={"x-gpufleet-session": "c"})
    chunks = events(reply.text)
    assert all("error" not in c for c in chunks), reply.text
    assert "".join(c["choices"][0].get("text") or "" for c in chunks if c.get("choices")) == "".join(STORY)
    continued = other.received[-1]
    relayed = "".join(STORY[:5])
    assert continued["prompt"] == "Tell a story:" + relayed[: relayed.rfind(" ")]
    assert continued["max_tokens"] == 46
    assert "continue_final_message" not in continued


def test_a_second_break_after_max_resumes_ends_with_the_error_event(
    replicas: tuple[PieceUpstream, PieceUpstream], gateway_url: str
) -> None:
    home = first_served(replicas, gateway_url, "d")
    other = replicas[1] if home is replicas[0] else replicas[0]
    home.die_after, other.die_after = 3, 2  # the continuation breaks too: router.max_resumes (1) is spent
    body = {"model": "story", "messages": [{"role": "user", "content": "Tell a story"}], "stream": True}
    reply = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, timeout=30, headers={"x-gpufleet-session": "d"})
    chunks = events(reply.text)
    # B's first piece is the replayed " " (after "word2"), then "word3 ", then it dies.
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == "".join(
        STORY[:4]
    )
    assert chunks[-1]["error"]["code"] == "upstream_stream_error"


@pytest.mark.parametrize("replicas", [QWEN_RAW], indirect=True)
@pytest.mark.parametrize("cut", [3, 9])
def test_a_break_inside_reasoning_or_a_tool_call_is_finished_by_the_dialect(
    replicas: tuple[PieceUpstream, PieceUpstream], cut: int
) -> None:
    config = gateway_config(*replicas)
    for name in ("rep-a", "rep-b"):
        config["models"][name]["dialect"] = "qwen3"
    tools = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}]
    with contextlib_served(config) as url:
        home = first_served(replicas, url, "q")
        home.die_after = cut
        body = {
            "model": "story",
            "messages": [{"role": "user", "content": "make a.txt"}],
            "tools": tools,
            "stream": True,
        }
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30, headers={"x-gpufleet-session": "q"})
    chunks = events(reply.text)
    assert all("error" not in c for c in chunks), reply.text
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    assert reasoning.strip() == "The user wants a file."
    calls = [call for d in deltas for call in d.get("tool_calls") or ()]
    assert calls and calls[0]["function"]["name"] == "write_file"
    assert orjson.loads("".join(c["function"].get("arguments") or "" for c in calls)) == {"path": "a.txt"}
    assert not "".join(d.get("content") or "" for d in deltas).strip()  # no raw tags leaked as text
    finals = [c for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")]
    assert finals[-1]["choices"][0]["finish_reason"] == "tool_calls" and finals[-1]["gpufleet"] == {"resumed": 1}


def test_a_replica_that_cannot_continue_ends_the_stream_with_the_error_event(
    replicas: tuple[PieceUpstream, PieceUpstream], gateway_url: str
) -> None:
    home = first_served(replicas, gateway_url, "r")
    other = replicas[1] if home is replicas[0] else replicas[0]
    home.die_after, other.refuse_prefill = 4, True
    body = {"model": "story", "messages": [{"role": "user", "content": "Tell a story"}], "stream": True}
    reply = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, timeout=30, headers={"x-gpufleet-session": "r"})
    chunks = events(reply.text)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == "".join(
        STORY[:4]
    )
    assert chunks[-1]["error"]["code"] == "upstream_stream_error"
    assert reply.text.rstrip().endswith("data: [DONE]")
    assert httpx.get(f"{gateway_url}/status", timeout=10).json()["stream_resumes"]["failed"] >= 1


def test_max_resumes_zero_keeps_the_error_event(replicas: tuple[PieceUpstream, PieceUpstream]) -> None:
    with contextlib_served(gateway_config(*replicas, max_resumes=0)) as url:
        home = first_served(replicas, url, "z")
        home.die_after = 3
        body = {"model": "story", "messages": [{"role": "user", "content": "Tell a story"}], "stream": True}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30, headers={"x-gpufleet-session": "z"})
    assert events(reply.text)[-1]["error"]["code"] == "upstream_stream_error"
    assert len(replicas[0].received) + len(replicas[1].received) == 2  # the probe request and this one


async def test_non_stream_requests_never_carry_a_trail(replicas: tuple[PieceUpstream, PieceUpstream]) -> None:
    app = build_app(parse_config(gateway_config(*replicas)))
    transport = httpx.ASGITransport(app=app)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        reply = await http.post(
            "/v1/chat/completions", json={"model": "story", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert reply.status_code == 200 and "continue_final_message" not in replicas[0].received[-1] | (
        replicas[1].received[-1] if replicas[1].received else {}
    )


def contextlib_served(config: dict[str, Any]) -> Any:
    return served_app(build_app(parse_config(config)))


def test_a_stream_silent_for_the_stall_timeout_continues_on_the_other_replica(
    replicas: tuple[PieceUpstream, PieceUpstream],
) -> None:
    with contextlib_served(gateway_config(*replicas, stream_stall_timeout_s=0.5)) as url:
        home = first_served(replicas, url, "st")
        home.stall_after = 4
        body = {"model": "story", "messages": [{"role": "user", "content": "Tell a story"}], "stream": True}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30, headers={"x-gpufleet-session": "st"})
    chunks = events(reply.text)
    assert all("error" not in c for c in chunks), reply.text
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == "".join(STORY)


def _fallback_config(a: PieceUpstream, b: PieceUpstream, resume: bool) -> dict[str, Any]:
    config = gateway_config(a, b)
    config["routes"]["story"] = {
        "targets": ["rep-a"],
        "fallbacks": ["rep-b"],
        **({"resume_fallbacks": ["rep-b"]} if resume else {}),
    }
    return config


@pytest.mark.parametrize("resume", [True, False], ids=["resume_fallbacks", "plain-fallback"])
def test_a_fallback_continues_a_stream_only_when_declared_the_same_model(
    replicas: tuple[PieceUpstream, PieceUpstream], resume: bool
) -> None:
    replicas[0].die_after = 4
    with contextlib_served(_fallback_config(*replicas, resume)) as url:
        body = {"model": "story", "messages": [{"role": "user", "content": "Tell a story"}], "stream": True}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    chunks = events(reply.text)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    if resume:
        assert all("error" not in c for c in chunks) and text == "".join(STORY)
    else:  # another model would continue someone else's text: the break ends the stream honestly
        assert text == "".join(STORY[:4]) and chunks[-1]["error"]["code"] == "upstream_stream_error"
        assert replicas[1].received == []


def test_resume_fallbacks_must_name_fallbacks() -> None:
    from gpufleet.errors import ConfigError

    with pytest.raises(ConfigError, match=r"routes\.story.*resume_fallbacks: 'rep-c' is not one of this route"):
        parse_config(
            {
                "models": {
                    "rep-a": {"engine": "remote", "url": "http://127.0.0.1:9/v1"},
                    "rep-b": {"engine": "remote", "url": "http://127.0.0.1:9/v1"},
                },
                "routes": {"story": {"targets": ["rep-a"], "fallbacks": ["rep-b"], "resume_fallbacks": ["rep-c"]}},
            }
        )
