"""A `ray start --block` child: its own process group (Ray's GCS, raylet, dashboard and workers go with it), its
log in a file plus the last lines in memory, and a stop that leaves nothing behind.

Never `ray stop`: it kills every Ray process of the machine, other users' and other nodes' on the same host too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections import deque
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # In the child before exec: if gpufleet dies (even SIGKILL) the kernel SIGTERMs `ray start`, which stops
    # the Ray processes it started; no head outlives its gateway.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RayProcess:
    """One `ray start --block` process group."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self._recent: deque[str] = deque(maxlen=100)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

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
        """Start it in a new session; stdout+stderr go to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._reader = asyncio.create_task(self._read_output(), name=f"ray-log-{self._proc.pid}")

    async def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self.log_path.open("a", encoding="utf-8", errors="replace") as log:
            log.write(f"=== gpufleet: started pid {self._proc.pid}: {' '.join(self.argv)}\n")
            while True:
                try:
                    raw = await self._proc.stdout.readline()
                except ValueError:
                    continue
                if not raw:
                    break
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                self._recent.append(line)
                log.write(line + "\n")
                log.flush()

    def log_tail(self, lines: int = 15) -> str:
        """The last lines it printed."""
        return "\n".join(list(self._recent)[-lines:])

    async def wait(self) -> int:
        """Until it exits; its exit code."""
        assert self._proc is not None
        code = await self._proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, timeout=2)
        return code

    async def stop(self, grace_s: float = 10) -> None:
        """SIGTERM the group (`ray start --block` stops its services), SIGKILL what is left after `grace_s`."""
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), timeout=grace_s)
        # Ray's services and workers share the group; whatever ignored SIGTERM goes now.
        self._signal(signal.SIGKILL)
        await self.wait()

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
