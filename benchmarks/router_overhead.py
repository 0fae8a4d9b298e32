"""Router overhead: the same gateway serving a plain model name vs a route vs `auto`, side by side.

One gateway (pinned alone on ``--proxy-cpu``) serves three names backed by the same fixed upstream
(``fixed_upstream.py``):

- ``bench``: one remote model — the foundation's path (one target, no defaults);
- ``bench-routed``: a route with two replicas (least-loaded + session affinity on the ``user`` field),
  a fallback, request defaults (temperature, a max_tokens cap) and a persona-style system prompt;
- ``auto``: the complexity classifier picks a tier, whose route is ``bench-routed``.

wrk loads each name in turn (interleaved, ``--repeat`` rounds) and the script prints the medians and the
router's added p50 latency (target: < 0.2 ms) and req/s ratio. It also times the router's own work
in-process (resolve + classify + order + defaults, µs per request), which the network noise hides.

Usage::

    .venv/bin/python benchmarks/router_overhead.py                 # ~3 min
    .venv/bin/python benchmarks/router_overhead.py --repeat 1 --duration 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gateway_overhead import start_upstream
from harness import (
    Service,
    Target,
    free_port,
    gpufleet_exe,
    machine_line,
    parse_cpus,
    pin_to,
    services,
    source_revision,
    start_service,
    wait_ready,
)
from load import Sample, parse_wrk

NAMES = ("bench", "bench-routed", "auto")
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def gateway_config(upstream_url: str) -> dict[str, object]:
    remote = {"engine": "remote", "url": upstream_url, "upstream_model": "bench"}
    return {
        "models": {
            "bench": dict(remote),
            "bench-r1": {**remote, "listed": False},
            "bench-r2": {**remote, "listed": False},
        },
        "routes": {
            "bench-routed": {
                "targets": ["bench-r1", "bench-r2"],
                "fallbacks": ["bench"],
                "defaults": {"temperature": 0.7, "max_tokens_cap": 64, "system_prompt": "You are terse."},
            },
        },
        "router": {"auto": {"routine": "bench-routed", "moderate": "bench-routed", "complex": "bench-routed"}},
    }


def body_for(name: str) -> dict[str, object]:
    return {"model": name, "messages": MESSAGES, "max_tokens": 16, "user": "bench-user"}


def start_gateway(upstream: Target, work_dir: Path, cpus: set[int] | None) -> tuple[Service, Target]:
    import yaml

    cfg = work_dir / "gpufleet.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(upstream.base_url)))
    port = free_port()
    argv = [str(gpufleet_exe()), "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    svc = start_service("gpufleet", argv, work_dir, cpus)
    wait_ready(svc, f"http://127.0.0.1:{port}/health", 60)
    return svc, Target("gpufleet", f"http://127.0.0.1:{port}/v1")


def wrk(
    target: Target, name: str, connections: int, duration_s: float, work_dir: Path, cpus: set[int] | None
) -> Sample:
    import subprocess

    script = work_dir / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body_for(name)))}\n"
    )
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        f"{target.base_url}/chat/completions",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=pin_to(cpus), check=True)
    return parse_wrk(out.stdout)


def in_process_cost(iterations: int) -> dict[str, float]:
    """µs per request of the router's own work for each name (median of 5 runs)."""
    from gpufleet.config import parse_config
    from gpufleet.gateway.dialect_binding import dialect_for
    from gpufleet.router import ModelTable
    from gpufleet.router.defaults import apply_request_defaults
    from gpufleet.router.health import HealthBoard
    from gpufleet.router.select import TargetSelector, session_key

    config = parse_config(gateway_config("http://127.0.0.1:1/v1"))
    table = ModelTable(config, {n: dialect_for(n, m) for n, m in config.models.items()})
    selector = TargetSelector(HealthBoard(table.targets, config.router))
    costs = {}
    for name in NAMES:
        payload = body_for(name)

        def one(payload: dict[str, object] = payload) -> None:
            route = table.resolve(payload["model"], payload)  # type: ignore[arg-type]
            session = session_key(None, payload) if route.affinity else None
            candidate = selector.order(route, session=session, max_attempts=3)[0]
            if candidate.has_defaults:
                apply_request_defaults(payload, candidate.defaults, kind="chat")

        runs = []
        for _ in range(5):
            start = time.perf_counter_ns()
            for _ in range(iterations):
                one()
            runs.append((time.perf_counter_ns() - start) / iterations / 1e3)
        costs[name] = statistics.median(runs)
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--proxy-cpu", default="1")
    parser.add_argument("--load-cpus", default="0")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is required (apt-get install -y wrk)")
    proxy_cpus = parse_cpus(args.proxy_cpu) if args.pin else None
    load_cpus = parse_cpus(args.load_cpus) if args.pin else None
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    work_dir = Path(tempfile.mkdtemp(prefix="router-overhead-"))
    print(f"machine: {machine_line()}\ngpufleet: {source_revision()}\nlogs: {work_dir}", flush=True)
    costs = in_process_cost(20_000)
    print("router work in-process (µs/request): " + ", ".join(f"{n} {c:.1f}" for n, c in costs.items()))
    p50: dict[tuple[str, int], list[float]] = {}
    rps: dict[tuple[str, int], list[float]] = {}
    with services() as started:
        up_svc, upstream = start_upstream(work_dir, load_cpus)
        started.append(up_svc)
        gw_svc, gateway = start_gateway(upstream, work_dir, proxy_cpus)
        started.append(gw_svc)
        for rep in range(args.repeat):
            for connections in (1, 16):
                for name in NAMES:
                    wrk(gateway, name, connections, 1, work_dir, load_cpus)  # warm-up
                    sample = wrk(gateway, name, connections, args.duration, work_dir, load_cpus)
                    if sample.errors:
                        raise SystemExit(f"{name}: {sample.errors} errors\n{sample.raw}")
                    p50.setdefault((name, connections), []).append(sample.p50_ms)
                    rps.setdefault((name, connections), []).append(sample.requests_per_s)
                    print(
                        f"  [{rep + 1}/{args.repeat}] c{connections:<3} {name:<13} {sample.requests_per_s:>8,.0f} "
                        f"req/s  p50 {sample.p50_ms:.3f} ms",
                        flush=True,
                    )
    print("\n| name | c1 p50 (ms) | c1 added p50 vs bench (ms) | c16 req/s | c16 req/s ÷ bench |")
    print("|---|---|---|---|---|")
    base_p50 = statistics.median(p50[("bench", 1)])
    base_rps = statistics.median(rps[("bench", 16)])
    for name in NAMES:
        m50 = statistics.median(p50[(name, 1)])
        mrps = statistics.median(rps[(name, 16)])
        print(f"| {name} | {m50:.3f} | {m50 - base_p50:+.3f} | {mrps:,.0f} | {mrps / base_rps:.3f} |")
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
