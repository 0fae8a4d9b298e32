"""Gateway overhead: a fixed upstream measured directly, through gpufleet and through LiteLLM.

One run starts ``fixed_upstream.py`` (a canned OpenAI server), a gpufleet gateway with one
``engine: remote`` model pointed at it, and LiteLLM's proxy pointed at the same upstream, then
loads each with ``wrk`` (non-stream and streaming, concurrency 1 and 16), interleaving the
three targets so that machine noise hits them alike, and prints medians and the ratios:

- gpufleet req/s ÷ LiteLLM req/s at c16 (target ≥ 20×), non-stream and stream;
- gpufleet's added p50 latency over direct at c1 (target ≤ 1 ms).

CPU pinning (2-core machine): the gateway under test (gpufleet or LiteLLM, one worker) runs
alone on ``--proxy-cpu``; the upstream, wrk and this script share ``--load-cpus``. Direct
runs use the same load CPUs, so "direct" is wrk → upstream on those.

``--embedded`` instead starts ``gpufleet serve`` with the SmolLM2 embedded engine and
compares streamed tokens/s against the engine's own port and through the gateway (≥ 98%).

Usage::

    .venv/bin/python benchmarks/gateway_overhead.py                 # ~8 min, 3 repeats
    .venv/bin/python benchmarks/gateway_overhead.py --repeat 1 --duration 5
    .venv/bin/python benchmarks/gateway_overhead.py --embedded

LiteLLM is installed on first use into ``benchmarks/.venv-litellm`` (throwaway, gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
# 1.109.1 (newest on PyPI at writing) needs litellm-proxy-extras==0.4.113, which is not
# published; 1.108.7 is the newest whose [proxy] extra resolves. Every recent litellm also
# asks for certifi>=2026.10.19, newer than any certifi on PyPI, hence uv's --override
# (certifi only supplies CA roots; nothing here uses TLS).
LITELLM_VERSION = "1.108.7"
LITELLM_OVERRIDES = ("certifi==2026.10.18",)
# Added so LiteLLM runs at its best, not as a bare `pip install litellm[proxy]` would:
# - opentelemetry-sdk: without it the proxy retries a failing import of its OTel module
#   (litellm/integrations/otel/logger.py) on every request, from _seed_request_destinations
#   in user_api_key_auth.py -- py-spy showed ~20% of its CPU there and it halved req/s;
# - httptools: uvicorn's fast HTTP parser (h11 otherwise), as gpufleet gets.
LITELLM_EXTRAS = ("opentelemetry-sdk==1.45.2", "httptools==0.9.0")
LITELLM_SPEC = (f"litellm[proxy]=={LITELLM_VERSION}", *LITELLM_EXTRAS)
UV_VERSION = "0.13.8"
SERVED_MODEL = "bench"
STREAM_CHUNKS = 16

CHAT_BODY = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
JSON_HEADERS = {"Content-Type": "application/json"}
STREAM_BODY = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin_to(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child (and its children) to ``cpus``."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


@dataclass
class Service:
    """A child process we started, with its log file; stopped by ``stop``."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, n_lines: int = 30) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n_lines:])

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the child, then SIGKILL its whole process group after ``grace_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        # Its own session: killing the group reaps workers/engines it may have leaked.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def start_service(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    cpus: set[int] | None,
    env: dict[str, str | None] | None = None,
) -> Service:
    """Start ``argv`` in its own session, output to ``log_dir/name.log``; env None values unset."""
    log_path = log_dir / f"{name}.log"
    child_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            preexec_fn=pin_to(cpus),
            start_new_session=True,
        )
    return Service(name, proc, log_path)


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def wait_ready(service: Service, url: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; raise with the log tail if the child dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited ({service.proc.returncode}):\n{service.log_tail()}")
        if http_get(url, timeout_s=2.0)[0] == 200:
            return
        time.sleep(0.25)
    raise RuntimeError(f"{service.name} not ready at {url} after {timeout_s:.0f}s:\n{service.log_tail()}")


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One thing to measure: a name and the base URL (ending in ``/v1``) to load."""

    name: str
    base_url: str


def start_upstream(log_dir: Path, cpus: set[int] | None) -> tuple[Service, Target]:
    """The fixed-response upstream, on the load CPUs."""
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "fixed_upstream.py"), "--port", str(port)]
    argv += ["--chunks", str(STREAM_CHUNKS)]
    svc = start_service("upstream", argv, log_dir, cpus)
    wait_ready(svc, f"http://127.0.0.1:{port}/health", 30)
    return svc, Target("direct", f"http://127.0.0.1:{port}/v1")


def gpufleet_exe() -> Path:
    """The ``gpufleet`` console script beside this interpreter (the project's venv)."""
    exe = Path(sys.executable).parent / "gpufleet"
    if not exe.exists():
        raise SystemExit(f"{exe} not found: run this with the project's venv (.venv/bin/python)")
    return exe


def start_gpufleet(upstream: Target, log_dir: Path, cpus: set[int] | None) -> tuple[Service, Target]:
    """``gpufleet serve`` with one remote model pointed at the upstream, on the proxy CPU."""
    cfg = log_dir / "gpufleet.yaml"
    cfg.write_text(f"models:\n  {SERVED_MODEL}:\n    engine: remote\n    url: {upstream.base_url}\n")
    port = free_port()
    argv = [str(gpufleet_exe()), "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    svc = start_service("gpufleet", argv, log_dir, cpus)
    wait_ready(svc, f"http://127.0.0.1:{port}/health", 60)
    return svc, Target("gpufleet", f"http://127.0.0.1:{port}/v1")


def litellm_installed_version() -> str | None:
    """The litellm version in the throwaway venv, or None if it is missing."""
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_litellm() -> None:
    """Install ``LITELLM_SPEC`` into ``benchmarks/.venv-litellm`` unless it is there already."""
    stamp = LITELLM_VENV / "bench-spec.txt"
    wanted = "\n".join(LITELLM_SPEC) + "\n"
    if stamp.exists() and stamp.read_text() == wanted and litellm_installed_version() == LITELLM_VERSION:
        return
    print(f"installing {' '.join(LITELLM_SPEC)} into {LITELLM_VENV} (about a minute)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    bin_dir = LITELLM_VENV / "bin"
    subprocess.run([str(bin_dir / "pip"), "install", "-q", f"uv=={UV_VERSION}"], check=True)
    overrides = LITELLM_VENV / "overrides.txt"
    overrides.write_text("\n".join(LITELLM_OVERRIDES) + "\n")
    uv = [str(bin_dir / "uv"), "pip", "install", "-q", "--python", str(bin_dir / "python")]
    subprocess.run([*uv, "--override", str(overrides), *LITELLM_SPEC], check=True)
    stamp.write_text(wanted)


# LiteLLM's fastest honest configuration for this test: one uvicorn worker (its recommended
# default), no master key (as gpufleet here) / DB / Redis (so no auth lookups or spend writes), no callbacks,
# spend and error logs off, log level ERROR, and the bundled model-cost map instead of a
# network fetch at startup. The model is an ``openai/`` deployment on the same upstream.
LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: sk-bench
litellm_settings:
  set_verbose: false
  json_logs: false
  telemetry: false
general_settings:
  disable_spend_logs: true
  disable_error_logs: true
"""
LITELLM_ENV = {
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DISABLE_SCHEMA_UPDATE": "True",
    # gpufleet runs without API keys here, so LiteLLM does too (it refuses to by default).
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
}


def start_litellm(upstream: Target, log_dir: Path, cpus: set[int] | None) -> tuple[Service, Target]:
    """LiteLLM's proxy (one worker) with an ``openai/`` model on the upstream, on the proxy CPU."""
    ensure_litellm()
    cfg = log_dir / "litellm.yaml"
    cfg.write_text(LITELLM_CONFIG.format(model=SERVED_MODEL, api_base=upstream.base_url))
    port = free_port()
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--num_workers", "1"]
    env: dict[str, str | None] = {**LITELLM_ENV, "DATABASE_URL": None}  # no DB: no spend/key lookups
    svc = start_service("litellm", argv, log_dir, cpus, env)
    wait_ready(svc, f"http://127.0.0.1:{port}/health/liveliness", 180)
    return svc, Target("litellm", f"http://127.0.0.1:{port}/v1")


# --------------------------------------------------------------------------- sanity check


async def check_target(target: Target) -> str | None:
    """One non-stream and one stream request; None if both look right, else what is wrong."""
    url = f"{target.base_url}/chat/completions"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=CHAT_BODY) as resp:
            body = await resp.read()
            if resp.status != 200:
                return f"non-stream: HTTP {resp.status}: {body[:300]!r}"
            content = json.loads(body)["choices"][0]["message"]["content"]
            if "quick brown fox" not in content:
                return f"non-stream: unexpected content {content!r}"
        async with session.post(url, json=STREAM_BODY) as resp:
            text = (await resp.read()).decode()
            if resp.status != 200:
                return f"stream: HTTP {resp.status}: {text[:300]!r}"
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return f"stream: no final [DONE] in {text[-200:]!r}"
    chunks = [json.loads(e) for e in events[:-1]]
    n_content = sum(1 for c in chunks if c.get("choices") and c["choices"][0].get("delta", {}).get("content"))
    has_usage = any(c.get("usage") for c in chunks)
    if n_content != STREAM_CHUNKS or not has_usage:
        return f"stream: {n_content} content chunks (want {STREAM_CHUNKS}), usage chunk: {has_usage}"
    return None


# --------------------------------------------------------------------------- load


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


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Cell:
    """A (mode, concurrency) scenario."""

    stream: bool
    connections: int

    @property
    def label(self) -> str:
        """e.g. 'stream c16'."""
        return f"{'stream' if self.stream else 'non-stream'} c{self.connections}"


Results = dict[tuple[str, Cell], list[Sample]]


def median_of(samples: list[Sample], attr: str) -> float:
    """Median of one Sample field over repeats."""
    return statistics.median(getattr(s, attr) for s in samples)


def _fmt(value: float, attr: str) -> str:
    """req/s as a whole number with separators, latencies in ms with 3 decimals."""
    return f"{value:,.0f}" if attr == "requests_per_s" else f"{value:.3f}"


def format_table(results: Results, targets: list[str], cells: list[Cell], attr: str) -> str:
    """Markdown table of one Sample field: median over repeats, then (min–max) to show the noise."""
    rows = ["| scenario | " + " | ".join(targets) + " |", "|---" * (1 + len(targets)) + "|"]
    for cell in cells:
        parts = [cell.label]
        for t in targets:
            samples = results.get((t, cell), [])
            if not samples:
                parts.append("–")
                continue
            vals = [getattr(s, attr) for s in samples]
            text = _fmt(statistics.median(vals), attr)
            if len(vals) > 1:
                text += f" ({_fmt(min(vals), attr)}–{_fmt(max(vals), attr)})"
            if errors := sum(s.errors for s in samples):
                text += f" **{errors} errors**"
            parts.append(text)
        rows.append("| " + " | ".join(parts) + " |")
    return "\n".join(rows)


def format_ratios(results: Results, cells: list[Cell]) -> list[str]:
    """The target ratios: gpufleet÷LiteLLM req/s at c>1, gpufleet added p50 at c1."""
    lines: list[str] = []
    for cell in cells:
        gf, ll, direct = (results.get((t, cell), []) for t in ("gpufleet", "litellm", "direct"))
        if cell.connections > 1 and gf and ll:
            per_rep = [g.requests_per_s / max(x.requests_per_s, 1e-9) for g, x in zip(gf, ll, strict=False)]
            ratio = median_of(gf, "requests_per_s") / max(median_of(ll, "requests_per_s"), 1e-9)
            lines.append(
                f"{cell.label}: gpufleet / LiteLLM req/s = {ratio:.1f}x "
                f"(per repeat {min(per_rep):.1f}–{max(per_rep):.1f}x; target >= 20x)"
            )
        if cell.connections == 1 and gf and direct:
            added = [g.p50_ms - d.p50_ms for g, d in zip(gf, direct, strict=False)]
            med = median_of(gf, "p50_ms") - median_of(direct, "p50_ms")
            lines.append(
                f"{cell.label}: gpufleet added p50 over direct = {med:.3f} ms "
                f"(per repeat {min(added):.3f}–{max(added):.3f} ms; target <= 1 ms)"
            )
            if ll:
                ll_added = median_of(ll, "p50_ms") - median_of(direct, "p50_ms")
                lines.append(f"{cell.label}: LiteLLM added p50 over direct = {ll_added:.3f} ms (for scale)")
    return lines


def machine_line() -> str:
    """CPU model, core count, memory, OS and load average, for the record."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}; {os.cpu_count()} CPUs; {mem_gib:.0f} GiB; {platform.platform()}; loadavg {load}"


def versions_line() -> str:
    """Versions of the things being compared."""
    import importlib.metadata as md

    def v(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "?"

    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True) if shutil.which("wrk") else None
    wrk_v = (wrk.stdout or wrk.stderr).split()[1] if wrk and (wrk.stdout or wrk.stderr) else "absent"
    return (
        f"python {platform.python_version()}; gpufleet {v('gpufleet')}; uvicorn {v('uvicorn')}; "
        f"aiohttp {v('aiohttp')}; litellm {litellm_installed_version() or 'absent'}; wrk {wrk_v}"
    )


# --------------------------------------------------------------------------- overhead run


def parse_cpus(text: str) -> set[int]:
    """'0' / '0,2' / '0-3' as a set of CPU ids."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


@contextlib.contextmanager
def services() -> Iterator[list[Service]]:
    """A list to put started services in; all stopped on the way out, last first."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for svc in reversed(started):
            svc.stop()


def measure(
    load: WrkLoad | AiohttpLoad, targets: list[Target], cells: list[Cell], args: argparse.Namespace
) -> Results:
    """Every cell for every target, ``args.repeat`` times, targets interleaved within each cell."""
    results: Results = {}
    for rep in range(args.repeat):
        for cell in cells:
            for target in targets:
                if args.warmup > 0:
                    load.run(target, cell.stream, cell.connections, args.warmup)
                sample = load.run(target, cell.stream, cell.connections, args.duration)
                results.setdefault((target.name, cell), []).append(sample)
                print(
                    f"  [{rep + 1}/{args.repeat}] {cell.label:<15} {target.name:<9} "
                    f"{sample.requests_per_s:>10,.0f} req/s  p50 {sample.p50_ms:8.3f} ms  "
                    f"p99 {sample.p99_ms:8.3f} ms  errors {sample.errors}",
                    flush=True,
                )
    return results


def run_overhead(args: argparse.Namespace) -> int:
    """Start the upstream and the gateways, measure, print the table and the ratios."""
    proxy_cpus = parse_cpus(args.proxy_cpu) if args.pin else None
    load_cpus = parse_cpus(args.load_cpus) if args.pin else None
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)  # this script too stays off the proxy's CPU
    load: WrkLoad | AiohttpLoad
    work_dir = Path(tempfile.mkdtemp(prefix="gateway-overhead-"))
    if shutil.which("wrk") and not args.python_client:
        load = WrkLoad(work_dir, load_cpus)
    else:
        print("wrk not found (install: apt-get install -y wrk); using the aiohttp fallback client.")
        load = AiohttpLoad()
    cells = [Cell(s, c) for s in (False, True) for c in args.concurrency]
    print(f"machine: {machine_line()}\nload tool: {load.label}\nlogs and configs: {work_dir}", flush=True)
    with services() as started:
        up_svc, direct = start_upstream(work_dir, load_cpus)
        started.append(up_svc)
        targets = [direct]
        for name, starter in (("gpufleet", start_gpufleet), ("litellm", start_litellm)):
            if name in args.skip:
                continue
            svc, target = starter(direct, work_dir, proxy_cpus)
            started.append(svc)
            targets.append(target)
        for target in targets:
            problem = asyncio.run(check_target(target))
            if problem:
                raise SystemExit(f"{target.name} answers wrongly, not measuring it: {problem}")
        print(f"versions: {versions_line()}", flush=True)
        results = measure(load, targets, cells, args)
    names = [t.name for t in targets]
    report = render_report(results, names, cells, load.label, args)
    print("\n" + report)
    save_results(results, report, args)
    return 0


def render_report(
    results: Results, names: list[str], cells: list[Cell], load_label: str, args: argparse.Namespace
) -> str:
    """The text printed at the end and pasted into docs/benchmarks.md."""
    pin = "no pinning"
    if args.pin:
        pin = f"proxy on CPU {args.proxy_cpu}, upstream+load on CPU {args.load_cpus}"
    lines = [
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"machine: {machine_line()}",
        f"versions: {versions_line()}",
        f"load: {load_label}; {args.duration:g}s per run after {args.warmup:g}s warm-up; "
        f"{args.repeat} repeats, medians (min–max); {pin}",
        "",
        "Requests/s (complete responses; for streams, complete streams):",
        "",
        format_table(results, names, cells, "requests_per_s"),
        "",
        "p50 latency, ms (for streams, until the last byte):",
        "",
        format_table(results, names, cells, "p50_ms"),
        "",
        *format_ratios(results, cells),
    ]
    return "\n".join(lines)


def save_results(results: Results, report: str, args: argparse.Namespace) -> None:
    """Raw samples (wrk output included) and the report under benchmarks/results/."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = {f"{name} {cell.label}": [asdict(s) for s in samples] for (name, cell), samples in results.items()}
    payload = {"command": " ".join(sys.argv), "args": vars(args), "report": report, "samples": raw}
    path = RESULTS_DIR / f"gateway-overhead-{stamp}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nraw results: {path}")


# --------------------------------------------------------------------------- embedded


def run_embedded(args: argparse.Namespace) -> int:
    """Tokens/s of the embedded engine, direct to its port vs through the gateway."""
    from embedded_tokens import run_embedded_comparison  # keeps the overhead path light

    return run_embedded_comparison(args)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load before each run")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the whole grid; medians are reported")
    ap.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16], help="e.g. 1,16"
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=["gpufleet", "litellm"], help="targets to omit")
    ap.add_argument("--proxy-cpu", default="1", help="CPU(s) for the gateway under test (default 1)")
    ap.add_argument("--load-cpus", default="0", help="CPU(s) for upstream, wrk and this script (default 0)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    ap.add_argument("--python-client", action="store_true", help="use the aiohttp client even with wrk")
    ap.add_argument("--embedded", action="store_true", help="embedded engine tokens/s, direct vs gateway")
    ap.add_argument("--runs", type=int, default=5, help="--embedded: streamed requests per path (default 5)")
    ap.add_argument("--max-tokens", type=int, default=128, help="--embedded: tokens per request")
    args = ap.parse_args(argv)
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        print("fewer than 2 CPUs available: not pinning")
        args.pin = False
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    return run_embedded(args) if args.embedded else run_overhead(args)


if __name__ == "__main__":
    sys.exit(main())
