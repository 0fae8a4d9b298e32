"""What the Anthropic Messages and OpenAI Responses translation adds over the chat path, side by side.

One run starts ``fixed_upstream.py`` (canned chat answers, instant) and one gpufleet gateway with an
``engine: remote`` model pointed at it, then sends sequential requests (concurrency 1), interleaving
``/v1/chat/completions``, ``/v1/messages`` and ``/v1/responses`` with the same conversation, so machine
noise hits all three alike. It prints the p50/p90 latency of each, non-stream and stream (time to the last
byte), and the added p50 of each protocol over chat (target <= 0.3 ms). On a busy machine wall-clock
latency mostly measures the other tenants, so it also prints the gateway process's CPU time per request
(utime+stime from /proc/<pid>/stat, read around blocks of ``--block`` requests of one kind, the blocks'
kinds shuffled), which the neighbours do not inflate as much.

``--baseline-src DIR`` also starts a second gateway serving another checkout's ``src/`` (say main's, from
``git worktree add``) on the same upstream (``--baseline REV`` exports this repository's ``src/`` at git
revision REV instead, as ``gateway_overhead.py --baseline`` does); the blocks of both gateways are shuffled
together, so each protocol's added time and CPU is printed for this checkout and the baseline measured side
by side.

Usage::

    .venv/bin/python benchmarks/agent_protocol_overhead.py                # 2000 requests per kind
    .venv/bin/python benchmarks/agent_protocol_overhead.py --requests 500
    .venv/bin/python benchmarks/agent_protocol_overhead.py --baseline-src /tmp/main-src/src
    .venv/bin/python benchmarks/agent_protocol_overhead.py --baseline 66e40d2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from harness import (
    BENCH_DIR,
    Service,
    export_source,
    free_port,
    gpufleet_exe,
    machine_line,
    start_service,
    wait_ready,
)

SYSTEM = "You are a coding agent. " * 20
QUESTION = "List the files in the current directory and tell me which is largest."


def bodies(model: str, stream: bool) -> dict[str, tuple[str, dict[str, object]]]:
    chat = {
        "model": model,
        "stream": stream,
        "max_tokens": 256,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
    }
    messages = {
        "model": model,
        "stream": stream,
        "max_tokens": 256,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    responses = {
        "model": model,
        "stream": stream,
        "max_output_tokens": 256,
        "store": False,
        "instructions": SYSTEM,
        "input": QUESTION,
    }
    return {
        "chat": ("/v1/chat/completions", chat),
        "messages": ("/v1/messages", messages),
        "responses": ("/v1/responses", responses),
    }


def cpu_s(pid: int) -> float:
    """utime + stime of process `pid` so far, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timings:
    """Per kind: wall-clock latency of each request (ms) and the gateway's CPU time (s) over how many requests."""

    wall_ms: dict[str, list[float]]
    cpu_s: dict[str, float]
    cpu_requests: dict[str, int]


@dataclass(frozen=True)
class Gateway:
    """One gateway under test: its label, base URL and process id (for its CPU time)."""

    label: str
    base: str
    pid: int


async def measure(gateways: list[Gateway], requests: int, block: int, stream: bool) -> dict[str, Timings]:
    """Blocks of `block` requests of one kind on one gateway, every (gateway, kind) pair's blocks shuffled."""
    kinds = bodies("bench", stream)
    timings = {
        g.label: Timings({kind: [] for kind in kinds}, dict.fromkeys(kinds, 0.0), dict.fromkeys(kinds, 0))
        for g in gateways
    }
    async with aiohttp.ClientSession() as session:
        for _ in range(50):  # warm-up: connections, imports, caches
            for gateway in gateways:
                for path, body in kinds.values():
                    async with session.post(gateway.base + path, json=body) as response:
                        await response.read()
        order = [(gateway, kind) for gateway in gateways for kind in kinds]
        for _ in range(max(1, requests // block)):
            random.shuffle(order)
            for gateway, kind in order:
                path, body = kinds[kind]
                timing = timings[gateway.label]
                cpu_before = cpu_s(gateway.pid)
                for _ in range(block):
                    started = time.perf_counter()
                    async with session.post(gateway.base + path, json=body) as response:
                        await response.read()
                        assert response.status == 200, await response.text()
                    timing.wall_ms[kind].append((time.perf_counter() - started) * 1000)
                timing.cpu_s[kind] += cpu_s(gateway.pid) - cpu_before
                timing.cpu_requests[kind] += block
    return timings


def report(label: str, timings: Timings) -> None:
    chat_p50 = statistics.median(timings.wall_ms["chat"])
    chat_cpu = timings.cpu_s["chat"] / timings.cpu_requests["chat"] * 1000
    print(f"\n{label}")
    for kind, values in timings.wall_ms.items():
        p50 = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        cpu = timings.cpu_s[kind] / timings.cpu_requests[kind] * 1000
        added = (
            "" if kind == "chat" else f"   added over chat: p50 {p50 - chat_p50:+.3f} ms, CPU {cpu - chat_cpu:+.3f} ms"
        )
        print(f"  {kind:10s} p50 {p50:7.3f} ms   p90 {p90:7.3f} ms   gateway CPU {cpu:6.3f} ms/request{added}")


def start_gateway(label: str, src: Path, up_port: int, log_dir: Path) -> tuple[Service, Gateway]:
    """`gpufleet serve` importing gpufleet from `src`, one remote model on the fixed upstream."""
    port = free_port()
    config = log_dir / f"{label}.yaml"
    config.write_text(
        f"server: {{port: {port}}}\nmodels:\n  bench:\n    engine: remote\n"
        f"    url: http://127.0.0.1:{up_port}/v1\n    upstream_model: Qwen/Qwen3-8B\n"
    )
    argv = [str(gpufleet_exe()), "serve", "--config", str(config)]
    service = start_service(label, argv, log_dir, None, {"PYTHONPATH": str(src)})
    wait_ready(service, f"http://127.0.0.1:{port}/health", 60)
    return service, Gateway(label, f"http://127.0.0.1:{port}", service.proc.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per kind and mode")
    parser.add_argument("--block", type=int, default=20, help="requests of one kind between two CPU readings")
    parser.add_argument(
        "--baseline-src",
        metavar="DIR",
        type=Path,
        help="also serve gpufleet from this src/ (another checkout), interleaved with this one",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also serve this repository's src/ at git revision REV (git archive), interleaved with this one",
    )
    args = parser.parse_args()
    up_port = free_port()
    sources = {"this checkout": BENCH_DIR.parent / "src"}
    if args.baseline_src is not None:
        sources[f"baseline {args.baseline_src}"] = args.baseline_src.resolve()
    services: list[Service] = []
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        if args.baseline:
            name, src = export_source(args.baseline, log_dir)
            sources[f"baseline {name}"] = src
        upstream = start_service(
            "upstream", [sys.executable, str(BENCH_DIR / "fixed_upstream.py"), "--port", str(up_port)], log_dir, None
        )
        services.append(upstream)
        try:
            wait_ready(upstream, f"http://127.0.0.1:{up_port}/health", 30)
            gateways = []
            for number, (label, src) in enumerate(sources.items()):
                service, gateway = start_gateway(f"gateway{number}", src, up_port, log_dir)
                services.append(service)
                gateways.append(Gateway(label, gateway.base, gateway.pid))
            print(machine_line())
            for stream in (False, True):
                timings = asyncio.run(measure(gateways, args.requests, args.block, stream))
                for gateway in gateways:
                    mode = "stream" if stream else "non-stream"
                    report(
                        f"{gateway.label}: {mode}, concurrency 1, {args.requests} requests each:",
                        timings[gateway.label],
                    )
            print(machine_line().rsplit("; ", 1)[-1], "at the end")
        finally:
            for service in reversed(services):
                service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
