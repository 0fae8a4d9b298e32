"""In-memory counters behind every key's limits; a request over one gets RateLimited (HTTP 429).

Hot path: one dict lookup and a few integer compares per request (docs/benchmarks.md has the figure).
Windows are fixed (the current UTC minute, the current UTC day), as OpenAI's `x-ratelimit-reset-*` headers
describe them. Tokens are known only when an answer ends, so a token limit admits a request while the
window's tokens are under it, and the request's own tokens count when it ends.

    limiter = Limiter()
    headers = limiter.acquire("key-id", Limits(rpm=60), now=time.time())   # raises RateLimited when over
    ...
    limiter.release("key-id", tokens=123, now=time.time())
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.errors import RateLimited

_DAY_S = 86400


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's limits; None = unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    tokens_per_day: int | None = None
    max_concurrency: int | None = None

    @property
    def any(self) -> bool:
        return (self.rpm, self.tpm, self.tokens_per_day, self.max_concurrency) != (None, None, None, None)


@dataclass(slots=True)
class _Counts:
    minute: int = -1
    requests: int = 0  # in the current minute
    tokens: int = 0  # in the current minute
    day: int = -1
    day_tokens: int = 0
    in_flight: int = 0

    def roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self.minute:
            self.minute, self.requests, self.tokens = minute, 0, 0
        day = int(now // _DAY_S)
        if day != self.day:
            self.day, self.day_tokens = day, 0


def reset_text(seconds: float) -> str:
    """A duration as OpenAI writes x-ratelimit-reset-*: '1s', '6m0s', '2h3m4s'."""
    whole = max(1, math.ceil(seconds))
    text = _RESET_TEXT.get(whole)
    if text is None:
        hours, rest = divmod(whole, 3600)
        minutes, secs = divmod(rest, 60)
        text = f"{hours}h{minutes}m{secs}s" if hours else (f"{minutes}m{secs}s" if minutes else f"{secs}s")
        if len(_RESET_TEXT) < 100_000:
            _RESET_TEXT[whole] = text  # at most one entry per second of a day: formatted once, not per request
    return text


_RESET_TEXT: dict[int, str] = {}


class Limiter:
    """Counts requests, tokens and requests in flight per key id; one per gateway process."""

    def __init__(self) -> None:
        self._counts: dict[str, _Counts] = {}

    def acquire(self, key_id: str, limits: Limits, now: float) -> dict[str, str]:
        """Admit one request of `key_id` (counted, in flight) and return its x-ratelimit-* headers.

        Raises RateLimited (with the same headers and Retry-After) when a limit is reached; nothing is counted then.
        """
        counts = self._counts.get(key_id)
        if counts is None:
            counts = self._counts[key_id] = _Counts()
        counts.roll(now)
        minute_left_s = 60 - now % 60
        if limits.rpm is not None and counts.requests >= limits.rpm:
            raise self._over(f"requests per minute ({limits.rpm})", "requests", limits, counts, minute_left_s, now)
        if limits.tpm is not None and counts.tokens >= limits.tpm:
            raise self._over(f"tokens per minute ({limits.tpm})", "tokens", limits, counts, minute_left_s, now)
        if limits.tokens_per_day is not None and counts.day_tokens >= limits.tokens_per_day:
            day_left_s = _DAY_S - now % _DAY_S
            raise self._over(f"tokens per day ({limits.tokens_per_day})", "tokens", limits, counts, day_left_s, now)
        if limits.max_concurrency is not None and counts.in_flight >= limits.max_concurrency:
            raise self._over(f"concurrent requests ({limits.max_concurrency})", "requests", limits, counts, 1, now)
        counts.requests += 1
        counts.in_flight += 1
        return _headers(limits, counts, now) if limits.any else {}

    def release(self, key_id: str, tokens: int, now: float) -> None:
        """The request ended: it is no longer in flight and its tokens count against the key's windows."""
        counts = self._counts.get(key_id)
        if counts is None:
            return
        counts.in_flight = max(0, counts.in_flight - 1)
        counts.roll(now)
        counts.tokens += tokens
        counts.day_tokens += tokens

    def note_day_tokens(self, totals: dict[str, int], now: float) -> None:
        """Tokens used today per key according to the store (every gateway sharing it): a key's day count
        never goes below them, so a restart or a second gateway does not reset a daily budget."""
        for key_id, tokens in totals.items():
            counts = self._counts.get(key_id)
            if counts is None:
                counts = self._counts[key_id] = _Counts()
            counts.roll(now)
            counts.day_tokens = max(counts.day_tokens, tokens)

    def in_flight(self, key_id: str) -> int:
        counts = self._counts.get(key_id)
        return counts.in_flight if counts is not None else 0

    def _over(self, what: str, kind: str, limits: Limits, counts: _Counts, retry_s: float, now: float) -> RateLimited:
        headers = _headers(limits, counts, now)
        headers["Retry-After"] = str(max(1, math.ceil(retry_s)))
        return RateLimited(f"rate limit reached for this API key: {what}; retry after {headers['Retry-After']} s",
                           kind=kind, headers=headers)


def _headers(limits: Limits, counts: _Counts, now: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits a key has (requests: rpm; tokens: tpm, else per day)."""
    headers: dict[str, str] = {}
    minute_reset = reset_text(60 - now % 60)
    if limits.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(limits.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - counts.requests))
        headers["x-ratelimit-reset-requests"] = minute_reset
    if limits.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - counts.tokens))
        headers["x-ratelimit-reset-tokens"] = minute_reset
    elif limits.tokens_per_day is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.tokens_per_day)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tokens_per_day - counts.day_tokens))
        headers["x-ratelimit-reset-tokens"] = reset_text(_DAY_S - now % _DAY_S)
    if limits.max_concurrency is not None:
        headers["x-gpufleet-concurrency-limit"] = str(limits.max_concurrency)
    return headers
