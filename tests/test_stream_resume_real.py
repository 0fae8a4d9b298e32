"""A stream whose engine is killed mid-answer continues on the other REAL replica (issue 26), text unchanged.

Two embedded llama.cpp engines serve SmolLM2 behind one route at temperature 0. The engine serving a 200-token
answer is SIGKILLed after the client read N chunks; the client's concatenated text must equal an uninterrupted
run's text exactly, for N early, in the middle and late, in chat and completions. The continuation relies on
llama.cpp continuing a final assistant message. Exact equality also needs the replica that continues to compute
the prefilled text with the same numerics as decoding it: with llama.cpp's default micro-batch a fresh replica's
batched prefill diverged from the uninterrupted answer at 2 of 3 cuts (a near-tie in the tiny Q4 model flips);
with `n_ubatch: 1` every cut is exact (docs/router.md, "Resuming a stream").
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.real_engines import smollm2_model
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

pytestmark = pytest.mark.slow

TOKENS = 200
STORY = "Write a short story about a robot learning to paint."
CHAT = {
    "model": "smol",
    "messages": [{"role": "user", "content": STORY}],
    "max_tokens": TOKENS,
    "temperature": 0,
    "seed": 1,
    "stream": True,
}
COMPLETION = {
    "model": "smol",
    "prompt": "The history of the printing press begins",
    "max_tokens": TOKENS,
    "temperature": 0,
    "seed": 1,
    "stream": True,
}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    config = {
        "models": {
            # Batch-invariant prefill (see the module docstring): what makes the continuation exact, not just valid.
            "smol-a": smollm2_model(parallel=1, context=2048, threads=1, listed=False, extra_args={"n_ubatch": 1}),
            "smol-b": smollm2_model(parallel=1, context=2048, threads=1, listed=False, extra_args={"n_ubatch": 1}),
        },
        "routes": {"smol": {"targets": ["smol-a", "smol-b"]}},
        "server": {"queue_timeout_s": 0},
        "router": {"cooldown_s": 1, "retry_backoff_s": 0, "max_resumes": 1},
    }
    gateway = start_gateway(config, tmp_path_factory.mktemp("resume-real"))
    yield gateway
    stop_gateway(gateway)


def _text(chunk: dict[str, Any]) -> str:
    choice = (chunk.get("choices") or [{}])[0]
    return str(choice.get("text") or (choice.get("delta") or {}).get("content") or "")


def _both_ready(gateway: ServedGateway) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(gateway.status(name)["state"] == "ready" for name in ("smol-a", "smol-b")):
            return
        time.sleep(0.2)
    raise AssertionError("the killed replica did not come back")


def _run(gateway: ServedGateway, path: str, body: dict[str, Any], kill_after: int | None) -> tuple[str, list[Any]]:
    """The streamed text and its chunks; with `kill_after`, the serving engine is SIGKILLed after that many."""
    pieces: list[str] = []
    chunks: list[Any] = []
    with httpx.stream("POST", f"{gateway.url}{path}", json=body, timeout=300) as reply:
        assert reply.status_code == 200
        serving = reply.headers["x-gpufleet-model"]
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            chunks.append(chunk)
            if _text(chunk):
                pieces.append(_text(chunk))
                if kill_after is not None and len(pieces) == kill_after:
                    pid = gateway.status(serving)["pid"]
                    assert isinstance(pid, int)
                    os.kill(pid, signal.SIGKILL)
    return "".join(pieces), chunks


@pytest.mark.parametrize(
    ("path", "body"), [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)], ids=["chat", "completions"]
)
def test_killing_the_serving_engine_mid_answer_costs_the_client_nothing(
    replicas: ServedGateway, path: str, body: dict[str, Any]
) -> None:
    _both_ready(replicas)
    uninterrupted, _ = _run(replicas, path, body, None)
    assert len(uninterrupted) > 200  # a long answer, so that early, middle and late cuts differ
    for kill_after in (5, 90, 160):
        _both_ready(replicas)
        text, chunks = _run(replicas, path, body, kill_after)
        assert all("error" not in c for c in chunks), chunks[-3:]
        assert text == uninterrupted, f"cut after {kill_after} chunks"
        finals = [c for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")]
        assert finals[-1].get("gpufleet") == {"resumed": 1}, f"cut after {kill_after}: the stream did not resume"
        assert len({c["id"] for c in chunks}) == 1
    resumes = httpx.get(f"{replicas.url}/status", timeout=10).json()["stream_resumes"]
    assert resumes.get("resumed", 0) >= 3
