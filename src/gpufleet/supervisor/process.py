"""One engine OS process: spawn it, keep its log (file + recent lines), stop it without leaving orphans."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from gpufleet.engines.base import LaunchSpec

_PR_SET_PDEATHSIG = 1
_MAX_LOG_BYTES = 20 * 1024 * 1024


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the gateway dies (even by SIGKILL) the kernel sends the
    # engine SIGTERM, so no engine outlives its gateway. Linux only; elsewhere the engine's own ppid watch helps.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class EngineProcess:
    """A running engine child process with its log."""

    def __init__(self, spec: LaunchSpec, log_path: Path, on_line: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.log_path = log_path
        self._on_line = on_line
        self._recent: deque[str] = deque(maxlen=200)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def spawn(self) -> None:
        """Start the process; its stdout+stderr go to the log file and the recent-lines buffer."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > _MAX_LOG_BYTES:
            self.log_path.unlink()
        env = {**os.environ, **self.spec.env}
        self._proc = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=self.spec.cwd,
            start_new_session=True,  # own process group: we stop the engine and all its workers together
            preexec_fn=_die_with_parent,
        )
        self.started_at = time.monotonic()
        self._reader = asyncio.create_task(self._read_output(), name=f"log-reader-{self._proc.pid}")

    async def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self.log_path.open("a", encoding="utf-8", errors="replace") as log:
            log.write(f"=== gpufleet: started pid {self._proc.pid}: {' '.join(self.spec.argv)}\n")
            log.flush()
            while True:
                try:
                    raw = await self._proc.stdout.readline()
                except ValueError:  # a line longer than the stream limit: skip it, keep reading
                    continue
                if not raw:
                    break
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                self._recent.append(line)
                log.write(line + "\n")
                log.flush()
                if self._on_line is not None:
                    self._on_line(line)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the engine printed (for error messages)."""
        return "\n".join(list(self._recent)[-lines:])

    async def wait(self) -> int:
        """Wait for the process to exit; returns its exit code."""
        assert self._proc is not None
        code = await self._proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, timeout=2)
        return code

    async def stop(self, grace_s: float) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace_s`, then run the spec's stop_argv; returns the
        exit code."""
        if self._proc is None or self._proc.returncode is not None:
            await self._run_stop_argv()
            return self.returncode
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), timeout=grace_s)
        except TimeoutError:
            self._signal_group(signal.SIGKILL)
            await self._proc.wait()
        # Workers that ignored SIGTERM (vLLM engine cores) must not outlive the engine.
        self._signal_group(signal.SIGKILL)
        code = await self.wait()
        await self._run_stop_argv()
        return code

    async def _run_stop_argv(self, timeout_s: float = 30) -> None:
        # `docker run` proxies SIGTERM to its container, but a SIGKILLed client leaves the container running.
        if not self.spec.stop_argv:
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.spec.stop_argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            return
        try:
            await asyncio.wait_for(proc.wait(), timeout=timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
