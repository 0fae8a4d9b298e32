"""Team keys through the gateway: models, every limit (429 + x-ratelimit-*, nothing reaches the engine), the
ledger rows, and an attacker's view (revoked, expired, forged keys; keys never in logs, /status or /metrics).

Upstream is the STAND-IN server (tests/standin_upstream.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from gpufleet.gateway.state import Gateway
from gpufleet.limits import Limits
from gpufleet.store import KeyRecord, new_secret, open_store
from tests.standin_upstream import StandInUpstream

ADMIN = "admin-static-key-0123456789"


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandInUpstream]:
    server = StandInUpstream().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def within_one_minute_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits count per UTC minute (fixed windows, as OpenAI's reset headers): a test that crossed a minute boundary
    would see its counts reset half-way. The gateway's wall clock is set back so that each test starts one second
    into a minute (instead of sleeping until the next one: up to 20 s a test)."""
    real_time = time.time
    offset_s = real_time() % 60 - 1
    monkeypatch.setattr(time, "time", lambda: real_time() - offset_s)


def reset_seconds(text: str) -> int:
    """Seconds in an x-ratelimit-reset-* value as OpenAI writes it: '1s', '6m0s', '2h3m4s'."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(\d+)s", text)
    assert match is not None, text
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.sqlite3"


def make_key(
    db: str, name: str = "alice", *, models: tuple[str, ...] = (), expires_in_s: float | None = None, **limits: int
) -> str:
    secret = new_secret()
    store = open_store(db)
    store.add_key(
        KeyRecord.create(name=name, secret=secret, models=models, limits=Limits(**limits), expires_in_s=expires_in_s)
    )
    store.close()
    return secret


@asynccontextmanager
async def gateway(
    upstream: StandInUpstream, db: str, **server: Any
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    upstream.behaviour, upstream.delay_s = "ok", 0.0
    config = parse_config(
        {
            "server": {"database_url": db, **server},
            "models": {
                "qwen": {"engine": "remote", "url": upstream.url, "aliases": ["gpt-4o"]},
                "other": {"engine": "remote", "url": upstream.url},
            },
            "personas": {"clerk": {"route": "qwen", "system_prompt": "You file things."}},
        }
    )
    app = build_app(config)
    transport = httpx.ASGITransport(app=app)
    async with running(app) as gw, httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield gw, http


def chat(model: str = "qwen", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_requests_per_minute_over_the_limit_get_429_with_openai_headers_and_never_reach_the_engine(
    upstream: StandInUpstream, db: str
) -> None:
    key = make_key(db, rpm=2)
    async with gateway(upstream, db) as (_, http):
        first = await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status_code == 200
        reached = len(upstream.received)
        refused = await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert "requests per minute (2)" in error["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
        # Every endpoint counts against the same key.
        embed = await http.post("/v1/embeddings", json={"model": "qwen", "input": "x"}, headers=bearer(key))
        assert embed.status_code == 429
        assert len(upstream.received) == reached


async def test_tokens_per_minute_and_per_day_stop_a_key_once_spent(upstream: StandInUpstream, db: str) -> None:
    per_minute = make_key(db, "minute", tpm=5)
    per_day = make_key(db, "day", tokens_per_day=5)
    async with gateway(upstream, db) as (_, http):
        for key, window_s in ((per_minute, 60), (per_day, 86_400)):
            ok = await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
            assert ok.status_code == 200  # 7 tokens: admitted under the limit, counted when it ended
            reached = len(upstream.received)
            refused = await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
            assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
            assert refused.headers["x-ratelimit-limit-tokens"] == "5"
            assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
            # The window is the current UTC minute or day: the reset is the time to its end (minutes and seconds
            # only, in the last hour of a UTC day).
            until_end = window_s - time.time() % window_s
            assert abs(reset_seconds(refused.headers["x-ratelimit-reset-tokens"]) - until_end) <= 5
            assert len(upstream.received) == reached
        # A stream's tokens count too (from its usage chunk, which the gateway always asks for).
        stream_key = make_key(db, "streamer", tpm=5)
        await asyncio.sleep(0)  # keys made after start are seen at the next refresh
        gw_refresh = http._transport.app.state.gateway.admission.writer  # type: ignore[attr-defined]
        await gw_refresh.refresh_now()
        ok = await http.post("/v1/chat/completions", json=chat(stream=True), headers=bearer(stream_key))
        assert ok.status_code == 200 and "[DONE]" in ok.text
        assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(stream_key))).status_code == 429


async def test_concurrency_limit_refuses_the_extra_request_and_frees_the_slot_after(
    upstream: StandInUpstream, db: str
) -> None:
    key = make_key(db, max_concurrency=1)
    async with gateway(upstream, db) as (_, http):
        upstream.delay_s = 0.5
        before = len(upstream.received)
        slow = asyncio.ensure_future(http.post("/v1/chat/completions", json=chat(), headers=bearer(key)))
        while len(upstream.received) == before:  # the first request is at the engine, in flight
            await asyncio.sleep(0.01)
        reached = len(upstream.received)
        refused = await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
        assert refused.status_code == 429 and "concurrent requests (1)" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "1"
        assert len(upstream.received) == reached
        assert (await slow).status_code == 200
        upstream.delay_s = 0.0
        assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status_code == 200


async def test_a_key_sees_and_uses_only_its_models(upstream: StandInUpstream, db: str) -> None:
    key = make_key(db, models=("qwen",))
    async with gateway(upstream, db) as (_, http):
        listed = {m["id"] for m in (await http.get("/v1/models", headers=bearer(key))).json()["data"]}
        assert listed == {"qwen", "gpt-4o", "clerk"}  # the model, its alias and a persona on it; not `other`
        assert (await http.post("/v1/chat/completions", json=chat("gpt-4o"), headers=bearer(key))).status_code == 200
        reached = len(upstream.received)
        forbidden = await http.post("/v1/chat/completions", json=chat("other"), headers=bearer(key))
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "model_not_allowed"
        assert len(upstream.received) == reached
        # The static admin key still sees everything.
    async with gateway(upstream, db, api_keys=[ADMIN]) as (_, http):
        listed = {m["id"] for m in (await http.get("/v1/models", headers=bearer(ADMIN))).json()["data"]}
        assert {"qwen", "other"} <= listed


async def test_revoked_expired_and_forged_keys_get_401(upstream: StandInUpstream, db: str) -> None:
    live = make_key(db, "live")
    revoked = make_key(db, "gone")
    expired = make_key(db, "old", expires_in_s=1)
    async with gateway(upstream, db) as (gw, http):
        assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(revoked))).status_code == 200
        store = open_store(db)
        store.revoke("gone", time.time())
        store.close()
        await gw.admission.writer.refresh_now()
        time.sleep(1.05)  # `old` expires
        reached = len(upstream.received)
        for key, code in (
            (revoked, "api_key_revoked"),
            (expired, "api_key_expired"),
            (live[:-1] + ("A" if live[-1] != "A" else "B"), "invalid_api_key"),
            ("gfk-" + "x" * 43, "invalid_api_key"),
        ):
            answer = await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
            assert answer.status_code == 401 and answer.json()["error"]["code"] == code, key
        no_key = await http.post("/v1/chat/completions", json=chat())
        assert no_key.status_code == 401  # team keys exist: the gateway is closed without static keys too
        assert len(upstream.received) == reached
        # A team key is never an admin key.
        admin = await http.post("/admin/models/qwen/stop", headers=bearer(live))
        assert admin.status_code == 403 and admin.json()["error"]["code"] == "admin_requires_admin_key"


async def test_revoking_the_last_key_does_not_reopen_the_gateway(upstream: StandInUpstream, db: str) -> None:
    make_key(db, "only")
    async with gateway(upstream, db) as (gw, http):
        store = open_store(db)
        store.revoke("only", time.time())
        store.close()
        await gw.admission.writer.refresh_now()
        assert (await http.post("/v1/chat/completions", json=chat())).status_code == 401


async def test_team_key_on_an_admin_keyed_gateway_cannot_use_admin_endpoints(
    upstream: StandInUpstream, db: str
) -> None:
    key = make_key(db)
    async with gateway(upstream, db, api_keys=[ADMIN]) as (_, http):
        assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status_code == 200
        refused = await http.post("/admin/models/qwen/stop", headers=bearer(key))
        assert refused.status_code == 403


async def test_ledger_rows_record_key_model_route_target_tokens_and_ttft(upstream: StandInUpstream, db: str) -> None:
    key = make_key(db, rpm=3)
    async with gateway(upstream, db, api_keys=[ADMIN]) as (_, http):
        await http.post("/v1/chat/completions", json=chat("gpt-4o"), headers=bearer(key))
        await http.post("/v1/chat/completions", json=chat(stream=True), headers=bearer(key))
        await http.post("/v1/chat/completions", json=chat("other"), headers=bearer(ADMIN))
        await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
        await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))  # 429
    store = open_store(db)  # the gateway's shutdown flushed every row
    rows = store.usage(0, ["key", "model", "served", "status"])
    store.close()
    assert rows == [
        {
            "key": "admin",
            "model": "other",
            "served": "other",
            "status": 200,
            "requests": 1,
            "errors": 0,
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "reasoning_tokens": 0,
            "mean_ttft_s": None,
        },
        {
            "key": "alice",
            "model": "gpt-4o",
            "served": "qwen",
            "status": 200,
            "requests": 1,
            "errors": 0,
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "reasoning_tokens": 0,
            "mean_ttft_s": None,
        },
        {
            "key": "alice",
            "model": "qwen",
            "served": "",
            "status": 429,
            "requests": 1,
            "errors": 1,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "reasoning_tokens": 0,
            "mean_ttft_s": None,
        },
        {
            "key": "alice",
            "model": "qwen",
            "served": "qwen",
            "status": 200,
            "requests": 2,
            "errors": 0,
            "prompt_tokens": 6,
            "completion_tokens": 9,
            "reasoning_tokens": 0,
            "mean_ttft_s": rows[3]["mean_ttft_s"],
        },
    ]
    assert rows[3]["mean_ttft_s"] is not None and rows[3]["mean_ttft_s"] >= 0  # the stream's


async def test_keys_never_appear_in_logs_status_or_metrics(
    upstream: StandInUpstream, db: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = make_key(db, rpm=1)
    forged = "gfk-" + "f" * 43
    caplog.set_level(logging.DEBUG)
    async with gateway(upstream, db, api_keys=[ADMIN], metrics_per_key=True) as (_, http):
        await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
        await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
        await http.post("/v1/chat/completions", json=chat(), headers=bearer(forged))
        status = (await http.get("/status", headers=bearer(ADMIN))).text
        metrics = (await http.get("/metrics")).text
    store_status = httpx.Response(200, text=status).json()["store"]
    assert store_status["up"] is True and store_status["team_keys"] == 1
    assert 'gpufleet_key_requests_total{key="alice",status="429"} 1.0' in metrics
    assert 'gpufleet_rate_limited_total{limit="requests"} 1.0' in metrics
    assert 'gpufleet_store_up{backend="sqlite"} 1.0' in metrics
    for text in (status, metrics, caplog.text):
        for secret in (key, forged, ADMIN, key[4:20]):
            assert secret not in text


async def test_per_key_metric_labels_are_bounded(upstream: StandInUpstream, db: str) -> None:
    from gpufleet.gateway import admission as admission_module

    async with gateway(upstream, db, metrics_per_key=True) as (gw, http):
        store = open_store(db)
        keys = []
        for i in range(admission_module.MAX_KEY_LABELS + 5):
            secret = new_secret()
            store.add_key(KeyRecord.create(name=f"k{i}", secret=secret))
            keys.append(secret)
        store.close()
        await gw.admission.writer.refresh_now()
        for secret in keys:
            assert (
                await http.post("/v1/embeddings", json={"model": "qwen", "input": "x"}, headers=bearer(secret))
            ).status_code == 200
        metrics = (await http.get("/metrics")).text
    names = {
        line.split('key="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("gpufleet_key_requests_total{")
    }
    assert len(names) == admission_module.MAX_KEY_LABELS + 1 and "other" in names


async def test_a_store_down_at_startup_keeps_admin_keys_serving_and_refuses_requests_without_a_key(
    upstream: StandInUpstream, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the database's folder should be")
    async with gateway(upstream, f"sqlite:///{blocker}/db.sqlite3", api_keys=[ADMIN]) as (gw, http):
        assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(ADMIN))).status_code == 200
        status = (await http.get("/status", headers=bearer(ADMIN))).json()["store"]
        metrics = (await http.get("/metrics")).text
        assert status["up"] is False and "sqlite store at" in status["last_error"]
        assert 'gpufleet_store_up{backend="sqlite"} 0.0' in metrics
        # The configured store may hold team keys we cannot read: no key is no entry, even without static keys.
        gw.keys._keys = []
        assert (await http.post("/v1/chat/completions", json=chat())).status_code == 401


async def test_postgres_going_down_mid_run_keeps_serving_with_limits_in_memory(upstream: StandInUpstream) -> None:
    from tests.pg_server import PgServer

    server = PgServer().start()
    try:
        key = make_key(server.url, rpm=3)
        async with gateway(upstream, server.url, api_keys=[ADMIN]) as (gw, http):
            assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status_code == 200
            server.stop()
            await gw.admission.writer.flush()
            await gw.admission.writer.refresh_now()
            assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status_code == 200
            assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status_code == 200
            refused = await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
            assert refused.status_code == 429  # the limit still holds, counted in memory
            await gw.admission.writer.flush()
            status = (await http.get("/status", headers=bearer(ADMIN))).json()["store"]
            assert status["up"] is False and status["pending_rows"] == 4 and status["backend"] == "postgresql"
            assert 'gpufleet_store_up{backend="postgresql"} 0.0' in (await http.get("/metrics")).text
            server.start()
            await gw.admission.writer.flush()
            assert (await http.get("/status", headers=bearer(ADMIN))).json()["store"]["up"] is True
        store = open_store(server.url)
        assert store.usage(0, [])[0]["requests"] == 4  # nothing lost across the outage
        store.close()
    finally:
        server.remove()


async def test_admin_usage_endpoint_answers_admins_only(upstream: StandInUpstream, db: str) -> None:
    key = make_key(db)
    async with gateway(upstream, db, api_keys=[ADMIN]) as (_, http):
        await http.post("/v1/chat/completions", json=chat(), headers=bearer(key))
        answer = await http.get("/admin/usage", params={"since": "1d", "by": "key,model"}, headers=bearer(ADMIN))
        assert answer.status_code == 200
        rows = answer.json()["rows"]
        assert [(r["key"], r["model"], r["requests"]) for r in rows] == [("alice", "qwen", 1)]
        assert (await http.get("/admin/usage", headers=bearer(key))).status_code == 403
        assert (await http.get("/admin/usage")).status_code == 401
        bad = await http.get("/admin/usage", params={"by": "key_hash"}, headers=bearer(ADMIN))
        assert bad.status_code == 400 and "cannot group by 'key_hash'" in bad.json()["error"]["message"]
        bad = await http.get("/admin/usage", params={"since": "forever"}, headers=bearer(ADMIN))
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"


async def test_persona_chat_counts_against_the_key_and_its_models(upstream: StandInUpstream, db: str) -> None:
    limited = make_key(db, "limited", rpm=1)
    other_only = make_key(db, "other-only", models=("other",))
    async with gateway(upstream, db) as (_, http):
        upstream.reply = "filed"
        first = await http.post("/chat", json={"message": "file this"}, headers=bearer(limited))
        assert first.status_code == 200 and first.json()["reply"] == "filed"
        reached = len(upstream.received)
        second = await http.post("/chat", json={"message": "file this"}, headers=bearer(limited))
        assert second.status_code == 429 and second.headers["x-ratelimit-remaining-requests"] == "0"
        forbidden = await http.post("/chat", json={"message": "file this"}, headers=bearer(other_only))
        assert forbidden.status_code == 403
        assert len(upstream.received) == reached
        upstream.reply = None


async def test_admins_make_list_and_revoke_keys_over_http_and_team_keys_cannot(
    upstream: StandInUpstream, db: str
) -> None:
    async with gateway(upstream, db, api_keys=[ADMIN]) as (_, http):
        made = await http.post(
            "/admin/keys", json={"name": "carol", "models": ["qwen"], "rpm": 1, "expires": "1d"}, headers=bearer(ADMIN)
        )
        assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
        secret = made.json()["key"]
        assert made.json()["rpm"] == 1 and "key_hash" not in made.json()
        # Usable at once on this gateway, with its limits.
        assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(secret))).status_code == 200
        assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(secret))).status_code == 429
        listed = (await http.get("/admin/keys", headers=bearer(ADMIN))).json()["keys"]
        assert [(k["name"], k["state"], k["hint"]) for k in listed] == [("carol", "active", secret[-4:])]
        assert secret not in str(listed) and "key_hash" not in listed[0]
        # A team key may not see, make or revoke keys.
        assert (await http.get("/admin/keys", headers=bearer(secret))).status_code == 403
        assert (await http.post("/admin/keys", json={"name": "mallory"}, headers=bearer(secret))).status_code == 403
        assert (await http.post("/admin/keys/carol/revoke", headers=bearer(secret))).status_code == 403
        taken = await http.post("/admin/keys", json={"name": "carol"}, headers=bearer(ADMIN))
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "key_name_taken"
        for bad, param in (
            ({"name": "x", "rpm": 0}, "rpm"),
            ({"name": "bad name"}, "name"),
            ({"name": "x", "expires": "soon"}, "expires"),
            ({"name": "x", "admin": True}, "admin"),
        ):
            answer = await http.post("/admin/keys", json=bad, headers=bearer(ADMIN))
            assert answer.status_code == 400 and answer.json()["error"]["param"] == param, bad
        revoked = await http.post("/admin/keys/carol/revoke", headers=bearer(ADMIN))
        assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
        assert (await http.post("/v1/chat/completions", json=chat(), headers=bearer(secret))).status_code == 401
        assert (await http.post("/admin/keys/carol/revoke", headers=bearer(ADMIN))).status_code == 404


async def test_agent_endpoints_count_against_the_key_and_answer_429_in_their_own_shape(
    upstream: StandInUpstream, db: str
) -> None:
    key = make_key(db, rpm=2, models=("qwen",))
    async with gateway(upstream, db) as (_, http):
        messages = {"model": "qwen", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        ok = await http.post("/v1/messages", json=messages, headers={"x-api-key": key})
        assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-requests"] == "1"
        responses = {"model": "qwen", "input": "hi", "store": False}
        assert (await http.post("/v1/responses", json=responses, headers=bearer(key))).status_code == 200
        reached = len(upstream.received)
        refused = await http.post("/v1/messages", json=messages, headers={"x-api-key": key})
        assert refused.status_code == 429 and refused.json()["type"] == "error"  # Anthropic's error shape
        assert refused.headers["retry-after"] and refused.headers["x-ratelimit-remaining-requests"] == "0"
        refused = await http.post("/v1/responses", json=responses, headers=bearer(key))
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        other = await http.post("/v1/messages", json={**messages, "model": "other"}, headers={"x-api-key": key})
        assert other.status_code == 403
        assert len(upstream.received) == reached
    store = open_store(db)
    endpoints = {r["endpoint"]: r["requests"] for r in store.usage(0, ["endpoint"])}
    store.close()
    assert endpoints == {"messages": 3, "responses": 2}


async def test_a_team_key_cannot_read_status_or_another_keys_stored_responses(
    upstream: StandInUpstream, db: str
) -> None:
    alice, bob = make_key(db, "alice"), make_key(db, "bob")
    async with gateway(upstream, db, api_keys=[ADMIN]) as (_, http):
        refused = await http.get("/status", headers=bearer(alice))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "status_requires_admin_key"
        assert (await http.get("/status", headers=bearer(ADMIN))).status_code == 200
        made = await http.post("/v1/responses", json={"model": "qwen", "input": "hi"}, headers=bearer(alice))
        assert made.status_code == 200, made.text
        response_id = made.json()["id"]
        assert (await http.get(f"/v1/responses/{response_id}", headers=bearer(alice))).status_code == 200
        assert (await http.get(f"/v1/responses/{response_id}", headers=bearer(ADMIN))).status_code == 200
        # Bob cannot read it, continue from it, or delete it; to him it does not exist.
        assert (await http.get(f"/v1/responses/{response_id}", headers=bearer(bob))).status_code == 404
        follow = {"model": "qwen", "input": "more", "previous_response_id": response_id}
        assert (await http.post("/v1/responses", json=follow, headers=bearer(bob))).status_code == 404
        assert (await http.delete(f"/v1/responses/{response_id}", headers=bearer(bob))).status_code == 404
        assert (await http.get(f"/v1/responses/{response_id}", headers=bearer(alice))).status_code == 200
