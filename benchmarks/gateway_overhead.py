"""Gateway overhead: a fixed upstream measured directly, through gpufleet, LiteLLM and the Rust routers.

One run starts ``fixed_upstream.py`` (a canned OpenAI server), a gpufleet gateway with one
``engine: remote`` model pointed at it, and LiteLLM's proxy, vllm-router and sglang-router
(``router_baselines.py``) pointed at the same upstream, then loads each with ``wrk`` (non-stream
and streaming, concurrency 1 and 16), interleaving the
three targets so that machine noise hits them alike, and prints medians and the ratios:

- gpufleet req/s ÷ LiteLLM req/s at c16 (target ≥ 20×), non-stream and stream;
- gpufleet's added p50 latency over direct at c1 (target ≤ 0.3 ms, issue 22);
- gpufleet's CPU µs per request ÷ vllm-router's (target ≤ 2× at c16, issue 22).

CPU pinning (2-core machine): the gateway under test (gpufleet or LiteLLM, one worker) runs
alone on ``--proxy-cpu``; the upstream, wrk and this script share ``--load-cpus``. Direct
runs use the same load CPUs, so "direct" is wrk → upstream on those.

``--embedded`` instead starts ``gpufleet serve`` with the SmolLM2 embedded engine and
compares streamed tokens/s against the engine's own port and through the gateway (≥ 98%).

Usage::

    .venv/bin/python benchmarks/gateway_overhead.py                 # ~8 min, 3 repeats
    .venv/bin/python benchmarks/gateway_overhead.py --repeat 1 --duration 5
    .venv/bin/python benchmarks/gateway_overhead.py --embedded
    .venv/bin/python benchmarks/gateway_overhead.py --baseline HEAD~1   # before/after, side by side
    .venv/bin/python benchmarks/gateway_overhead.py --skip litellm --gpufleet-src ../other-checkout/src

``--baseline REV`` also serves this repository's ``src/`` at git revision REV (exported with
``git archive``, run from the same venv) as a second gpufleet target, ``gpufleet@REV``, interleaved with
the others. For each gateway the report also gives its CPU time per request (user + system, from
``/proc``), which a busy shared machine disturbs much less than req/s.

LiteLLM, vllm-router and sglang-router are installed on first use into ``benchmarks/.venv-<name>``
(throwaway, gitignored). ``--gpufleet-src DIR`` serves another checkout's ``src/`` as a further
gpufleet target. CPU time is the whole process group's (user + system, children included).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import aiohttp
from embedded_tokens import run_embedded
from harness import (
    BENCH_DIR,
    RESULTS_DIR,
    Service,
    Target,
    export_source,
    free_port,
    gpufleet_exe,
    machine_line,
    parse_cpus,
    services,
    source_revision,
    start_service,
    wait_ready,
)
from litellm_proxy import litellm_installed_version, start_litellm
from load import CHAT_BODY, SERVED_MODEL, STREAM_BODY, STREAM_CHUNKS, AiohttpLoad, Sample, WrkLoad
from router_baselines import ROUTERS, routers_versions, start_router

# --------------------------------------------------------------------------- targets


def start_upstream(log_dir: Path, cpus: set[int] | None) -> tuple[Service, Target]:
    """The fixed-response upstream, on the load CPUs."""
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "fixed_upstream.py"), "--port", str(port)]
    argv += ["--chunks", str(STREAM_CHUNKS)]
    svc = start_service("upstream", argv, log_dir, cpus)
    wait_ready(svc, f"http://127.0.0.1:{port}/health", 30)
    return svc, Target("direct", f"http://127.0.0.1:{port}/v1")


def start_gpufleet(
    upstream: Target, log_dir: Path, cpus: set[int] | None, *, name: str = "gpufleet", src: Path | None = None
) -> tuple[Service, Target]:
    """``gpufleet serve`` with one remote model pointed at the upstream, on the proxy CPU.

    ``src``: another copy of the package's ``src/`` (``--baseline``) to import gpufleet from; by default this
    checkout's (the venv's editable install may point at another checkout).
    """
    src = src if src is not None else BENCH_DIR.parent / "src"
    cfg = log_dir / "gpufleet.yaml"
    cfg.write_text(f"models:\n  {SERVED_MODEL}:\n    engine: remote\n    url: {upstream.base_url}\n")
    port = free_port()
    argv = [str(gpufleet_exe()), "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    env: dict[str, str | None] = {"PYTHONPATH": str(src)}
    svc = start_service(name, argv, log_dir, cpus, env)
    wait_ready(svc, f"http://127.0.0.1:{port}/health", 60)
    return svc, Target(name, f"http://127.0.0.1:{port}/v1")


def start_litellm_target(upstream: Target, log_dir: Path, cpus: set[int] | None) -> tuple[Service, Target]:
    """LiteLLM's proxy serving the same model name on the same upstream."""
    return start_litellm(upstream, SERVED_MODEL, log_dir, cpus)


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
CpuCosts = dict[tuple[str, Cell], list[float]]  # a gateway's CPU µs per completed request, per repeat


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid``'s process group (Linux /proc).

    Every service is started in its own session (group id = its pid), so this counts the
    workers a gateway forks too; children that exited are in the parent's cutime/cstime.
    """
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited meanwhile
            continue
        if int(fields[2]) == pid:  # field 5 of stat, the process group id
            ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def median_of(samples: list[Sample], attr: str) -> float:
    """Median of one Sample field over repeats."""
    return float(statistics.median(float(getattr(s, attr)) for s in samples))


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


def format_cpu_table(costs: CpuCosts, targets: list[str], cells: list[Cell]) -> str:
    """Markdown table of the gateways' CPU µs per request: median over repeats (min–max)."""
    names = [t for t in targets if any(costs.get((t, cell)) for cell in cells)]
    rows = ["| scenario | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    for cell in cells:
        parts = [cell.label]
        for name in names:
            vals = costs.get((name, cell), [])
            text = f"{statistics.median(vals):,.0f}" if vals else "–"
            if len(vals) > 1:
                text += f" ({min(vals):,.0f}–{max(vals):,.0f})"
            parts.append(text)
        rows.append("| " + " | ".join(parts) + " |")
    return "\n".join(rows)


def format_ratios(results: Results, cells: list[Cell], gateways: Sequence[str] = ("gpufleet",)) -> list[str]:
    """The target ratios: gpufleet÷LiteLLM req/s at c>1, gpufleet added p50 at c1 (each gpufleet target)."""
    lines: list[str] = []
    for cell in cells:
        ll, direct = (results.get((t, cell), []) for t in ("litellm", "direct"))
        for name in gateways:
            lines += _gateway_ratios(name, results.get((name, cell), []), ll, direct, cell)
        if cell.connections == 1 and ll and direct:
            ll_added = median_of(ll, "p50_ms") - median_of(direct, "p50_ms")
            lines.append(f"{cell.label}: LiteLLM added p50 over direct = {ll_added:.3f} ms (for scale)")
    return lines


def format_cpu_ratios(
    costs: CpuCosts, cells: list[Cell], gateways: Sequence[str], base: str = "vllm-router"
) -> list[str]:
    """Each gpufleet's CPU µs per request ÷ ``base``'s, per cell (issue 22's goal: <= 2x at c16)."""
    lines: list[str] = []
    for cell in cells:
        ref = costs.get((base, cell), [])
        for name in gateways:
            mine = costs.get((name, cell), [])
            if not (ref and mine):
                continue
            per_rep = [m / max(r, 1e-9) for m, r in zip(mine, ref, strict=False)]
            ratio = statistics.median(mine) / max(statistics.median(ref), 1e-9)
            lines.append(
                f"{cell.label}: {name} CPU/req ÷ {base} = {ratio:.2f}x "
                f"(per repeat {min(per_rep):.2f}–{max(per_rep):.2f}x; target <= 2x at c16)"
            )
    return lines


def _gateway_ratios(name: str, gf: list[Sample], ll: list[Sample], direct: list[Sample], cell: Cell) -> list[str]:
    lines: list[str] = []
    if cell.connections > 1 and gf and ll:
        per_rep = [g.requests_per_s / max(x.requests_per_s, 1e-9) for g, x in zip(gf, ll, strict=False)]
        ratio = median_of(gf, "requests_per_s") / max(median_of(ll, "requests_per_s"), 1e-9)
        lines.append(
            f"{cell.label}: {name} / LiteLLM req/s = {ratio:.1f}x "
            f"(per repeat {min(per_rep):.1f}–{max(per_rep):.1f}x; target >= 20x)"
        )
    if cell.connections == 1 and gf and direct:
        added = [g.p50_ms - d.p50_ms for g, d in zip(gf, direct, strict=False)]
        med = median_of(gf, "p50_ms") - median_of(direct, "p50_ms")
        lines.append(
            f"{cell.label}: {name} added p50 over direct = {med:.3f} ms "
            f"(per repeat {min(added):.3f}–{max(added):.3f} ms; target <= 0.3 ms)"
        )
    return lines


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
        f"python {platform.python_version()}; gpufleet {v('gpufleet')} ({source_revision()}); uvicorn {v('uvicorn')}; "
        f"aiohttp {v('aiohttp')}; litellm {litellm_installed_version() or 'absent'}; {routers_versions()}; wrk {wrk_v}"
    )


# --------------------------------------------------------------------------- overhead run


def measure(
    load: WrkLoad | AiohttpLoad,
    targets: list[Target],
    cells: list[Cell],
    args: argparse.Namespace,
    pids: dict[str, int] | None = None,
) -> tuple[Results, CpuCosts]:
    """Every cell for every target, ``args.repeat`` times, targets interleaved within each cell.

    ``pids``: the gateways' processes by target name, whose CPU time per request is measured too.
    """
    results: Results = {}
    costs: CpuCosts = {}
    for rep in range(args.repeat):
        for cell in cells:
            # Every other repeat in reverse order: no target always runs right after the same neighbour.
            for target in targets if rep % 2 == 0 else targets[::-1]:
                if args.warmup > 0:
                    load.run(target, cell.stream, cell.connections, args.warmup)
                pid = (pids or {}).get(target.name)
                cpu_before = process_cpu_s(pid) if pid else 0.0
                sample = load.run(target, cell.stream, cell.connections, args.duration)
                results.setdefault((target.name, cell), []).append(sample)
                cpu_text = ""
                if pid:
                    cost_us = (process_cpu_s(pid) - cpu_before) * 1e6 / max(sample.requests, 1)
                    costs.setdefault((target.name, cell), []).append(cost_us)
                    cpu_text = f"  CPU {cost_us:7,.0f} us/req"
                print(
                    f"  [{rep + 1}/{args.repeat}] {cell.label:<15} {target.name:<16} "
                    f"{sample.requests_per_s:>10,.0f} req/s  p50 {sample.p50_ms:8.3f} ms  "
                    f"p99 {sample.p99_ms:8.3f} ms  errors {sample.errors}{cpu_text}",
                    flush=True,
                )
    return results, costs


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
    args.load_at_start = os.getloadavg()
    print(f"machine: {machine_line()}\nload tool: {load.label}\nlogs and configs: {work_dir}", flush=True)
    print(f"load average at start: {_loadavg(args.load_at_start)} (1 / 5 / 15 min)", flush=True)
    with services() as started:
        up_svc, direct = start_upstream(work_dir, load_cpus)
        started.append(up_svc)
        targets = [direct]
        pids: dict[str, int] = {}
        other_sources = [export_source(args.baseline, work_dir)] if args.baseline else []
        other_sources += [(f"gpufleet@{Path(p).resolve().parent.name}", Path(p).resolve()) for p in args.gpufleet_src]
        for name, src in other_sources:
            svc, target = start_gpufleet(direct, work_dir, proxy_cpus, name=name, src=src)
            started.append(svc)
            targets.append(target)
            pids[name] = svc.proc.pid
        starters = {"gpufleet": start_gpufleet, "litellm": start_litellm_target}
        starters |= {name: partial(start_router, name) for name in ROUTERS}
        for name, starter in starters.items():
            if name in args.skip:
                continue
            svc, target = starter(direct, work_dir, proxy_cpus)
            started.append(svc)
            targets.append(target)
            pids[name] = svc.proc.pid
        for target in targets:
            problem = asyncio.run(check_target(target))
            if problem:
                raise SystemExit(f"{target.name} answers wrongly, not measuring it: {problem}")
        print(f"versions: {versions_line()}", flush=True)
        results, costs = measure(load, targets, cells, args, pids)
    names = [t.name for t in targets]
    report = render_report(results, names, cells, load.label, args, costs)
    print("\n" + report)
    save_results(results, report, args)
    return 0


def render_report(
    results: Results,
    names: list[str],
    cells: list[Cell],
    load_label: str,
    args: argparse.Namespace,
    costs: CpuCosts | None = None,
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
        "p99 latency, ms:",
        "",
        format_table(results, names, cells, "p99_ms"),
        "",
    ]
    if costs:
        lines += ["Gateway CPU time per request, µs (user + system):", "", format_cpu_table(costs, names, cells), ""]
    gateways = [name for name in names if name.startswith("gpufleet")]
    lines += [
        f"load average (1 / 5 / 15 min): at start {_loadavg(getattr(args, 'load_at_start', None))}, "
        f"at the end {_loadavg(os.getloadavg())}",
        "",
        *format_ratios(results, cells, gateways),
        *format_cpu_ratios(costs or {}, cells, gateways),
    ]
    return "\n".join(lines)


def _loadavg(values: tuple[float, float, float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in values) if values else "?"


def save_results(results: Results, report: str, args: argparse.Namespace) -> None:
    """Raw samples (wrk output included) and the report under benchmarks/results/."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = {f"{name} {cell.label}": [asdict(s) for s in samples] for (name, cell), samples in results.items()}
    payload = {"command": " ".join(sys.argv), "args": vars(args), "report": report, "samples": raw}
    path = RESULTS_DIR / f"gateway-overhead-{stamp}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nraw results: {path}")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load before each run")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the whole grid; medians are reported")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16], help="e.g. 1,16")
    ap.add_argument("--skip", nargs="*", default=[], choices=["gpufleet", "litellm", *ROUTERS], help="targets to omit")
    ap.add_argument("--baseline", metavar="REV", help="also serve src/ at this git revision, as gpufleet@REV")
    ap.add_argument(
        "--gpufleet-src",
        metavar="SRC",
        action="append",
        default=[],
        help="also serve gpufleet from this src/ directory (another checkout), as gpufleet@<its parent>",
    )
    ap.add_argument("--proxy-cpu", default="1", help="CPU(s) for the gateway under test (default 1)")
    ap.add_argument("--load-cpus", default="0", help="CPU(s) for upstream, wrk and this script (default 0)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    ap.add_argument("--python-client", action="store_true", help="use the aiohttp client even with wrk")
    ap.add_argument("--embedded", action="store_true", help="embedded engine tokens/s, direct vs gateway")
    ap.add_argument("--runs", type=int, default=5, help="--embedded: streamed requests per path (default 5)")
    ap.add_argument("--max-tokens", type=int, default=128, help="--embedded: tokens per request")
    ap.add_argument("--engine-threads", type=int, default=None, help="--embedded: engine CPU threads")
    args = ap.parse_args(argv)
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        print("fewer than 2 CPUs available: not pinning")
        args.pin = False
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    # SIGTERM (a timeout, a killed job) must still run the cleanup that stops our services.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args = parse_args(argv)
    return run_embedded(args) if args.embedded else run_overhead(args)


if __name__ == "__main__":
    sys.exit(main())
