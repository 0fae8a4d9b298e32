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
    # The window ends, so that rolling costs one float compare until the minute changes (hot path).
    minute_end: float = -1.0
    day_end: float = -1.0
    # The key's limits as header text, formatted once per Limits object rather than per request.
    limits: Limits | None = None
    fixed_headers: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None)

    def roll(self, now: float) -> None:
        if now < self.minute_end and now < self.day_end:
            return
        minute = int(now // 60)
        if minute != self.minute:
            self.minute, self.requests, self.tokens = minute, 0, 0
            self.minute_end = (minute + 1) * 60.0
        day = int(now // _DAY_S)
        if day != self.day:
            self.day, self.day_tokens = day, 0
            self.day_end = (day + 1) * float(_DAY_S)

    def texts(self, limits: Limits) -> tuple[str | None, str | None, str | None, str | None]:
        """str() of rpm, tpm, tokens_per_day and max_concurrency (None where unlimited), cached per Limits."""
        if limits is not self.limits:
            self.limits = limits
            self.fixed_headers = tuple(  # type: ignore[assignment]
                None if value is None else str(value)
                for value in (limits.rpm, limits.tpm, limits.tokens_per_day, limits.max_concurrency)
            )
        return self.fixed_headers


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
_UNLIMITED = (None, None, None, None)


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
        minute_left_s = counts.minute_end - now
        if limits.rpm is not None and counts.requests >= limits.rpm:
            raise self._over(f"requests per minute ({limits.rpm})", "requests", limits, counts, minute_left_s, now)
        if limits.tpm is not None and counts.tokens >= limits.tpm:
            raise self._over(f"tokens per minute ({limits.tpm})", "tokens", limits, counts, minute_left_s, now)
        if limits.tokens_per_day is not None and counts.day_tokens >= limits.tokens_per_day:
            day_left_s = counts.day_end - now
            raise self._over(f"tokens per day ({limits.tokens_per_day})", "tokens", limits, counts, day_left_s, now)
        if limits.max_concurrency is not None and counts.in_flight >= limits.max_concurrency:
            raise self._over(f"concurrent requests ({limits.max_concurrency})", "requests", limits, counts, 1, now)
        counts.requests += 1
        counts.in_flight += 1
        return _headers(limits, counts, now) if counts.texts(limits) != _UNLIMITED else {}

    def release(self, key_id: str, tokens: int, now: float) -> None:
        """The request ended: it is no longer in flight and its tokens count against the key's windows."""
        counts = self._counts.get(key_id)
        if counts is None:
            return
        if counts.in_flight > 0:
            counts.in_flight -= 1
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
        return RateLimited(
            f"rate limit reached for this API key: {what}; retry after {headers['Retry-After']} s",
            kind=kind,
            headers=headers,
        )


def _headers(limits: Limits, counts: _Counts, now: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits a key has (requests: rpm; tokens: tpm, else per day)."""
    headers: dict[str, str] = {}
    rpm_text, tpm_text, day_text, concurrency_text = counts.texts(limits)
    minute_reset = reset_text(counts.minute_end - now)
    if rpm_text is not None:
        headers["x-ratelimit-limit-requests"] = rpm_text
        remaining = limits.rpm - counts.requests  # type: ignore[operator]  # rpm is set when rpm_text is
        headers["x-ratelimit-remaining-requests"] = str(remaining) if remaining > 0 else "0"
        headers["x-ratelimit-reset-requests"] = minute_reset
    if tpm_text is not None:
        headers["x-ratelimit-limit-tokens"] = tpm_text
        remaining = limits.tpm - counts.tokens  # type: ignore[operator]
        headers["x-ratelimit-remaining-tokens"] = str(remaining) if remaining > 0 else "0"
        headers["x-ratelimit-reset-tokens"] = minute_reset
    elif day_text is not None:
        headers["x-ratelimit-limit-tokens"] = day_text
        remaining = limits.tokens_per_day - counts.day_tokens  # type: ignore[operator]
        headers["x-ratelimit-remaining-tokens"] = str(remaining) if remaining > 0 else "0"
        headers["x-ratelimit-reset-tokens"] = reset_text(counts.day_end - now)
    if concurrency_text is not None:
        headers["x-gpufleet-concurrency-limit"] = concurrency_text
    return headers
