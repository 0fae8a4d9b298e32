"""What the Anthropic Messages and OpenAI Responses translation adds over the chat path, side by side.

One run starts ``fixed_upstream.py`` (canned chat answers, instant) and one gpufleet gateway with an
``engine: remote`` model pointed at it, then sends sequential requests (concurrency 1), interleaving
``/v1/chat/completions``, ``/v1/messages`` and ``/v1/responses`` with the same conversation, so machine
noise hits all three alike. It prints the p50/p90 latency of each, non-stream and stream (time to the last
byte), and the added p50 of each protocol over chat (target <= 0.3 ms).

Usage::

    .venv/bin/python benchmarks/agent_protocol_overhead.py                # 2000 requests per kind
    .venv/bin/python benchmarks/agent_protocol_overhead.py --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from harness import BENCH_DIR, free_port, gpufleet_exe, machine_line, start_service, wait_ready

SYSTEM = "You are a coding agent. " * 20
QUESTION = "List the files in the current directory and tell me which is largest."


def bodies(model: str, stream: bool) -> dict[str, tuple[str, dict[str, object]]]:
    chat = {"model": model, "stream": stream, "max_tokens": 256,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]}
    messages = {"model": model, "stream": stream, "max_tokens": 256, "system": SYSTEM,
                "messages": [{"role": "user", "content": QUESTION}]}
    responses = {"model": model, "stream": stream, "max_output_tokens": 256, "store": False,
                 "instructions": SYSTEM, "input": QUESTION}
    return {"chat": ("/v1/chat/completions", chat), "messages": ("/v1/messages", messages),
            "responses": ("/v1/responses", responses)}


async def measure(base: str, requests: int, stream: bool) -> dict[str, list[float]]:
    kinds = bodies("bench", stream)
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    async with aiohttp.ClientSession() as session:
        for _ in range(50):  # warm-up: connections, imports, caches
            for path, body in kinds.values():
                async with session.post(base + path, json=body) as response:
                    await response.read()
        order = list(kinds)
        for _ in range(requests):
            random.shuffle(order)
            for kind in order:
                path, body = kinds[kind]
                started = time.perf_counter()
                async with session.post(base + path, json=body) as response:
                    await response.read()
                    assert response.status == 200, await response.text()
                timings[kind].append((time.perf_counter() - started) * 1000)
    return timings


def report(label: str, timings: dict[str, list[float]]) -> None:
    chat_p50 = statistics.median(timings["chat"])
    print(f"\n{label}")
    for kind, values in timings.items():
        p50 = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        added = "" if kind == "chat" else f"   added p50 over chat: {p50 - chat_p50:+.3f} ms"
        print(f"  {kind:10s} p50 {p50:7.3f} ms   p90 {p90:7.3f} ms{added}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per kind and mode")
    args = parser.parse_args()
    up_port, gw_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        config = log_dir / "gpufleet.yaml"
        config.write_text(f"server: {{port: {gw_port}}}\nmodels:\n  bench:\n    engine: remote\n"
                          f"    url: http://127.0.0.1:{up_port}/v1\n    upstream_model: Qwen/Qwen3-8B\n")
        upstream = start_service("upstream", [sys.executable, str(BENCH_DIR / "fixed_upstream.py"), "--port",
                                              str(up_port)], log_dir, None)
        gateway = start_service("gpufleet", [str(gpufleet_exe()), "serve", "--config", str(config)], log_dir, None)
        try:
            wait_ready(upstream, f"http://127.0.0.1:{up_port}/health", 30)
            wait_ready(gateway, f"http://127.0.0.1:{gw_port}/health", 60)
            print(machine_line())
            base = f"http://127.0.0.1:{gw_port}"
            for stream in (False, True):
                timings = asyncio.run(measure(base, args.requests, stream))
                report(f"{'stream' if stream else 'non-stream'}, concurrency 1, {args.requests} requests each:",
                       timings)
        finally:
            gateway.stop()
            upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
