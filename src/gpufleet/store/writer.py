"""Writes usage rows in batches off the request path, and keeps the gateway's view of the keys fresh.

`record(row)` only appends to a list. One background task, every `flush_interval_s`, hands the batch to
the store on a thread of its own, and every `refresh_s` reloads the keys (made or revoked by `gpufleet keys`,
or by another gateway) and today's token totals. When the store fails, the rows stay queued (at most
`max_pending`; older ones are dropped and counted), `up` turns False, and the next round tries again:
requests go on being served with the limits in memory. `close()` writes what is queued (SIGTERM: the
gateway's lifespan shutdown calls it after the last request ended), so no answered row is lost on a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from gpufleet.errors import StoreError
from gpufleet.store.keys import KeyRecord
from gpufleet.store.ledger import UsageRow
from gpufleet.store.sql import SqlStore

log = logging.getLogger("gpufleet.store")
T = TypeVar("T")
_DAY_S = 86400


@dataclass
class StoreSnapshot:
    """What the store gave at its last refresh."""

    keys: list[KeyRecord]
    day_tokens: dict[str, int]


class UsageWriter:
    """The gateway's connection to its store: queued ledger rows, periodic key refresh, health."""

    def __init__(
        self,
        store: SqlStore,
        *,
        on_refresh: Callable[[StoreSnapshot], None],
        retention_days: int = 90,
        flush_interval_s: float = 0.5,
        refresh_s: float = 5.0,
        max_pending: int = 100_000,
    ) -> None:
        self.store = store
        self._on_refresh = on_refresh
        self._retention_s = retention_days * _DAY_S
        self.flush_interval_s = flush_interval_s
        self.refresh_s = refresh_s
        self.max_pending = max_pending
        self._pending: list[UsageRow] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpufleet-store")
        self._task: asyncio.Task[None] | None = None
        self.up = False
        self.last_error: str | None = None
        self.written = 0
        self.dropped = 0
        self._last_refresh = 0.0
        self._last_purge = 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, row: UsageRow) -> None:
        """Queue one row (hot path: a list append)."""
        self._pending.append(row)

    async def start(self) -> None:
        """Load keys once (so the first request already knows them), then run the background rounds."""
        await self._refresh()
        self._task = asyncio.create_task(self._loop(), name="gpufleet-store-writer")

    async def close(self) -> None:
        """Stop the rounds and write every queued row (one last try); then release the database."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self._pending:
            log.error(
                "store %s: %d usage rows could not be written at shutdown: %s",
                self.store.where,
                len(self._pending),
                self.last_error,
            )
        await self._call(self.store.close)
        self._executor.shutdown(wait=True)

    async def flush(self) -> None:
        """Write the queued rows now."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self._call(self.store.insert_usage, batch)
        except StoreError as err:
            self._pending = batch + self._pending
            overflow = len(self._pending) - self.max_pending
            if overflow > 0:
                del self._pending[:overflow]  # keep the newest: memory must stay bounded during a long outage
                self.dropped += overflow
            self._down(err)
            return
        self.written += len(batch)
        self._up()

    async def query(self, since: float, by: list[str]) -> list[dict[str, Any]]:
        """`SqlStore.usage` on the store's thread (StoreError when it is down)."""
        return await self._call(self.store.usage, since, by)

    async def refresh_now(self) -> None:
        """Reload keys and today's token totals now (tests; `refresh_s` does it otherwise)."""
        await self._refresh()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()
            now = time.time()
            if now - self._last_refresh >= self.refresh_s:
                await self._refresh()
            if self.up and now - self._last_purge >= 3600:
                self._last_purge = now
                try:
                    deleted = await self._call(self.store.purge, now - self._retention_s)
                except StoreError as err:
                    self._down(err)
                else:
                    if deleted:
                        log.info("store: purged %d usage rows older than the retention", deleted)

    async def _refresh(self) -> None:
        now = time.time()
        self._last_refresh = now
        try:
            keys = await self._call(self.store.key_records)
            # Summing today's ledger scans every row since midnight (a busy gateway's ledger grows by thousands a
            # second): only a key with a daily token budget needs it (a profile put 8% of the CPU here, issue 22).
            day_tokens: dict[str, int] = {}
            if any(key.limits.tokens_per_day is not None for key in keys):
                day_tokens = await self._call(self.store.tokens_since, now - now % _DAY_S)
        except StoreError as err:
            self._down(err)
            return
        self._up()
        self._on_refresh(StoreSnapshot(keys, day_tokens))

    def _down(self, err: StoreError) -> None:
        if self.up or self.last_error is None:
            log.warning(
                "store down (serving on with the limits in memory; %d usage rows queued): %s", len(self._pending), err
            )
        self.up = False
        self.last_error = err.message

    def _up(self) -> None:
        if not self.up and self.last_error is not None:
            log.warning("store %s is back; %d usage rows queued", self.store.where, len(self._pending))
        self.up = True

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store method on the store's own thread (never on the event loop)."""
        return await self._call(fn, *args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def status(self) -> dict[str, Any]:
        """For /status: backend, up, queued rows (never a credential: `where` is redacted)."""
        return {
            "backend": self.store.dialect,
            "database": self.store.where,
            "up": self.up,
            "pending_rows": len(self._pending),
            "written_rows": self.written,
            "dropped_rows": self.dropped,
            "last_error": None if self.up else self.last_error,
        }
