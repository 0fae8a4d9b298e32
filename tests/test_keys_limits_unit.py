"""The pure parts of team keys: limit counters, reset texts, durations, model patterns, the key directory."""

from __future__ import annotations

import hmac

import pytest

from gpufleet.errors import ConfigError, RateLimited
from gpufleet.gateway.auth import KeyCheck
from gpufleet.limits import Limiter, Limits, reset_text
from gpufleet.store import KeyDirectory, KeyRecord, hash_secret, new_secret, parse_duration

REAL_COMPARE = hmac.compare_digest  # the spies below wrap it (they patch the shared hmac module)
T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.2, "1s"), (59.5, "1m0s"), (61, "1m1s"), (3600, "1h0m0s"), (86399, "23h59m59s")]
)
def test_reset_text_is_openai_style(seconds: float, text: str) -> None:
    assert reset_text(seconds) == text


def test_requests_per_minute_reset_at_the_next_minute() -> None:
    limiter = Limiter()
    limits = Limits(rpm=2)
    assert limiter.acquire("k", limits, T0)["x-ratelimit-remaining-requests"] == "1"
    limiter.acquire("k", limits, T0 + 1)
    with pytest.raises(RateLimited) as info:
        limiter.acquire("k", limits, T0 + 50)
    assert info.value.headers["Retry-After"] == "10" and info.value.headers["x-ratelimit-reset-requests"] == "10s"
    assert limiter.acquire("k", limits, T0 + 60)["x-ratelimit-remaining-requests"] == "1"


def test_a_refused_request_is_not_counted_and_release_frees_concurrency() -> None:
    limiter = Limiter()
    limits = Limits(max_concurrency=1, rpm=10)
    limiter.acquire("k", limits, T0)
    with pytest.raises(RateLimited):
        limiter.acquire("k", limits, T0)
    assert limiter.in_flight("k") == 1
    limiter.release("k", tokens=0, now=T0)
    assert limiter.acquire("k", limits, T0)["x-ratelimit-remaining-requests"] == "8"  # the 429 did not count


def test_tokens_count_when_a_request_ends_and_the_store_total_raises_the_day_count() -> None:
    limiter = Limiter()
    limits = Limits(tpm=100, tokens_per_day=1000)
    limiter.acquire("k", limits, T0)
    limiter.release("k", tokens=150, now=T0)
    with pytest.raises(RateLimited, match=r"tokens per minute \(100\)"):
        limiter.acquire("k", limits, T0 + 1)
    limiter.note_day_tokens({"k": 990, "other": 5}, T0 + 61)
    headers = limiter.acquire("k", limits, T0 + 61)  # a new minute: under tpm; the day has 990 of 1000
    limiter.release("k", tokens=20, now=T0 + 62)
    assert headers["x-ratelimit-remaining-tokens"] == "100"
    with pytest.raises(RateLimited, match=r"tokens per day \(1000\)") as info:
        limiter.acquire("k", limits, T0 + 121)
    assert int(info.value.headers["Retry-After"]) > 3600
    limiter.note_day_tokens({"k": 3}, T0 + 122)  # a lower store total never lowers what this gateway counted
    with pytest.raises(RateLimited):
        limiter.acquire("k", limits, T0 + 122)


def test_a_key_without_limits_gets_no_headers() -> None:
    assert Limiter().acquire("k", Limits(), T0) == {}


@pytest.mark.parametrize(
    ("text", "seconds"), [("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2592000), ("2w", 1209600)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, option="--expires") == seconds


@pytest.mark.parametrize("text", ["", "0d", "3y", "-1d", "1.5h", "d"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--expires"):
        parse_duration(text, option="--expires")


def test_model_patterns_match_any_of_the_names() -> None:
    record = KeyRecord.create(name="a", secret=new_secret(), models=("qwen*", "embed"))
    assert record.allows("qwen3-32b") and record.allows("gpt-4o", "qwen3-32b") and record.allows("embed")
    assert not record.allows("embedder") and not record.allows("other", "mistral")
    assert KeyRecord.create(name="b", secret=new_secret()).allows("anything")


def test_keys_are_found_by_hash_and_confirmed_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = new_secret()
    record = KeyRecord.create(name="a", secret=secret)
    directory = KeyDirectory()
    directory.replace([record])
    compared: list[tuple[str, str]] = []

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return REAL_COMPARE(a, b)

    monkeypatch.setattr("gpufleet.store.directory.hmac.compare_digest", spy)
    assert directory.find(secret) is record
    assert compared == [(record.key_hash, hash_secret(secret))]
    assert directory.find(secret + "x") is None and directory.find("") is None


def test_static_keys_are_all_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return REAL_COMPARE(a, b)

    check = KeyCheck(["first-key-aaaa", "second-key-bbb", "third-key-cccc"])
    monkeypatch.setattr("gpufleet.gateway.auth.hmac.compare_digest", spy)
    assert check.check("Bearer first-key-aaaa").admin
    assert len(calls) == 3  # no early exit on the first match


def test_new_limits_for_a_key_show_in_its_headers_at_once() -> None:
    # The limits' header texts are formatted once per Limits object (hot path); a key replaced by the store
    # with other limits must not keep the old texts.
    limiter = Limiter()
    first = limiter.acquire("k", Limits(rpm=10, tpm=1000, max_concurrency=2), T0)
    assert (first["x-ratelimit-limit-requests"], first["x-ratelimit-limit-tokens"]) == ("10", "1000")
    second = limiter.acquire("k", Limits(rpm=5, tokens_per_day=70), T0 + 1)
    assert second["x-ratelimit-limit-requests"] == "5" and second["x-ratelimit-remaining-requests"] == "3"
    assert second["x-ratelimit-limit-tokens"] == "70" and "x-gpufleet-concurrency-limit" not in second
    assert limiter.acquire("k", Limits(), T0 + 2) == {}


def test_windows_roll_exactly_at_the_minute_and_the_day_boundaries() -> None:
    limiter = Limiter()
    limits = Limits(rpm=1, tokens_per_day=10)
    day_end = (T0 // 86400 + 1) * 86400
    limiter.acquire("k", limits, day_end - 60.5)
    limiter.release("k", tokens=10, now=day_end - 60.4)
    with pytest.raises(RateLimited) as info:  # the day's tokens are spent
        limiter.acquire("k", limits, day_end - 0.001)
    assert info.value.headers["x-ratelimit-reset-tokens"] == "1s"
    headers = limiter.acquire("k", limits, day_end)  # a new minute and a new day: both windows start over
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-remaining-tokens"] == "10"
    assert headers["x-ratelimit-reset-requests"] == "1m0s" and headers["x-ratelimit-reset-tokens"] == "24h0m0s"


def test_a_team_keys_principal_follows_the_stores_current_record() -> None:
    # KeyCheck keeps one Principal per key (hot path); a refresh that replaces or revokes the key must show.
    import dataclasses

    from gpufleet.errors import AuthError

    secret = new_secret()
    record = KeyRecord.create(name="alice", secret=secret, models=("qwen*",))
    directory = KeyDirectory()
    directory.replace([record])
    check = KeyCheck([], directory=directory)
    first = check.check(f"Bearer {secret}")
    assert first.key is record and check.check(f"Bearer {secret}") is first
    narrowed = dataclasses.replace(record, models=("smol*",))
    directory.replace([narrowed])
    assert check.check(f"Bearer {secret}").key is narrowed
    directory.replace([dataclasses.replace(record, revoked_at=T0)])
    with pytest.raises(AuthError, match="revoked"):
        check.check(f"Bearer {secret}")
