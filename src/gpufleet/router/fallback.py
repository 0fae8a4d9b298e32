"""The fallback loop: try a route's candidates in order through an attempt function, decide from its outcome.

    answer = await try_in_order(route.name, candidates, attempt, policy=policy, board=board, metrics=metrics)

The attempt (gateway/forward.py) does the I/O and returns a typed outcome: `Served(answer)` or `Failed(...)`.
This module only decides what follows a failure (`decide`, a pure function tested with a table):

- the client's own error (`final`, e.g. an engine's 400) stops at once;
- a failure after the request reached the upstream (`sent`: a hang after the headers, a cut or malformed
  answer, a dropped connection) moves to the next target under the default `router.retry_after_sent: true`
  (chat, completions and embeddings have no side effects beyond compute, and the client got nothing yet),
  and stops under `false` (the strict rule, for remotes billed per call);
- a kept-alive connection that dropped once the request was on it (`stale_connection`: mostly one the
  upstream had closed while idle, but the upstream may have read the request) is one attempt of that
  target: the same target is tried once more, on a fresh connection, before any other (not under the strict
  rule);
- anything else (refused connection, timeout before the first byte, 5xx/429, an engine not ready) moves on.

Every try counts against `router.max_attempts`. A failure is counted against the target's health unless it
says otherwise (`counts=False`: a cold standby still starting, a stale pooled connection); each move is
counted in gpufleet_fallbacks_total{reason}.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gpufleet.errors import EngineError, EngineNotReady, GpufleetError, UpstreamError
from gpufleet.router.health import HealthBoard
from gpufleet.router.metrics import RouterMetrics
from gpufleet.router.table import Candidate

log = logging.getLogger("gpufleet.router")

T = TypeVar("T")


@dataclass(frozen=True)
class Served(Generic[T]):
    """The target answered (the answer may still be a stream in progress)."""

    answer: T


@dataclass(frozen=True)
class Failed:
    """The target failed before anything reached the client."""

    error: GpufleetError
    reason: str  # metric label: connect, timeout, first_byte_timeout, disconnect, malformed, http_503, starting, ...
    sent: bool = False  # the request reached the upstream (it may have run it): the strict rule stops here
    counts: bool = True  # counts against the target's health (cooldown)
    stale_connection: bool = False  # a reused keep-alive connection was dropped: a fresh one may work
    final: bool = False  # the client's own error: no other target would do better


Outcome = Served[T] | Failed


class Step(enum.Enum):
    """What follows a failed attempt."""

    MOVE = "move"  # the next target
    RETRY_SAME = "retry_same"  # the same target, on a fresh connection
    STOP = "stop"  # answer the client with this failure


@dataclass(frozen=True)
class FallbackPolicy:
    """The router settings the loop reads."""

    max_attempts: int
    retry_after_sent: bool = True
    retry_backoff_s: float = 0.0
    max_resumes: int = 0  # a broken stream continues on another replica at most this often (router.max_resumes)
    stream_stall_timeout_s: float | None = None  # a stream silent this long after its first byte is broken


def decide(failed: Failed, policy: FallbackPolicy, *, has_next: bool, attempts_left: bool, retried_same: bool) -> Step:
    """The step after `failed` (pure: see the module docstring for the rules). `has_next`: another target is
    left to try; `attempts_left`: router.max_attempts allows one more try."""
    if failed.final or not attempts_left or (failed.sent and not policy.retry_after_sent):
        return Step.STOP
    if failed.stale_connection and not retried_same:
        return Step.RETRY_SAME
    return Step.MOVE if has_next else Step.STOP


Attempt = Callable[[Candidate, bool], Awaitable["Outcome[T]"]]  # (candidate, last_resort) -> outcome


async def try_in_order(
    route: str,
    candidates: Sequence[Candidate],
    attempt: Attempt[T],
    *,
    policy: FallbackPolicy,
    board: HealthBoard,
    metrics: RouterMetrics,
) -> T:
    """The first answer of `candidates` tried in order; raise the failure (or a summary of all) when none answers.

    `attempt(candidate, last_resort)`: `last_resort` is True for a fallback that no other target follows (a
    cold standby may then be waited for up to its ready timeout).
    """
    failures: list[tuple[Candidate, Failed]] = []
    index, tries, retried_same = 0, 0, False
    while True:
        candidate = candidates[index]
        outcome = await attempt(candidate, index > 0 and index == len(candidates) - 1)
        tries += 1
        if isinstance(outcome, Served):
            return outcome.answer
        if outcome.counts:
            board.failure(candidate.target, str(outcome.error))
        failures.append((candidate, outcome))
        step = decide(
            outcome,
            policy,
            has_next=index + 1 < len(candidates),
            attempts_left=tries < policy.max_attempts,
            retried_same=retried_same,
        )
        if step is Step.STOP:
            raise _stop_error(outcome, policy, failures, route, board)
        if step is Step.MOVE:
            index, retried_same = index + 1, False
        else:
            retried_same = True
        metrics.observe_fallback(route, candidate.target.model, outcome.reason)
        log.warning(
            "%s: %s failed (%s); trying %s",
            route,
            candidate.target.label,
            outcome.error,
            candidates[index].target.label,
        )
        if policy.retry_backoff_s:
            await asyncio.sleep(policy.retry_backoff_s * 2 ** (tries - 1))


def _stop_error(
    failed: Failed, policy: FallbackPolicy, failures: Sequence[tuple[Candidate, Failed]], route: str, board: HealthBoard
) -> GpufleetError:
    """What the client gets: this failure itself when it alone decides (the first, the client's own error, the
    strict rule), else a summary of every target's failure."""
    error = failed.error
    if isinstance(error, UpstreamError) and error.status_code == 429 and not error.retry_after_s:
        error.retry_after_s = board.retry_after_s([candidate.target for candidate, _ in failures])
    if len(failures) == 1 or failed.final or (failed.sent and not policy.retry_after_sent):
        return error
    return exhausted(route, failures)


def exhausted(route: str, failures: Sequence[tuple[Candidate, Failed]]) -> GpufleetError:
    """One error for a request that every target failed: the last failure's status, every target's message."""
    error = failures[-1][1].error
    summary = f"every target of {route!r} failed: " + "; ".join(
        f"{candidate.target.label}: {failed.error.message}" for candidate, failed in failures
    )  # message: no log
    if isinstance(error, EngineError):
        return EngineNotReady(summary, retry_after_s=error.retry_after_s)
    status = error.status_code if error.status_code in (429, 503, 504) else 502
    result = UpstreamError(summary, status_code=status)
    result.code = error.code
    if isinstance(error, UpstreamError):
        result.retry_after_s = error.retry_after_s
    return result
