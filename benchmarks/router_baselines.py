"""The Rust routers as comparison targets: vllm-router and sglang-router from PyPI.

Each is installed on first use into its own throwaway venv (``benchmarks/.venv-<name>``, gitignored)
and started with one worker, the fixed upstream, so that it relays exactly what gpufleet relays.
Both are Rust (pyo3) programs under a Python launcher; the serving threads live in the one
process started here, which renames itself (``vllm::router``, ``sglang::router``).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import BENCH_DIR, Service, Target, free_port, start_service, wait_ready


@dataclass(frozen=True)
class RouterPackage:
    """One router on PyPI: the pinned version and how to launch it."""

    name: str  # target name, PyPI distribution and venv suffix
    version: str
    launch: tuple[str, ...]  # argv after the venv's python

    @property
    def venv(self) -> Path:
        """The throwaway venv it is installed into."""
        return BENCH_DIR / f".venv-{self.name}"

    @property
    def spec(self) -> str:
        """The pip requirement."""
        return f"{self.name}=={self.version}"


# The versions measured in issue 22 (newest on PyPI at writing: vllm-router 0.1.17, sglang-router 0.3.2).
VLLM_ROUTER = RouterPackage("vllm-router", "0.1.17", ("-m", "vllm_router.launch_router"))
SGLANG_ROUTER = RouterPackage("sglang-router", "0.3.2", ("-m", "sglang_router.launch_router"))
ROUTERS = {r.name: r for r in (VLLM_ROUTER, SGLANG_ROUTER)}


def installed_version(router: RouterPackage) -> str | None:
    """The version in the router's venv, or None if it is missing."""
    py = router.venv / "bin" / "python"
    if not py.exists():
        return None
    code = f"import importlib.metadata as m; print(m.version({router.name!r}))"
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_router(router: RouterPackage) -> None:
    """Install ``router.spec`` into its venv unless that version is there already."""
    if installed_version(router) == router.version:
        return
    print(f"installing {router.spec} into {router.venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(router.venv)], check=True)
    subprocess.run([str(router.venv / "bin" / "pip"), "install", "-q", router.spec], check=True)


def start_router(name: str, upstream: Target, log_dir: Path, cpus: set[int] | None) -> tuple[Service, Target]:
    """Router ``name`` in front of the upstream (one worker, round robin, log level error), on ``cpus``."""
    router = ROUTERS[name]
    ensure_router(router)
    port = free_port()
    worker = upstream.base_url.removesuffix("/v1")
    argv = [str(router.venv / "bin" / "python"), *router.launch, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--worker-urls", worker, "--policy", "round_robin", "--log-level", "error"]
    # Both start a Prometheus exporter on a fixed default port (29000): two at once collide.
    argv += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    svc = start_service(name, argv, log_dir, cpus)
    wait_ready(svc, f"http://127.0.0.1:{port}/health", 120)
    return svc, Target(name, f"http://127.0.0.1:{port}/v1")


def routers_versions() -> str:
    """'vllm-router 0.1.17; sglang-router 0.3.2' (absent where not installed)."""
    return "; ".join(f"{r.name} {installed_version(r) or 'absent'}" for r in ROUTERS.values())
