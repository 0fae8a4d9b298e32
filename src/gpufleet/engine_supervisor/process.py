"""One engine OS process: a child process group (gpufleet/child_process.py) started from a LaunchSpec, whose stop
also runs the spec's stop command."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from gpufleet.child_process import ChildProcess
from gpufleet.engines.base import LaunchSpec


class EngineProcess(ChildProcess):
    """A running engine child process with its log."""

    def __init__(self, spec: LaunchSpec, log_path: Path, on_line: Callable[[str], None] | None = None) -> None:
        super().__init__(spec.argv, spec.env, log_path, cwd=spec.cwd, on_line=on_line)
        self.spec = spec

    async def stop(self, grace_s: float = 10) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace_s`, then run the spec's stop_argv; returns the
        exit code."""
        code = await super().stop(grace_s)
        await self._run_stop_argv()
        return code

    async def reap_after_exit(self) -> None:
        """After the engine exited on its own: kill what is left of its group and run the stop command (a crashed
        vLLM's workers, or the container of a `docker run` that died, would keep the GPU from its restart)."""
        self.kill_leftovers()
        await self._run_stop_argv()

    async def _run_stop_argv(self, timeout_s: float = 30) -> None:
        # `docker run` proxies SIGTERM to its container, but a SIGKILLed client leaves the container running.
        if not self.spec.stop_argv:
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.spec.stop_argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            return
        try:
            await asyncio.wait_for(proc.wait(), timeout=timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
