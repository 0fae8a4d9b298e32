"""Tokens/s of the embedded engine: streamed straight from its own port vs through the gateway.

Started by ``gateway_overhead.py --embedded``. It runs ``gpufleet serve`` with the SmolLM2
embedded engine preloaded, reads the engine's own base URL from ``GET /status``, then streams
one fixed prompt (temperature 0, ``max_tokens`` tokens, ``ignore_eos`` so every run decodes
the same count) alternately to the engine and to the gateway (ABBA order, so drift in machine
load hits both paths alike). Nothing is pinned: the engine uses both cores, as in real use,
and the gateway competes with it for CPU, which is exactly the overhead to be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from harness import (
    Service,
    free_port,
    gpufleet_exe,
    http_get,
    machine_line,
    services,
    source_revision,
    start_service,
    wait_ready,
)

MODEL = "smollm2"
GPUFLEET_CONFIG = f"""\
models:
  {MODEL}:
    engine: llamacpp
    source: package:smollm2-135m-instruct
    preload: true
"""
# Appended with --engine-threads: fewer engine threads than cores leaves the gateway a core of
# its own, which tells CPU contention apart from relay latency.
THREADS_LINE = "    threads: {threads}\n"
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


@dataclass(frozen=True)
class StreamRun:
    """One streamed completion: token count, timings (s) and the text, for the identity check."""

    path: str
    tokens: int
    total_s: float
    first_token_s: float
    text: str
    gateway_cpu_s: float = 0.0  # CPU time the gateway process used meanwhile (either path)

    @property
    def decode_tok_s(self) -> float:
        """Tokens after the first, per second between first and last token (the decode rate)."""
        span = self.total_s - self.first_token_s
        return (self.tokens - 1) / span if span > 0 and self.tokens > 1 else 0.0

    @property
    def e2e_tok_s(self) -> float:
        """All tokens over the whole request time (prompt processing included)."""
        return self.tokens / self.total_s if self.total_s > 0 else 0.0


def request_body(model: str, max_tokens: int) -> dict[str, object]:
    """The fixed streamed request; unknown keys such as ``ignore_eos`` pass through the gateway."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def stream_once(session: aiohttp.ClientSession, path: str, base_url: str, body: dict[str, object]) -> StreamRun:
    """POST one streamed chat completion and time it; usage tokens if sent, else content chunks."""
    t0 = time.perf_counter()
    first: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    parts: list[str] = []
    async with session.post(f"{base_url}/chat/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {(await resp.read())[:300]!r}")
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                usage_tokens = int(chunk["usage"].get("completion_tokens") or 0)
            for choice in chunk.get("choices") or ():
                if content := (choice.get("delta") or {}).get("content"):
                    first = first if first is not None else time.perf_counter()
                    chunks += 1
                    parts.append(content)
    total = time.perf_counter() - t0
    return StreamRun(path, usage_tokens or chunks, total, (first or t0) - t0, "".join(parts))


def engine_base_url(gateway_url: str, model: str) -> str:
    """The engine's own base URL, from the gateway's ``GET /status``."""
    status, body = http_get(f"{gateway_url}/status")
    if status != 200:
        raise SystemExit(f"GET {gateway_url}/status answered {status}: {body[:300]!r}")
    for entry in json.loads(body).get("models", []):
        if entry.get("name") == model and entry.get("base_url"):
            url = str(entry["base_url"]).rstrip("/")
            return url if url.endswith("/v1") else url + "/v1"
    raise SystemExit(f"/status lists no ready engine URL for {model!r}: {body[:500]!r}")


def start_embedded_gateway(work_dir: Path, engine_threads: int | None) -> tuple[Service, str]:
    """``gpufleet serve`` with SmolLM2 preloaded; returns the service and its root URL once ready."""
    cfg = work_dir / "gpufleet-embedded.yaml"
    extra = THREADS_LINE.format(threads=engine_threads) if engine_threads else ""
    cfg.write_text(GPUFLEET_CONFIG + extra)
    port = free_port()
    argv = [str(gpufleet_exe()), "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    svc = start_service("gpufleet-embedded", argv, work_dir, cpus=None)
    url = f"http://127.0.0.1:{port}"
    wait_ready(svc, f"{url}/health", 60)
    wait_ready(svc, f"{url}/health/ready", 900)  # first run may assemble the model package
    return svc, url


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc, clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe(run: StreamRun) -> str:
    """One progress line."""
    return (
        f"{run.path:<8} {run.tokens} tokens  decode {run.decode_tok_s:6.1f} tok/s  "
        f"end-to-end {run.e2e_tok_s:6.1f} tok/s  first token {run.first_token_s * 1e3:6.1f} ms  "
        f"gateway CPU {run.gateway_cpu_s * 1e3:5.0f} ms"
    )


async def stream_with_retries(
    session: aiohttp.ClientSession, path: str, base_url: str, body: dict[str, object], failures: list[str]
) -> StreamRun:
    """``stream_once``, tried up to 3 times; each failure is recorded (and reported), not hidden."""
    for attempt in range(3):
        try:
            return await stream_once(session, path, base_url, body)
        except (RuntimeError, aiohttp.ClientError) as err:
            failures.append(f"{path}: {err}")
            print(f"  {path}: attempt {attempt + 1} failed: {err}", flush=True)
    raise RuntimeError(f"{path}: 3 failed attempts in a row: {failures[-3:]}")


async def compare(
    engine_url: str, gateway_url: str, gateway_pid: int, runs: int, max_tokens: int, failures: list[str]
) -> list[StreamRun]:
    """One warm-up per path, then ``runs`` per path in ABBA order."""
    paths = {"direct": engine_url, "gateway": f"{gateway_url}/v1"}
    timeout = aiohttp.ClientTimeout(total=600)
    results: list[StreamRun] = []
    # A new connection per request on both paths: llama.cpp's server drops idle keep-alive
    # connections on its own schedule, and a reused dead one fails the request.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for name, url in paths.items():
            await stream_with_retries(session, name, url, request_body(MODEL, max_tokens), failures)
        for i in range(runs):
            order = ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")
            for name in order:
                body = request_body(MODEL, max_tokens)
                cpu0 = process_cpu_s(gateway_pid)
                run = await stream_with_retries(session, name, paths[name], body, failures)
                run = dataclasses.replace(run, gateway_cpu_s=process_cpu_s(gateway_pid) - cpu0)
                results.append(run)
                print(f"  [{i + 1}/{runs}] {describe(run)}", flush=True)
    return results


def render(results: list[StreamRun], runs: int, max_tokens: int, engine_threads: int | None) -> str:
    """Medians per path and the gateway/direct ratio (target >= 98%)."""
    by_path = {p: [r for r in results if r.path == p] for p in ("direct", "gateway")}
    lines = [
        f"machine: {machine_line()}",
        f"gpufleet: {source_revision()}",
        f"embedded engine {MODEL}: {runs} streamed runs per path, max_tokens {max_tokens}, temperature 0, "
        f"ignore_eos; engine threads: {engine_threads or 'default (all cores)'}; medians (min–max)",
        "",
        "| path | tokens | decode tok/s | end-to-end tok/s | first token ms |",
        "|---|---|---|---|---|",
    ]
    for path, rs in by_path.items():
        dec = [r.decode_tok_s for r in rs]
        e2e = [r.e2e_tok_s for r in rs]
        ttft = [r.first_token_s * 1e3 for r in rs]
        lines.append(
            f"| {path} | {statistics.median(r.tokens for r in rs):.0f} | "
            f"{statistics.median(dec):.1f} ({min(dec):.1f}–{max(dec):.1f}) | "
            f"{statistics.median(e2e):.1f} ({min(e2e):.1f}–{max(e2e):.1f}) | "
            f"{statistics.median(ttft):.1f} ({min(ttft):.1f}–{max(ttft):.1f}) |"
        )
    lines.append("")
    for attr, label in (("decode_tok_s", "decode"), ("e2e_tok_s", "end-to-end")):
        direct = statistics.median(getattr(r, attr) for r in by_path["direct"])
        gateway = statistics.median(getattr(r, attr) for r in by_path["gateway"])
        # Runs i of both paths are adjacent in time (ABBA), so their ratio cancels slow drift.
        pairs = [
            getattr(g, attr) / getattr(d, attr) * 100
            for d, g in zip(by_path["direct"], by_path["gateway"], strict=True)
        ]
        lines.append(
            f"{label} tokens/s through the gateway = {gateway / direct * 100:.1f}% of direct "
            f"(median of paired runs {statistics.median(pairs):.1f}%, range {min(pairs):.1f}–{max(pairs):.1f}%; "
            "target >= 98%)"
        )
    cpu_s = sum(r.gateway_cpu_s for r in by_path["gateway"])
    tokens = sum(r.tokens for r in by_path["gateway"])
    idle_cpu_s = sum(r.gateway_cpu_s for r in by_path["direct"])
    lines.append(
        f"gateway process CPU while relaying: {cpu_s * 1e3 / len(by_path['gateway']):.0f} ms per stream, "
        f"{cpu_s / tokens * 1e6:.0f} µs per token (while idle during direct runs: "
        f"{idle_cpu_s * 1e3 / len(by_path['direct']):.0f} ms per run)"
    )
    texts = {r.text for r in results}
    lines.append(f"identical text on every run and path: {'yes' if len(texts) == 1 else f'no ({len(texts)} variants)'}")
    return "\n".join(lines)


def run_embedded(args: argparse.Namespace) -> int:
    """Start the embedded gateway, compare the two paths, print the report."""
    work_dir = Path(tempfile.mkdtemp(prefix="gateway-embedded-"))
    print(f"logs and configs: {work_dir}\nstarting gpufleet with {MODEL} (preload)...", flush=True)
    with services() as started:
        svc, gateway_url = start_embedded_gateway(work_dir, args.engine_threads)
        started.append(svc)
        engine_url = engine_base_url(gateway_url, MODEL)
        print(f"engine direct: {engine_url}; gateway: {gateway_url}/v1", flush=True)
        failures: list[str] = []
        results = asyncio.run(compare(engine_url, gateway_url, svc.proc.pid, args.runs, args.max_tokens, failures))
    print("\n" + render(results, args.runs, args.max_tokens, args.engine_threads))
    print(f"failed attempts (retried): {len(failures)}")
    for failure in failures:
        print(f"  {failure}")
    return 0


if __name__ == "__main__":
    sys.exit("run it as: .venv/bin/python benchmarks/gateway_overhead.py --embedded")
