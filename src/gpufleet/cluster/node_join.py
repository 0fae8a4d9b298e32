"""`gpufleet node join HEAD` on a worker: join the head's Ray cluster and stay joined.

    wait until HEAD:6379 accepts TCP ──► `ray start --block --address HEAD` ──► exits (head gone, node marked
    dead, killed) ──► wait retry_s ──► again …      SIGTERM/SIGINT ──► stop Ray's process group, exit 0

Run it under systemd (`Restart=always`) or as a container's command; it publishes this node's versions and NCCL
interface as Ray labels for the head's `gpufleet doctor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gpufleet.cluster.node_facts import NodeFacts, collect_node_facts
from gpufleet.cluster.ray_auth import AUTH_MODE_ENV, TOKEN_VALUE_ENV, auth_env, looks_refused
from gpufleet.cluster.ray_commands import worker_start_argv
from gpufleet.cluster.ray_process import RayProcess


@dataclass(frozen=True)
class JoinSettings:
    """What `gpufleet node join` was told."""

    head_host: str
    head_port: int
    node_ip: str
    python: Path
    temp_dir: Path
    log_path: Path
    num_gpus: int | None = None
    num_cpus: int | None = None
    object_store_mib: int | None = None
    retry_s: float = 5.0
    max_joins: int | None = None  # stop after this many `ray start` runs (None: forever)
    # The head's Ray token: a file (mode 0600) or the value; both None only with auth off (`--no-auth`).
    token_file: Path | None = None
    token: str | None = field(default=None, repr=False)

    def ray_env(self) -> dict[str, str]:
        """The token-mode environment of the worker's `ray start` (empty with auth off)."""
        if self.token_file is not None:
            return auth_env(self.token_file)
        if self.token is not None:
            return {AUTH_MODE_ENV: "token", TOKEN_VALUE_ENV: self.token}
        return {}

    @property
    def head(self) -> str:
        return f"[{self.head_host}]:{self.head_port}" if ":" in self.head_host else f"{self.head_host}:{self.head_port}"


def port_open(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether `host:port` accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


async def join_forever(settings: JoinSettings, say: Callable[[str], None] | None = None) -> int:
    """Keep this node in the head's cluster until SIGTERM/SIGINT (exit code 0) or `max_joins` runs."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    facts = await _node_facts(settings, say)
    if facts is None:
        return 2
    joins = 0
    while not stop.is_set() and (settings.max_joins is None or joins < settings.max_joins):
        if not await asyncio.to_thread(port_open, settings.head_host, settings.head_port):
            say(
                f"waiting for the head {settings.head} (Ray GCS port {settings.head_port} not reachable yet;"
                " is gpufleet serve running there, and the port open in its firewall?)"
            )
            await _pause(stop, settings.retry_s)
            continue
        joins += 1
        outcome = await _join_once(settings, facts, stop, say)
        if outcome == "stopped":
            break
        if outcome == "refused":
            return 2
        await _pause(stop, settings.retry_s)
    return 0


async def _node_facts(settings: JoinSettings, say: Callable[[str], None]) -> NodeFacts | None:
    """This node's versions and route to the head, said aloud; None (after saying why) without Ray."""
    facts: NodeFacts = await asyncio.to_thread(
        collect_node_facts, settings.node_ip, settings.python, settings.head_host
    )
    say(
        f"node {settings.node_ip}: vLLM {facts.vllm or '-'}, Ray {facts.ray or '-'}, NCCL {facts.nccl or '-'},"
        f" driver {facts.driver or '-'}, route to the head via {facts.route_if or '?'}"
    )
    if facts.ray is None:
        say(
            f"error: Ray is not installed for {settings.python}; install it there (pip install 'ray[default]')"
            " or pass --python with the interpreter of vLLM's environment"
        )
        return None
    return facts


async def _join_once(
    settings: JoinSettings, facts: NodeFacts, stop: asyncio.Event, say: Callable[[str], None]
) -> Literal["stopped", "refused", "exited"]:
    """One `ray start --block` run, until we are told to stop or Ray exits (refused: the head rejected our token)."""
    argv = worker_start_argv(
        settings.python,
        settings.head,
        settings.node_ip,
        settings.temp_dir,
        facts.labels(),
        num_gpus=settings.num_gpus,
        num_cpus=settings.num_cpus,
        object_store_mib=settings.object_store_mib,
    )
    process = RayProcess(argv, settings.ray_env(), settings.log_path)
    started = time.monotonic()
    await process.spawn()
    say(f"joining {settings.head} as {settings.node_ip} (ray pid {process.pid}, log {settings.log_path})")
    exited = asyncio.ensure_future(process.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if stop.is_set():
        say("stopping: leaving the cluster")
        await process.stop()
        return "stopped"
    await process.stop()  # its group may hold services that outlived `ray start`
    if looks_refused(process.log_tail(40)):
        say(
            f"error: the head {settings.head} refused this node's Ray token; copy the head's token file"
            " (<cache>/ray/auth_token there) again and pass it with --token-file"
        )
        return "refused"
    say(
        f"ray exited with code {process.returncode} after {time.monotonic() - started:.0f} s;"
        f" rejoining in {settings.retry_s:g} s\n{process.log_tail(5)}"
    )
    return "exited"


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less when a stop comes in."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
