"""The store: team keys and the usage ledger on SQLite AND on a real PostgreSQL; batches, outages, restarts.

PostgreSQL is Debian's `postgresql` package started in a temporary directory (tests/pg_server.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gpufleet.errors import StoreError
from gpufleet.limits import Limits
from gpufleet.store import KeyRecord, SqlStore, StoreSnapshot, UsageRow, UsageWriter, new_secret, open_store
from tests.pg_server import PgServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer().start()
    yield server
    server.remove()


def fresh_pg_database(server: PgServer) -> str:
    """A new empty database on the shared server: tests never see each other's rows."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite3"
    return fresh_pg_database(request.getfixturevalue("pg_server"))


def row(
    key: str = "k1",
    name: str = "alice",
    model: str = "qwen",
    *,
    ts: float | None = None,
    prompt: int = 3,
    completion: int = 4,
    status: int = 200,
) -> UsageRow:
    return UsageRow(
        ts=time.time() if ts is None else ts,
        key_id=key,
        key_name=name,
        endpoint="chat",
        model_asked=model,
        model_served=model,
        route=model,
        target=model,
        status=status,
        prompt_tokens=prompt,
        completion_tokens=completion,
        reasoning_tokens=1,
        ttft_s=0.05,
        duration_s=0.2,
    )


def test_keys_are_stored_hashed_and_come_back_with_their_limits(database_url: str) -> None:
    store = open_store(database_url)
    secret = new_secret()
    record = KeyRecord.create(
        name="alice",
        secret=secret,
        models=("qwen*", "embed"),
        limits=Limits(rpm=5, tpm=100, tokens_per_day=1000, max_concurrency=2),
        expires_in_s=3600,
    )
    store.add_key(record)
    [loaded] = store.key_records()
    assert loaded == record
    assert secret not in repr(loaded) and loaded.key_hash != secret and len(loaded.key_hash) == 64
    with pytest.raises(StoreError, match="live key named 'alice' exists"):
        store.add_key(KeyRecord.create(name="alice", secret=new_secret()))
    revoked = store.revoke("alice", time.time())
    assert revoked.state(time.time()) == "revoked"
    store.add_key(KeyRecord.create(name="alice", secret=new_secret()))  # the name is free again
    assert [r.state(time.time()) for r in store.key_records()] == ["revoked", "active"]
    with pytest.raises(StoreError, match="no live key named 'bob'"):
        store.revoke("bob", time.time())
    store.close()


def test_usage_is_grouped_by_key_model_and_day_and_old_rows_are_purged(database_url: str) -> None:
    store = open_store(database_url)
    now = time.time()
    store.insert_usage(
        [
            row(),
            row(),
            row(model="embed", prompt=10, completion=0),
            row("k2", "bob", status=429, prompt=0, completion=0),
            row(ts=now - 10 * 86400),
        ]
    )  # outside --since 7d
    by_key_model = store.usage(now - 7 * 86400, ["key", "model"])
    assert by_key_model == [
        {
            "key": "alice",
            "model": "embed",
            "requests": 1,
            "errors": 0,
            "prompt_tokens": 10,
            "completion_tokens": 0,
            "reasoning_tokens": 1,
            "mean_ttft_s": 0.05,
        },
        {
            "key": "alice",
            "model": "qwen",
            "requests": 2,
            "errors": 0,
            "prompt_tokens": 6,
            "completion_tokens": 8,
            "reasoning_tokens": 2,
            "mean_ttft_s": 0.05,
        },
        {
            "key": "bob",
            "model": "qwen",
            "requests": 1,
            "errors": 1,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "reasoning_tokens": 1,
            "mean_ttft_s": 0.05,
        },
    ]
    [total] = store.usage(0, [])
    assert total["requests"] == 5
    days = store.usage(0, ["day"])
    assert len(days) == 2 and all(len(d["day"]) == 10 for d in days)
    assert store.tokens_since(now - 3600) == {"k1": 24, "k2": 0}
    assert store.purge(now - 7 * 86400) == 1
    assert store.usage(0, [])[0]["requests"] == 4
    assert store.usage(now + 60, ["key"]) == []
    store.close()


async def test_writer_batches_rows_and_flushes_everything_on_close(database_url: str) -> None:
    store = open_store(database_url)
    seen: list[StoreSnapshot] = []
    writer = UsageWriter(store, on_refresh=seen.append, flush_interval_s=3600)  # only close() flushes
    await writer.start()
    assert writer.up and seen and seen[0].keys == []
    for _ in range(250):
        writer.record(row())
    assert writer.pending == 250
    await writer.close()
    reopened = open_store(database_url)
    assert reopened.usage(0, [])[0]["requests"] == 250
    reopened.close()


async def test_outage_keeps_rows_queued_and_writes_them_when_postgres_is_back() -> None:
    server = PgServer().start()
    try:
        store = open_store(server.url)
        writer = UsageWriter(store, on_refresh=lambda snapshot: None, flush_interval_s=3600)
        await writer.start()
        writer.record(row())
        await writer.flush()
        assert writer.up and writer.written == 1
        server.stop()
        writer.record(row())
        writer.record(row())
        await writer.flush()
        status = writer.status()
        assert status["up"] is False and status["pending_rows"] == 2
        assert "postgresql store at postgresql://***@127.0.0.1" in status["last_error"]
        server.start()
        await writer.flush()
        assert writer.up and writer.pending == 0 and writer.written == 3
        await writer.close()
        check = open_store(server.url)
        assert check.usage(0, [])[0]["requests"] == 3
        check.close()
    finally:
        server.remove()


async def test_a_long_outage_keeps_memory_bounded_and_counts_dropped_rows(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database's folder should be")
    store = open_store(f"sqlite:///{blocker}/store.sqlite3")
    writer = UsageWriter(store, on_refresh=lambda snapshot: None, flush_interval_s=3600, max_pending=10)
    await writer.start()
    assert not writer.up
    for _ in range(25):
        writer.record(row())
    await writer.flush()
    assert writer.pending == 10 and writer.dropped == 15
    await writer.close()


def test_store_errors_name_the_database_but_never_its_password() -> None:
    store = open_store("postgresql://bob:hunter2@127.0.0.1:9/db")
    assert isinstance(store, SqlStore)
    with pytest.raises(StoreError) as info:
        store.ping()
    assert "hunter2" not in str(info.value) and "postgresql://***@127.0.0.1:9/db" in str(info.value)


async def test_writer_rounds_run_in_the_background(database_url: str) -> None:
    store = open_store(database_url)
    writer = UsageWriter(store, on_refresh=lambda snapshot: None, flush_interval_s=0.05)
    await writer.start()
    writer.record(row())
    for _ in range(200):
        if writer.written:
            break
        await asyncio.sleep(0.05)
    assert writer.written == 1 and writer.pending == 0
    await writer.close()
