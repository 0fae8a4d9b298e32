"""The fallback loop's decisions (router/fallback.py): a table for `decide`, and `try_in_order` with fake attempts."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gpufleet.config import RouteDefaults, RouterConfig
from gpufleet.dialects import DialectDefaults
from gpufleet.errors import EngineNotReady, RequestError, UpstreamError
from gpufleet.router.fallback import Failed, FallbackPolicy, Served, Step, decide, try_in_order
from gpufleet.router.health import HealthBoard
from gpufleet.router.metrics import RouterMetrics
from gpufleet.router.table import Candidate, Target

ERR = UpstreamError("boom")
LENIENT, STRICT = FallbackPolicy(max_attempts=3), FallbackPolicy(max_attempts=3, retry_after_sent=False)

# (failure, policy, has_next, attempts_left, retried_same) -> step
TABLE: list[tuple[Failed, FallbackPolicy, bool, bool, bool, Step]] = [
    (Failed(ERR, "connect"), LENIENT, True, True, False, Step.MOVE),
    (Failed(ERR, "connect"), STRICT, True, True, False, Step.MOVE),  # never reached the upstream
    (Failed(ERR, "connect"), LENIENT, False, True, False, Step.STOP),  # nothing left
    (Failed(ERR, "connect"), LENIENT, True, False, False, Step.STOP),  # max_attempts used up
    (Failed(ERR, "disconnect", sent=True), LENIENT, True, True, False, Step.MOVE),
    (Failed(ERR, "disconnect", sent=True), STRICT, True, True, False, Step.STOP),
    (Failed(ERR, "malformed", sent=True), STRICT, True, True, False, Step.STOP),
    (Failed(ERR, "disconnect", sent=True, stale_connection=True), LENIENT, True, True, False, Step.RETRY_SAME),
    (Failed(ERR, "disconnect", sent=True, stale_connection=True), LENIENT, False, True, False, Step.RETRY_SAME),
    (Failed(ERR, "disconnect", sent=True, stale_connection=True), LENIENT, True, True, True, Step.MOVE),
    (Failed(ERR, "disconnect", sent=True, stale_connection=True), LENIENT, False, True, True, Step.STOP),
    (Failed(ERR, "disconnect", sent=True, stale_connection=True), STRICT, True, True, False, Step.STOP),
    (Failed(ERR, "disconnect", sent=True, stale_connection=True), LENIENT, False, False, False, Step.STOP),
    (Failed(RequestError("bad"), "http_400", final=True, counts=False), LENIENT, True, True, False, Step.STOP),
    (Failed(EngineNotReady("starting"), "starting", counts=False), LENIENT, True, True, False, Step.MOVE),
]


@pytest.mark.parametrize(("failed", "policy", "has_next", "attempts_left", "retried_same", "step"), TABLE)
def test_decide(
    failed: Failed, policy: FallbackPolicy, has_next: bool, attempts_left: bool, retried_same: bool, step: Step
) -> None:
    assert decide(failed, policy, has_next=has_next, attempts_left=attempts_left, retried_same=retried_same) is step


def candidate(name: str) -> Candidate:
    return Candidate(Target(name, name), RouteDefaults(), DialectDefaults(), has_defaults=False)


def harness(names: list[str]) -> tuple[list[Candidate], HealthBoard, RouterMetrics]:
    candidates = [candidate(n) for n in names]
    board = HealthBoard({c.target.model: c.target for c in candidates}, RouterConfig(cooldown_s=30))
    return candidates, board, RouterMetrics(CollectorRegistry(), board.snapshot)


async def run(
    names: list[str], outcomes: dict[str, list[Any]], policy: FallbackPolicy
) -> tuple[Any, list[str], HealthBoard]:
    candidates, board, metrics = harness(names)
    tried: list[str] = []

    async def attempt(c: Candidate, last_resort: bool) -> Any:
        tried.append(c.target.model + ("!" if last_resort else ""))
        return outcomes[c.target.model].pop(0)

    try:
        result: Any = await try_in_order("r", candidates, attempt, policy=policy, board=board, metrics=metrics)
    except Exception as err:  # the error the client would get
        result = err
    return result, tried, board


async def test_a_stale_connection_is_retried_once_on_the_same_target_and_does_not_count() -> None:
    stale = Failed(ERR, "disconnect", sent=True, counts=False, stale_connection=True)
    result, tried, board = await run(["a", "b"], {"a": [stale, Served("ok")], "b": []}, LENIENT)
    assert result == "ok" and tried == ["a", "a"]
    assert board["a"].failures == 0


async def test_the_last_fallback_is_told_it_is_the_last_resort_and_max_attempts_bounds_the_tries() -> None:
    down = Failed(ERR, "connect")
    result, tried, _ = await run(["a", "b", "c"], {"a": [down], "b": [down], "c": [Served("ok")]}, LENIENT)
    assert result == "ok" and tried == ["a", "b", "c!"]
    result, tried, _ = await run(
        ["a", "b", "c"], {"a": [down], "b": [down], "c": [Served("ok")]}, FallbackPolicy(max_attempts=2)
    )
    assert isinstance(result, UpstreamError) and tried == ["a", "b"]
    assert "every target of 'r' failed" in result.message


async def test_the_strict_rule_answers_with_the_failure_itself_and_counts_it() -> None:
    cut = Failed(UpstreamError("cut"), "disconnect", sent=True)
    result, tried, board = await run(["a", "b"], {"a": [cut], "b": [Served("ok")]}, STRICT)
    assert result is cut.error and tried == ["a"]
    assert board["a"].failures == 1


async def test_a_starting_target_is_skipped_without_a_failure() -> None:
    starting = Failed(EngineNotReady("still starting"), "starting", counts=False)
    result, _, board = await run(["a", "b"], {"a": [starting], "b": [Served("ok")]}, LENIENT)
    assert result == "ok" and board["a"].failures == 0 and board["a"].cooldown_until == 0
