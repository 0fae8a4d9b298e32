"""The stored-Responses SQLite file: kept, expired, bounded, deleted."""

from __future__ import annotations

from pathlib import Path

from gpufleet.gateway.response_store import ResponseStore


def test_store_keeps_expires_bounds_and_deletes(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.sqlite3", ttl_s=3600, max_items=3)
    store.put("resp_1", {"id": "resp_1"}, [{"role": "user", "content": "hi"}])
    assert store.get("resp_1") == ({"id": "resp_1"}, [{"role": "user", "content": "hi"}])
    assert store.get("resp_unknown") is None
    for index in range(2, 102):  # the 101st write prunes to the newest max_items
        store.put(f"resp_{index}", {"id": index}, [])
    assert store.get("resp_1") is None and store.get("resp_101") is not None
    assert store.delete("resp_101") and not store.delete("resp_101")
    store.close()
    expired = ResponseStore(tmp_path / "r.sqlite3", ttl_s=0)
    assert expired.get("resp_100") is None  # older than the TTL: never served
    expired.close()
