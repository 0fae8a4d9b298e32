"""What must outlive a process: team API keys (hashed), their limits, and the usage ledger.

store = open_store(config.server.database_url)        # SQLite under the cache dir, or PostgreSQL
writer = UsageWriter(store, on_refresh=...)           # batches ledger rows off the request path
"""

from gpufleet.store.directory import KeyDirectory
from gpufleet.store.keys import KEY_PREFIX, KeyRecord, hash_secret, new_secret, parse_duration
from gpufleet.store.ledger import COLUMNS, GROUPABLE, UsageRow
from gpufleet.store.sql import SqlStore, open_store
from gpufleet.store.writer import StoreSnapshot, UsageWriter

__all__ = [
    "COLUMNS",
    "GROUPABLE",
    "KEY_PREFIX",
    "KeyDirectory",
    "KeyRecord",
    "SqlStore",
    "StoreSnapshot",
    "UsageRow",
    "UsageWriter",
    "hash_secret",
    "new_secret",
    "open_store",
    "parse_duration",
]
