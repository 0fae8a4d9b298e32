"""The streamed reasoning cap stops generation: through the real gateway, against replayed Qwen3 output.

The upstream is the STAND-IN in standin_replay.py: it streams a recorded Qwen3-8B answer (tests/data/qwen/
thinking_on.json) at 1- and 7-character chunks and, before it sends `</think>`, waits for the gateway to
hang up. docs/qwen.md promises: once the cap is hit the upstream is cancelled, nothing after the cut is
relayed, and the choice ends with `finish_reason: "length"`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from tests.standin_replay import StandInReplayUpstream

RECORDED = json.loads((Path(__file__).parent / "data" / "qwen" / "thinking_on.json").read_text())


def sse_chunks(text: str) -> list[dict[str, Any]]:
    blocks = [b.removeprefix("data: ") for b in text.strip().split("\n\n")]
    assert blocks[-1] == "[DONE]"
    return [orjson.loads(b) for b in blocks[:-1]]


def joined(chunks: list[dict[str, Any]], key: str) -> str:
    return "".join(c["choices"][0]["delta"].get(key) or "" for c in chunks if c.get("choices"))


async def stream_through_gateway(
    upstream: StandInReplayUpstream, body: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    # Served as "llm" by a vLLM without parsers: the dialect comes from upstream_model's Qwen3 id.
    config = parse_config(
        {
            "models": {
                "qwen3": {
                    "engine": "remote",
                    "url": upstream.url,
                    "upstream_model": "Qwen/Qwen3-8B",
                    "defaults": defaults or {},
                }
            }
        }
    )
    app = build_app(config)
    transport = httpx.ASGITransport(app=app)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        response = await http.post(
            "/v1/chat/completions",
            json={
                "model": "qwen3",
                "messages": [{"role": "user", "content": "What is 17 times 23?"}],
                "stream": True,
                **body,
            },
        )
    assert response.status_code == 200, response.text
    return sse_chunks(response.text)


@pytest.fixture(params=[1, 7], ids=["1-char", "7-char"])
async def replay(request: pytest.FixtureRequest) -> AsyncIterator[StandInReplayUpstream]:
    upstream = await StandInReplayUpstream(RECORDED["output"], chunk_chars=request.param).start()
    yield upstream
    await upstream.stop()


@pytest.mark.parametrize(
    "body, defaults",
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 5}}, None),
        ({"chat_template_kwargs": {"enable_thinking": True}}, {"max_reasoning_tokens": 5}),
    ],
    ids=["budget_tokens", "route-max_reasoning_tokens"],
)
async def test_capped_stream_cancels_the_upstream_and_ends_with_length(
    replay: StandInReplayUpstream, body: dict[str, Any], defaults: dict[str, Any] | None
) -> None:
    chunks = await stream_through_gateway(replay, body, defaults)
    assert joined(chunks, "reasoning_content") == RECORDED["expected"]["reasoning"][:20]  # 5 tokens x 4 chars
    assert joined(chunks, "content") == ""  # nothing after the cut: the answer was never generated
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]
    assert [f for f in finishes if f] == ["length"]
    assert [c["gpufleet"] for c in chunks if "gpufleet" in c] == [{"reasoning_capped": True, "max_reasoning_tokens": 5}]
    # The stand-in saw the gateway hang up before it had to send `</think>` (it waits for that up to 10 s).
    assert replay.saw_disconnect
    assert replay.sent_chars <= RECORDED["output"].index("</think>")


async def test_uncapped_stream_reads_the_whole_answer(replay: StandInReplayUpstream) -> None:
    replay.pause_s = 0.05  # nobody will hang up: do not wait long
    chunks = await stream_through_gateway(replay, {"thinking": {"type": "enabled", "budget_tokens": 1000}})
    assert joined(chunks, "reasoning_content") == RECORDED["expected"]["reasoning"]
    assert joined(chunks, "content") == RECORDED["expected"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["stop"]
    assert not replay.saw_disconnect and replay.sent_chars == len(RECORDED["output"])
