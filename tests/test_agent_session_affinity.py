"""Agent sessions stay on one replica: Codex's `prompt_cache_key` and Claude Code's `metadata.user_id` session.

Two STAND-IN raw Qwen3 coders (tests/standin_qwen_coder.py) are the replicas of one route; which one served a
request is the `x-gpufleet-model` header. The TTFT this buys on real llama.cpp replicas is measured by
benchmarks/session_affinity.py (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.gateway_harness import OpenGateway
from tests.standin_qwen_coder import StandInQwenCoder

SESSIONS = [f"session-{i}" for i in range(8)]


@pytest.fixture(scope="module")
def replicas() -> Iterator[tuple[StandInQwenCoder, StandInQwenCoder]]:
    first, second = StandInQwenCoder().start(), StandInQwenCoder().start()
    yield first, second
    first.stop()
    second.stop()


def config(replicas: tuple[StandInQwenCoder, StandInQwenCoder], affinity: bool) -> dict[str, Any]:
    models = {
        name: {"engine": "remote", "url": coder.url, "upstream_model": "Qwen/Qwen3-8B", "listed": False}
        for name, coder in zip(("coder-a", "coder-b"), replicas, strict=True)
    }
    return {"models": models, "routes": {"coder": {"targets": list(models), "affinity": affinity}}}


def responses_turn(session: str, turn: int) -> tuple[str, dict[str, Any]]:
    return "/v1/responses", {
        "model": "coder",
        "input": f"turn {turn}",
        "prompt_cache_key": session,
        "store": False,
        "max_output_tokens": 50,
    }


def messages_turn(session: str, turn: int) -> tuple[str, dict[str, Any]]:
    return "/v1/messages", {
        "model": "coder",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": f"turn {turn}"}],
        "metadata": {"user_id": f"user_abc_account_def_session_{session}"},
    }


@pytest.mark.parametrize("turn_of", [responses_turn, messages_turn], ids=["responses", "messages"])
async def test_each_agent_session_keeps_one_replica_and_sessions_use_both(
    gw: OpenGateway, replicas: tuple[StandInQwenCoder, StandInQwenCoder], turn_of: Any
) -> None:
    http = await gw(config(replicas, affinity=True))
    served: dict[str, set[str]] = {session: set() for session in SESSIONS}
    for turn in range(5):
        for session in SESSIONS:
            path, body = turn_of(session, turn)
            reply = await http.post(path, json=body)
            assert reply.status_code == 200, reply.text
            served[session].add(reply.headers["x-gpufleet-model"])
    assert all(len(models) == 1 for models in served.values()), served
    assert set().union(*served.values()) == {"coder-a", "coder-b"}  # pinned, yet spread over the replicas


async def test_without_affinity_a_session_moves_between_replicas(
    gw: OpenGateway, replicas: tuple[StandInQwenCoder, StandInQwenCoder]
) -> None:
    http = await gw(config(replicas, affinity=False))
    served: set[str] = set()
    for turn in range(4):
        path, body = responses_turn("session-0", turn)
        reply = await http.post(path, json=body)
        assert reply.status_code == 200, reply.text
        served.add(reply.headers["x-gpufleet-model"])
    assert served == {"coder-a", "coder-b"}  # one at a time, ties are taken in turn: round-robin
