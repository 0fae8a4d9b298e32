"""One child command in its own process group: spawn it, keep its output (a log file and the last lines in memory),
stop it with its whole group so nothing is left behind.

Engines (engine_supervisor/process.py) and Ray nodes (cluster/ray_process.py) both run as this.
engine_supervisor/ imports cluster/, so cluster/ cannot import engine_supervisor/, and an engine process is no part
of cluster/: it lives below both and imports only the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_MAX_LOG_BYTES = 20 * 1024 * 1024  # a log file past this is started afresh at the next spawn
RECENT_LINES = 200  # kept in memory per process: error messages and the console's log tail


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if gpufleet dies (even by SIGKILL) the kernel SIGTERMs the child,
    # so no engine or `ray start` outlives its gateway. Linux only; elsewhere an engine's own ppid watch helps.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildProcess:
    """A child command leading its own process group, with its log.

    `kill_group_after_exit`: also SIGKILL the group at stop() when the leader has already exited. Needed where the
    leader's children outlive it in the group (Ray: `ray start` exits while raylet, gcs_server and workers stay).
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: str | None = None,
        on_line: Callable[[str], None] | None = None,
        kill_group_after_exit: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.kill_group_after_exit = kill_group_after_exit
        self._on_line = on_line
        self._recent: deque[str] = deque(maxlen=RECENT_LINES)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def spawn(self) -> None:
        """Start it in a new session (its own process group); stdout+stderr go to the log file and the
        recent-lines buffer."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > _MAX_LOG_BYTES:
            self.log_path.unlink()
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,  # own process group: stop() takes the leader and all its workers together
            preexec_fn=_die_with_parent,
        )
        self.started_at = time.monotonic()
        self._reader = asyncio.create_task(self._read_output(), name=f"log-reader-{self._proc.pid}")

    async def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self.log_path.open("a", encoding="utf-8", errors="replace") as log:
            log.write(f"=== gpufleet: started pid {self._proc.pid}: {' '.join(self.argv)}\n")
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
        """The last lines it printed (for error messages)."""
        return "\n".join(self.recent_lines(lines))

    def recent_lines(self, lines: int) -> list[str]:
        """The last `lines` lines it printed, oldest first (at most RECENT_LINES are kept)."""
        return list(self._recent)[-lines:] if lines > 0 else []

    async def wait(self) -> int:
        """Wait for the leader to exit; returns its exit code."""
        assert self._proc is not None
        code = await self._proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, timeout=2)
        return code

    async def stop(self, grace_s: float = 10) -> int | None:
        """SIGTERM the group, SIGKILL it after `grace_s`; returns the leader's exit code (None if never spawned)."""
        if self._proc is None:
            return None
        if self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), timeout=grace_s)
        elif not self.kill_group_after_exit:
            return self._proc.returncode
        # Members that ignored SIGTERM (vLLM's engine cores) or outlived their leader (Ray's services) go now.
        self._signal_group(signal.SIGKILL)
        return await self.wait()

    def kill_leftovers(self) -> None:
        """SIGKILL what is left of the group once its leader exited on its own (a crash). A crashed vLLM server can
        leave its EngineCore and TP workers behind, holding GPU memory that the restart then cannot get."""
        if self._proc is not None and self._proc.returncode is not None:
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
