"""Process and machine plumbing shared by the benchmarks: start, pin, wait for and stop services."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"


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


@dataclass(frozen=True)
class Target:
    """One thing to measure: a name and the base URL (ending in ``/v1``) to load."""

    name: str
    base_url: str


def gpufleet_exe() -> Path:
    """The ``gpufleet`` console script beside this interpreter (the project's venv)."""
    exe = Path(sys.executable).parent / "gpufleet"
    if not exe.exists():
        raise SystemExit(f"{exe} not found: run this with the project's venv (.venv/bin/python)")
    return exe


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


def source_revision() -> str:
    """The checkout's commit, marked '+dirty' when src/ has uncommitted changes (others edit it live)."""

    def git(*argv: str) -> str:
        out = subprocess.run(["git", "-C", str(BENCH_DIR), *argv], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "../src") else "")


def export_source(rev: str, work_dir: Path) -> tuple[str, Path]:
    """``src/`` at git revision ``rev``, exported under ``work_dir``: (target name, path to put on PYTHONPATH)."""
    root = Path(__file__).resolve().parent.parent
    found = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        # A mistyped --baseline ends the run with the reason, not a CalledProcessError traceback.
        print(f"error: --baseline {rev!r}: not a commit of {root}", file=sys.stderr)
        raise SystemExit(2)
    short = found.stdout.strip()
    dest = work_dir / f"src-{short}"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", short, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return f"gpufleet@{short}", dest / "src"
