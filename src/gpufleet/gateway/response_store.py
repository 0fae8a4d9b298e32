"""Stored Responses (`store: true`): bounded, expiring, in an embedded SQLite file under the cache dir.

Each row keeps the response object (for `GET /v1/responses/{id}`) and the conversation in chat form up to
and including that answer (for `previous_response_id`). Rows older than `ttl_s` are not served and are
deleted; beyond `max_items` the oldest go first. A response with `store: false` is never written.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from gpufleet.paths import cache_root

DEFAULT_TTL_S = 7 * 24 * 3600
DEFAULT_MAX_ITEMS = 10_000


class ResponseStore:
    """`put(id, response, messages)`, `get(id)`, `delete(id)`; thread-safe, one connection."""

    def __init__(
        self, path: Path | None = None, *, ttl_s: float = DEFAULT_TTL_S, max_items: int = DEFAULT_MAX_ITEMS
    ) -> None:
        self.path = path or cache_root() / "responses.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.max_items = max_items
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, created REAL NOT NULL, "
            "response BLOB NOT NULL, messages BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS responses_created ON responses (created)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "owner" not in columns:  # a store written before responses had owners: theirs is nobody's
            self._db.execute("ALTER TABLE responses ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        self._writes = 0

    def put(
        self, response_id: str, response: dict[str, Any], messages: list[dict[str, Any]], *, owner: str = ""
    ) -> None:
        """Keep a response for the caller named `owner` (the key's name): only they (or an admin) read it back."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (id, created, response, messages, owner) VALUES (?, ?, ?, ?, ?)",
                (response_id, time.time(), orjson.dumps(response), orjson.dumps(messages), owner),
            )
            self._writes += 1
            if self._writes % 100 == 1:
                self._prune()

    def _prune(self) -> None:
        self._db.execute("DELETE FROM responses WHERE created < ?", (time.time() - self.ttl_s,))
        self._db.execute(
            "DELETE FROM responses WHERE id NOT IN (SELECT id FROM responses ORDER BY created DESC LIMIT ?)",
            (self.max_items,),
        )

    def get(self, response_id: str, *, owner: str | None = "") -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """(response object, chat messages) of a stored, unexpired response of `owner` (None: anyone's), else None.

        Another caller's response is "not found", not "forbidden": its id must not tell that it exists."""
        with self._lock:
            row = self._db.execute(
                "SELECT created, response, messages, owner FROM responses WHERE id = ?", (response_id,)
            ).fetchone()
        if row is None or row[0] < time.time() - self.ttl_s or (owner is not None and row[3] != owner):
            return None
        return orjson.loads(row[1]), orjson.loads(row[2])

    def delete(self, response_id: str, *, owner: str | None = "") -> bool:
        with self._lock:
            if owner is None:
                return self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0
            return (
                self._db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner)).rowcount > 0
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
