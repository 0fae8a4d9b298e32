"""The load side: the request bodies, wrk (preferred) or an aiohttp fallback client, and their samples."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from harness import Target, pin_to

SERVED_MODEL = "bench"
STREAM_CHUNKS = 16  # content chunks per stream from fixed_upstream.py
CHAT_BODY = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
STREAM_BODY = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Sample:
    """One load run: throughput, latency percentiles (ms) and failures."""

    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    raw: str = field(default="", repr=False)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str) -> float:
    """wrk's '9.00us' / '1.78ms' / '2.01s' as milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not m:
        raise ValueError(f"unparsable wrk duration {value!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> Sample:
    """Pull req/s, percentiles and error counts from ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return Sample(rps, pct[50], pct[90], pct[99], total, errors, out)


def lua_script(body: dict[str, object], path: Path) -> Path:
    """A wrk script that POSTs ``body`` as JSON."""
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    return path


class WrkLoad:
    """Load with wrk (one thread: it shares the load CPUs with the upstream)."""

    label = "wrk"

    def __init__(self, work_dir: Path, cpus: set[int] | None) -> None:
        self._cpus = cpus
        self._scripts = {
            False: lua_script(CHAT_BODY, work_dir / "chat.lua"),
            True: lua_script(STREAM_BODY, work_dir / "stream.lua"),
        }

    def run(self, target: Target, stream: bool, connections: int, duration_s: float) -> Sample:
        """One wrk run; a stream counts as done when its last chunk has arrived."""
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "10s", "--latency"]
        argv += ["-s", str(self._scripts[stream]), f"{target.base_url}/chat/completions"]
        out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=pin_to(self._cpus), check=True)
        return parse_wrk(out.stdout)


class AiohttpLoad:
    """Fallback when wrk is missing: a closed-loop aiohttp client (slower, so lower ceilings)."""

    label = "aiohttp client (fallback: wrk not installed; numbers not comparable with wrk's)"

    def run(self, target: Target, stream: bool, connections: int, duration_s: float) -> Sample:
        """``connections`` workers each sending requests back to back for ``duration_s``."""
        return asyncio.run(self._run(target, stream, connections, duration_s))

    async def _run(self, target: Target, stream: bool, connections: int, duration_s: float) -> Sample:
        url = f"{target.base_url}/chat/completions"
        body = json.dumps(STREAM_BODY if stream else CHAT_BODY).encode()
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + duration_s
        conn = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=conn) as session:

            async def worker() -> None:
                nonlocal errors
                while (t0 := time.perf_counter()) < deadline:
                    async with session.post(url, data=body, headers=JSON_HEADERS) as r:
                        await r.read()
                        errors += r.status != 200
                    latencies.append((time.perf_counter() - t0) * 1e3)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=100)
        return Sample(len(latencies) / elapsed, q[49], q[89], q[98], len(latencies), errors)
