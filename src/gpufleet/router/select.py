"""Which targets a request tries, in which order.

Within a group of replicas: the session's replica first when the route keeps sessions together (rendezvous
hashing on the session key, so a session stays put while its replica is healthy and only its sessions
move when it is not — prefix caches stay warm), then the least-loaded (gpufleet's in-flight count plus
the engine's own waiting queue where it is scraped: vLLM's `num_requests_waiting` at the supervisor's last
scrape, wired by the gateway as `load_of`), ties spread round-robin. Groups are tried in order
(replicas, then each fallback). Targets in cooldown go last: trying a cooling target beats failing a
request that nothing else can serve.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable

from gpufleet.router.health import HealthBoard
from gpufleet.router.table import Candidate, Route, Target

LoadOf = Callable[[Target], float]


class TargetSelector:
    """Orders a route's candidates for one request."""

    def __init__(self, board: HealthBoard, load_of: LoadOf | None = None) -> None:
        self._board = board
        self._load_of = load_of
        self._turn = itertools.count()

    def order(self, route: Route, *, session: str | None, max_attempts: int) -> list[Candidate]:
        """The candidates to try, best first, at most `max_attempts`."""
        groups = route.groups
        if len(groups) == 1 and len(groups[0]) == 1:
            return [groups[0][0]]  # one target: nothing to choose (the common case, kept cheap)
        now = time.monotonic()
        board = self._board
        ordered: list[Candidate] = []
        cooling: list[Candidate] = []
        for group in groups:
            available: list[Candidate] = []
            for candidate in group:
                (available if board[candidate.target.model].available(now) else cooling).append(candidate)
            if len(available) > 1:
                available = self._rank(available, session if route.affinity else None)
            ordered += available
        ordered += cooling
        return ordered[:max_attempts]

    def _rank(self, replicas: list[Candidate], session: str | None) -> list[Candidate]:
        turn = next(self._turn)
        n = len(replicas)

        def load(item: tuple[int, Candidate]) -> tuple[float, int]:
            index, candidate = item
            target = candidate.target
            value = float(self._board[target.model].in_flight)
            if self._load_of is not None:
                value += self._load_of(target)
            return value, (index - turn) % n

        ranked = [c for _, c in sorted(enumerate(replicas), key=load)]
        if session:
            key = session.encode()
            pinned = max(replicas, key=lambda c: _rendezvous(key, c.target.model))
            ranked.remove(pinned)
            ranked.insert(0, pinned)
        return ranked


def _rendezvous(session: bytes, model: str) -> bytes:
    # A real hash: CRC32's linearity makes names that differ in one character rank the same way for every key.
    return hashlib.blake2b(session + b"\0" + model.encode(), digest_size=8).digest()


def session_key(headers_value: str | None, payload: dict[str, object]) -> str | None:
    """The session a request belongs to: the x-gpufleet-session header, else the OpenAI `user` field."""
    if headers_value:
        return headers_value
    user = payload.get("user")
    return user if isinstance(user, str) and user else None
