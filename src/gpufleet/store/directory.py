"""The gateway's in-memory view of the team keys: hash → record, refreshed from the store.

A presented key is hashed (SHA-256) and looked up by its hash. The lookup time depends only on the hash,
which an attacker cannot steer toward a stored one (that would be a preimage), and the record found is
confirmed with a constant-time compare.
"""

from __future__ import annotations

import hmac

from gpufleet.store.keys import KeyRecord, hash_secret


class KeyDirectory:
    """Team keys by hash. `enabled` stays True once any key was seen, so revoking the last key never reopens
    a gateway to requests without a key."""

    def __init__(self, *, required: bool = False) -> None:
        self._by_hash: dict[str, KeyRecord] = {}
        self._by_id: dict[str, KeyRecord] = {}
        self.enabled = required

    def replace(self, records: list[KeyRecord]) -> None:
        """Swap in the store's current keys (one assignment each: a request in flight sees old or new)."""
        self._by_hash = {record.key_hash: record for record in records}
        self._by_id = {record.id: record for record in records}
        if records:
            self.enabled = True

    def find(self, secret: str) -> KeyRecord | None:
        """The record of a presented key (any state), or None."""
        digest = hash_secret(secret)
        record = self._by_hash.get(digest)
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            return None
        return record

    def by_id(self, key_id: str) -> KeyRecord | None:
        return self._by_id.get(key_id)

    def __len__(self) -> int:
        return len(self._by_hash)
