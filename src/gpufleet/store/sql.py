"""The store's one SQL implementation, for SQLite (embedded, WAL) and PostgreSQL (psycopg 3).

The SQL is written once, in the subset both speak; only the placeholder (`?` / `%s`) and the day expression
differ. Every call takes a lock and opens the connection on demand: after a failure the connection is
dropped and the next call reconnects, so a database that comes back is used again without a restart.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gpufleet.errors import ConfigError, StoreError
from gpufleet.limits import Limits
from gpufleet.paths import store_path
from gpufleet.redact import redact_url
from gpufleet.store.keys import KeyRecord
from gpufleet.store.ledger import COLUMNS, GROUPABLE, UsageRow

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gpufleet_keys (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE, hint TEXT NOT NULL,
        models TEXT NOT NULL, rpm BIGINT, tpm BIGINT, tokens_per_day BIGINT, max_concurrency BIGINT,
        created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION, revoked_at DOUBLE PRECISION)""",
    # A name names one live key; a revoked key keeps its name in the ledger and frees it for a new key.
    "CREATE UNIQUE INDEX IF NOT EXISTS gpufleet_keys_live_name ON gpufleet_keys (name) WHERE revoked_at IS NULL",
    """CREATE TABLE IF NOT EXISTS gpufleet_usage (
        ts DOUBLE PRECISION NOT NULL, key_id TEXT NOT NULL, key_name TEXT NOT NULL, endpoint TEXT NOT NULL,
        model_asked TEXT NOT NULL, model_served TEXT NOT NULL, route TEXT NOT NULL, tier TEXT NOT NULL,
        target TEXT NOT NULL, status INTEGER NOT NULL, prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL, reasoning_tokens BIGINT NOT NULL, ttft_s DOUBLE PRECISION,
        duration_s DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS gpufleet_usage_ts ON gpufleet_usage (ts)",
)
_KEY_COLUMNS = (
    "id",
    "name",
    "key_hash",
    "hint",
    "models",
    "rpm",
    "tpm",
    "tokens_per_day",
    "max_concurrency",
    "created_at",
    "expires_at",
    "revoked_at",
)
_GROUP_SQL = {
    "key": "key_name",
    "model": "model_asked",
    "served": "model_served",
    "endpoint": "endpoint",
    "route": "route",
    "tier": "tier",
    "target": "target",
    "status": "status",
}
_DAY_SQL = {
    "sqlite": "date(ts, 'unixepoch')",
    "postgresql": "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


class SqlStore:
    """Keys and usage rows in one database. Thread-safe (one lock); blocking: the gateway calls it off its loop."""

    def __init__(self, dialect: str, connect: Callable[[], Any], where: str) -> None:
        self.dialect = dialect  # "sqlite" or "postgresql"
        self.where = where  # the database, for messages and /status (credentials redacted)
        self._connect = connect
        self._conn: Any = None
        self._lock = threading.Lock()
        self._ph = "?" if dialect == "sqlite" else "%s"

    def _run(self, work: Callable[[Any], Any]) -> Any:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                    self._schema(self._conn)
                result = work(self._conn)
                self._conn.commit()
                return result
            except StoreError:
                self._rollback()
                raise
            except Exception as err:  # sqlite3.Error, psycopg.Error, OSError: all mean "the store failed"
                self._drop()
                raise StoreError(f"{self.dialect} store at {self.where}: {_first_line(err)}") from None

    def _schema(self, conn: Any) -> None:
        cur = conn.cursor()
        for statement in _SCHEMA:
            cur.execute(statement)
        conn.commit()

    def _rollback(self) -> None:
        try:
            self._conn.rollback()
        except Exception:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do with it
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        self._run(lambda conn: conn.cursor().execute("SELECT 1").fetchone())

    # --- keys -----------------------------------------------------------------------------------------------
    def add_key(self, record: KeyRecord) -> None:
        def work(conn: Any) -> None:
            cur = conn.cursor()
            cur.execute(f"SELECT 1 FROM gpufleet_keys WHERE name = {self._ph} AND revoked_at IS NULL", (record.name,))
            if cur.fetchone() is not None:
                raise StoreError(f"a live key named {record.name!r} exists; revoke it first or pick another name")
            marks = ", ".join([self._ph] * len(_KEY_COLUMNS))
            cur.execute(f"INSERT INTO gpufleet_keys ({', '.join(_KEY_COLUMNS)}) VALUES ({marks})", _key_values(record))

        self._run(work)

    def key_records(self) -> list[KeyRecord]:
        def work(conn: Any) -> list[KeyRecord]:
            cur = conn.cursor()
            cur.execute(f"SELECT {', '.join(_KEY_COLUMNS)} FROM gpufleet_keys ORDER BY created_at")
            return [_key_record(row) for row in cur.fetchall()]

        result: list[KeyRecord] = self._run(work)
        return result

    def revoke(self, name: str, now: float) -> KeyRecord:
        """Revoke the live key named `name` (or whose id is `name`); StoreError when there is none."""

        def work(conn: Any) -> KeyRecord:
            cur = conn.cursor()
            cur.execute(
                f"SELECT {', '.join(_KEY_COLUMNS)} FROM gpufleet_keys WHERE (name = {self._ph} OR id = "
                f"{self._ph}) AND revoked_at IS NULL",
                (name, name),
            )
            row = cur.fetchone()
            if row is None:
                raise StoreError(f"no live key named {name!r} (see 'gpufleet keys list')")
            cur.execute(f"UPDATE gpufleet_keys SET revoked_at = {self._ph} WHERE id = {self._ph}", (now, row[0]))
            return _key_record((*row[:-1], now))

        record: KeyRecord = self._run(work)
        return record

    # --- usage ----------------------------------------------------------------------------------------------
    def insert_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        marks = ", ".join([self._ph] * len(COLUMNS))
        sql = f"INSERT INTO gpufleet_usage ({', '.join(COLUMNS)}) VALUES ({marks})"
        self._run(lambda conn: conn.cursor().executemany(sql, [row.values() for row in rows]))

    def tokens_since(self, since: float) -> dict[str, int]:
        """Prompt + completion tokens per key id since `since` (today's budget, across every gateway)."""
        sql = (
            f"SELECT key_id, SUM(prompt_tokens + completion_tokens) FROM gpufleet_usage WHERE ts >= {self._ph} "
            "GROUP BY key_id"
        )
        rows = self._run(lambda conn: _fetch(conn, sql, (since,)))
        return {str(key_id): int(total or 0) for key_id, total in rows}

    def usage(self, since: float, by: Iterable[str]) -> list[dict[str, Any]]:
        """Totals per group since `since`: requests, errors, tokens, mean TTFT."""
        groups = []
        for name in by:
            if name not in GROUPABLE:
                raise ConfigError(f"cannot group by {name!r}; choose from {', '.join(GROUPABLE)}", key_path="--by")
            groups.append((name, _DAY_SQL[self.dialect] if name == "day" else _GROUP_SQL[name]))
        select = [f"{expr} AS {name}_" for name, expr in groups]
        select += [
            "COUNT(*)",
            "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)",
            "SUM(prompt_tokens)",
            "SUM(completion_tokens)",
            "SUM(reasoning_tokens)",
            "AVG(ttft_s)",
        ]
        sql = f"SELECT {', '.join(select)} FROM gpufleet_usage WHERE ts >= {self._ph}"
        if groups:
            keys = ", ".join(f"{name}_" for name, _ in groups)
            sql += f" GROUP BY {keys} ORDER BY {keys}"
        rows = self._run(lambda conn: _fetch(conn, sql, (since,)))
        out = []
        for row in rows:
            item: dict[str, Any] = {name: row[i] for i, (name, _) in enumerate(groups)}
            requests, errors, prompt, completion, reasoning, ttft = row[len(groups) :]
            if not requests:
                continue  # an empty window without GROUP BY still gives one row of NULLs
            item.update(
                requests=int(requests),
                errors=int(errors or 0),
                prompt_tokens=int(prompt or 0),
                completion_tokens=int(completion or 0),
                reasoning_tokens=int(reasoning or 0),
                mean_ttft_s=None if ttft is None else round(float(ttft), 4),
            )
            out.append(item)
        return out

    def purge(self, before: float) -> int:
        """Delete usage rows older than `before` (server.usage_retention_days); the number deleted."""

        def work(conn: Any) -> int:
            cur = conn.cursor()
            cur.execute(f"DELETE FROM gpufleet_usage WHERE ts < {self._ph}", (before,))
            return int(cur.rowcount or 0)

        deleted: int = self._run(work)
        return deleted


def _fetch(conn: Any, sql: str, params: tuple[Any, ...]) -> list[Any]:
    cur = conn.cursor()
    cur.execute(sql, params)
    return list(cur.fetchall())


def _key_values(record: KeyRecord) -> tuple[Any, ...]:
    lim = record.limits
    return (
        record.id,
        record.name,
        record.key_hash,
        record.hint,
        ",".join(record.models),
        lim.rpm,
        lim.tpm,
        lim.tokens_per_day,
        lim.max_concurrency,
        record.created_at,
        record.expires_at,
        record.revoked_at,
    )


def _key_record(row: Sequence[Any]) -> KeyRecord:
    (id_, name, key_hash, hint, models, rpm, tpm, per_day, concurrency, created, expires, revoked) = row
    return KeyRecord(
        id=id_,
        name=name,
        key_hash=key_hash,
        hint=hint,
        models=tuple(m for m in models.split(",") if m),
        limits=Limits(rpm=rpm, tpm=tpm, tokens_per_day=per_day, max_concurrency=concurrency),
        created_at=created,
        expires_at=expires,
        revoked_at=revoked,
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def open_store(database_url: str | None) -> SqlStore:
    """The store `server.database_url` names: SQLite under the cache dir when None. Connects lazily."""
    if database_url is None or database_url.startswith("sqlite:///"):
        path = store_path() if database_url is None else Path(database_url.removeprefix("sqlite:///")).expanduser()
        return SqlStore("sqlite", lambda: _sqlite(path), str(path))
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "a postgresql:// database_url needs psycopg: pip install 'gpufleet[postgres]'",
            key_path="server.database_url",
        ) from None
    url = database_url.replace("postgres://", "postgresql://", 1)
    return SqlStore("postgresql", lambda: psycopg.connect(url, connect_timeout=3), redact_url(url))


def _sqlite(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=5, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")  # readers (gpufleet keys usage) never block the gateway's writes
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed batch survives a process crash
    return conn
