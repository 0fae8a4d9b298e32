"""Cost of team keys + limits + the usage ledger per request, on the gateway's hot path, in-process.

Times what the request path adds for a key: `KeyCheck.check` (hash + lookup), `Admission.admit` (models,
four limits), and `Ticket.served/usage/close` (release, ledger row queued). Compared with a gateway
without keys and with a static admin key. Also times the off-path batch write (µs per row, SQLite).
The budget is ~20 µs per request (issue 25). Timed as CPU time of this process (`time.process_time`):
on a shared machine, other processes' load stretches wall time far more than the CPU time a request costs.

Usage::

    .venv/bin/python benchmarks/keys_overhead.py            # ~10 s
    .venv/bin/python benchmarks/keys_overhead.py --calls 50000 --repeat 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from gpufleet.config import parse_config
from gpufleet.gateway.app import Gateway
from gpufleet.limits import Limits
from gpufleet.store import KeyRecord, UsageRow, new_secret, open_store


def build(db: str, api_keys: list[str]) -> Gateway:
    config = parse_config(
        {
            "server": {"database_url": db, "api_keys": api_keys},
            "models": {"qwen": {"engine": "remote", "url": "http://127.0.0.1:9/v1"}},
        }
    )
    return Gateway(config)


def per_request_us(gateway: Gateway, header: str | None, calls: int) -> float:
    keys, admission = gateway.keys, gateway.admission
    names = ("qwen", "qwen")
    started = time.process_time()
    for _ in range(calls):
        principal = keys.check(header)
        ticket = admission.admit(principal, "qwen", names, "chat")
        ticket.served(route="qwen", tier=None, target="qwen", model="qwen")
        ticket.usage(3, 4, 0, None)
        ticket.close(200)
    elapsed = time.process_time() - started
    admission.writer._pending.clear()  # nothing is written here: only the queueing is timed
    return elapsed / calls * 1e6


async def flush_us_per_row(db: str, rows: int) -> float:
    store = open_store(db)
    batch = [
        UsageRow(time.time(), "k", "alice", "chat", "qwen", "qwen", "qwen", "", "qwen", 200, 3, 4, 0, 0.05, 0.2)
        for _ in range(rows)
    ]
    store.insert_usage(batch[:10])  # connect + schema outside the timing
    started = time.perf_counter()
    store.insert_usage(batch)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpufleet-keys-bench-"))
    db = f"sqlite:///{tmp}/store.sqlite3"
    secret = new_secret()
    limits = Limits(rpm=10**9, tpm=10**12, tokens_per_day=10**12, max_concurrency=10**6)
    store = open_store(db)
    store.add_key(KeyRecord.create(name="alice", secret=secret, models=("qwen*",), limits=limits))
    store.close()
    admin = "admin-" + "k" * 40
    open_gateway = build(f"sqlite:///{tmp}/empty.sqlite3", [])
    keyed = build(db, [admin])
    asyncio.run(keyed.admission.writer.refresh_now())  # load the team key as startup does
    cases = {
        "no keys": (open_gateway, None),
        "static admin key": (keyed, f"Bearer {admin}"),
        "team key, 4 limits + models": (keyed, f"Bearer {secret}"),
    }
    print(f"{args.repeat} x {args.calls} calls each; median CPU µs per request (check + admit + close)")
    for label, (gateway, header) in cases.items():
        per_request_us(gateway, header, 1000)  # warm-up
        samples = [per_request_us(gateway, header, args.calls) for _ in range(args.repeat)]
        print(f"  {label:30s} {statistics.median(samples):6.2f} µs  (min {min(samples):.2f}, max {max(samples):.2f})")
    flush = asyncio.run(flush_us_per_row(db, 10000))
    print(f"  off the request path: SQLite batch insert {flush:.2f} µs per row (10,000 rows)")


if __name__ == "__main__":
    main()
