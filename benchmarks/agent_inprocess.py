"""The gateway app called in-process as ASGI (no server, no HTTP client) for chat, Messages and Responses.

The same bodies as ``agent_protocol_overhead.py``, one ``engine: remote`` model on ``fixed_upstream.py`` (a
subprocess; its CPU is not counted). Without ``--only`` it prints this process's CPU time per request of
each kind (blocks of ``--block`` requests, kinds shuffled), which leaves out the server and client but not
the neighbours on a shared machine. With ``--only KIND`` it just serves ``--requests`` requests of that kind
after the warm-up, for an instruction count that the neighbours do not move at all::

    for kind in chat responses; do
      PYTHONPATH=src valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/agent_inprocess.py --stream --only $kind --requests 200
    done   # (Collected[responses] - Collected[chat]) / 200 = instructions the translation adds per request

Usage::

    .venv/bin/python benchmarks/agent_inprocess.py --stream --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from agent_protocol_overhead import bodies
from harness import BENCH_DIR, free_port, start_service, wait_ready

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running

WARM_UP = 30  # requests of every kind before anything is counted


async def call(app: Any, path: str, body: bytes) -> int:
    """One POST through the app; its status (the body is read and dropped)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never  # the client stays connected (the watcher is cancelled when the response ends)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def serve(args: argparse.Namespace, upstream_url: str) -> None:
    config = parse_config(
        {"models": {"bench": {"engine": "remote", "url": upstream_url, "upstream_model": "Qwen/Qwen3-8B"}}}
    )
    app = build_app(config)
    kinds = {kind: (path, orjson.dumps(body)) for kind, (path, body) in bodies("bench", args.stream).items()}
    async with running(app):
        for path, body in kinds.values():
            for _ in range(WARM_UP):
                status = await call(app, path, body)
                if status != 200:
                    raise SystemExit(f"{path} answered {status}")
        if args.only is not None:
            path, body = kinds[args.only]
            for _ in range(args.requests):
                await call(app, path, body)
            return
        cpu_s = dict.fromkeys(kinds, 0.0)
        order = list(kinds)
        blocks = max(1, args.requests // args.block)
        for _ in range(blocks):
            random.shuffle(order)
            for kind in order:
                path, body = kinds[kind]
                started = time.process_time()
                for _ in range(args.block):
                    await call(app, path, body)
                cpu_s[kind] += time.process_time() - started
        per_request = {kind: cpu / (blocks * args.block) * 1e6 for kind, cpu in cpu_s.items()}
        mode = "stream" if args.stream else "non-stream"
        print(f"{mode}, in-process CPU µs per request ({blocks * args.block} each):")
        for kind, cpu in per_request.items():
            added = "" if kind == "chat" else f"   added over chat {cpu - per_request['chat']:+.1f}"
            print(f"  {kind:10s} {cpu:8.1f}{added}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", action="store_true", help="stream requests (default: non-stream)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per kind")
    parser.add_argument("--block", type=int, default=50, help="requests of one kind per CPU reading")
    parser.add_argument("--only", choices=["chat", "messages", "responses"], help="serve just this kind, print nothing")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        upstream = start_service(
            "upstream", [sys.executable, str(BENCH_DIR / "fixed_upstream.py"), "--port", str(port)], Path(tmp), None
        )
        try:
            wait_ready(upstream, f"http://127.0.0.1:{port}/health", 30)
            asyncio.run(serve(args, f"http://127.0.0.1:{port}/v1"))
        finally:
            upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
