"""The Ray cluster of one multi-node model, seen from the head (where `gpufleet serve` runs).

    bring_up ──► `ray start --head --block` (own process group) ──► poll the state API until every host of
    `nodes:` is ALIVE with the GPUs tensor × pipeline parallel size needs ("ray: 1/2 nodes, 1/2 GPUs")
    watch    ──► poll again while vLLM runs; a host that was up and is gone → on_lost("ray worker 10.0.0.2 lost")
    stop     ──► SIGTERM, then SIGKILL, the head's process group

Workers are not started from here: each runs `gpufleet node join HEAD` (cluster/node_join.py), which keeps
rejoining, so a worker that comes back is seen by the next bring-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from gpufleet.cluster.node_facts import collect_node_facts, is_local_address
from gpufleet.cluster.ray_auth import (
    auth_enabled,
    auth_env,
    ensure_token_file,
    read_token,
    state_api_headers,
    token_path,
)
from gpufleet.cluster.ray_commands import (
    DEFAULT_DASHBOARD_PORT,
    expected_gpus,
    head_address,
    head_start_argv,
)
from gpufleet.cluster.ray_process import RayProcess
from gpufleet.cluster.ray_state import ClusterView, RayNode, StateApiError, assess, lost_reason, parse_nodes
from gpufleet.config import VllmModel
from gpufleet.errors import EngineError
from gpufleet.model_names import file_stem

log = logging.getLogger("gpufleet.cluster")


def ray_temp_dir(name: str) -> Path:
    """A short per-model temp dir: Ray puts Unix sockets under it, and their paths must stay under 108 bytes."""
    return Path(tempfile.gettempdir()) / "gpufleet-ray" / hashlib.sha256(name.encode()).hexdigest()[:10]


class RayHead:
    """The Ray head of one model: start it, wait for the workers, watch them, stop it."""

    def __init__(
        self, name: str, model: VllmModel, python: Path | str, log_dir: Path, *, poll_interval_s: float = 0.5
    ) -> None:
        assert model.nodes, "a RayHead is for a model with nodes:"
        self.name = name
        self.model = model
        self.python = python
        self.log_path = log_dir / f"{file_stem(name)}.ray-head.log"
        self.poll_interval_s = poll_interval_s
        self.process: RayProcess | None = None
        self.view: ClusterView | None = None
        port = model.ray.dashboard_port if model.ray else DEFAULT_DASHBOARD_PORT
        self.nodes_url = f"http://127.0.0.1:{port}/api/v0/nodes?limit=1000"
        self.state_headers: dict[str, str] = {}  # the token header once the head runs in token mode
        self.refused: str | None = None  # why the state API refused us (401/403), if it did

    @property
    def address(self) -> str:
        return head_address(self.model)

    def snapshot(self) -> dict[str, Any]:
        """JSON view for /status: the head, its process and the latest node count."""
        view = self.view.snapshot() if self.view else None
        return {
            "head": self.address,
            "head_pid": self.process.pid if self.process and self.process.running else None,
            "log_path": str(self.log_path),
            **(view or {}),
        }

    async def ensure_started(self) -> None:
        """Start the head unless it runs; EngineError when this host is not the head or Ray is missing."""
        if self.process is not None and self.process.running:
            return
        head = self.model.nodes[0]
        if not await asyncio.to_thread(is_local_address, head):
            raise EngineError(
                f"models.{self.name}.nodes: the head {head} (the first node) is not an address of this host;"
                " run gpufleet serve on the head, or list this host's address first"
            )
        peer = self.model.nodes[1] if len(self.model.nodes) > 1 else None
        facts = await asyncio.to_thread(collect_node_facts, head, self.python, peer, self.model.env)
        if facts.ray is None:
            raise EngineError(
                f"Ray is not installed for {self.python}: install vLLM's Ray there"
                f" (pip install 'ray[default]'), or set models.{self.name}.ray.python"
            )
        argv = head_start_argv(self.model, self.python, ray_temp_dir(self.name), facts.labels())
        env = dict(self.model.ray.env) if self.model.ray else {}
        if auth_enabled(self.model.ray):
            path = await asyncio.to_thread(ensure_token_file, token_path(self.model.ray))
            self.state_headers = state_api_headers(read_token(path))
            env = {**auth_env(path), **env}
        self.process = RayProcess(argv, env, self.log_path)
        log.info("%s: starting the Ray head at %s", self.name, self.address)
        await self.process.spawn()

    async def read_view(self, http: aiohttp.ClientSession) -> ClusterView | None:
        """The cluster now, None while the state API does not answer (the head is still starting)."""
        nodes = await self.read_nodes(http)
        if nodes is None:
            return None
        self.view = assess(self.model.nodes, expected_gpus(self.model), nodes)
        return self.view

    async def read_nodes(self, http: aiohttp.ClientSession) -> list[RayNode] | None:
        """Every node the state API lists; None while it does not answer."""
        try:
            async with http.get(
                self.nodes_url, headers=self.state_headers, timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return None
        if status in (401, 403):
            # A head in token mode that does not take gpufleet's token: waiting will not change that.
            self.refused = (
                f"the Ray head's state API refused gpufleet's token (HTTP {status}); is another Ray"
                f" head with another token on port {self.nodes_url.split(':')[2].split('/')[0]}?"
            )
            return None
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
        try:
            return parse_nodes(payload)
        except StateApiError as err:
            log.debug("%s: %s", self.name, err)
            return None

    async def bring_up(
        self,
        http: aiohttp.ClientSession,
        deadline: float,
        on_progress: Callable[[str], None],
        gone: Callable[[], bool] = lambda: False,
    ) -> ClusterView | None:
        """Start the head if needed and wait until every node is up with its GPUs; EngineError at the deadline
        or when the head exits; None as soon as `gone()` (the model was stopped meanwhile)."""
        await self.ensure_started()
        assert self.process is not None
        last = "ray: starting the head"
        while not gone():
            if not self.process.running:
                tail = self.process.log_tail(15)
                raise EngineError(
                    f"the Ray head exited with code {self.process.returncode}; see {self.log_path}\n{tail}"
                )
            view = await self.read_view(http)
            if self.refused is not None:
                raise EngineError(f"{self.refused}; see {self.log_path}")
            line = view.progress() if view else "ray: starting the head"
            if line != last:
                on_progress(line)
                last = line
            if view is not None and view.ready:
                return view
            if time.monotonic() >= deadline:
                waiting = ", ".join(view.missing) if view and view.missing else "the head's state API"
                raise EngineError(
                    f"{line} after the wait: on {waiting} run `gpufleet node join {self.address}` (a systemd unit or"
                    " container can keep it running), or raise ready_timeout_s"
                )
            await asyncio.sleep(self.poll_interval_s)
        return None

    async def watch(self, http: aiohttp.ClientSession, on_lost: Callable[[str], None], interval_s: float = 1.0) -> None:
        """Poll until a host that was up is gone, then call `on_lost(reason)` once and return."""
        before = self.view
        while True:
            await asyncio.sleep(interval_s)
            if self.process is None or not self.process.running:
                on_lost(
                    f"the Ray head exited (code {self.process.returncode if self.process else '?'});"
                    f" see {self.log_path}"
                )
                return
            now = await self.read_view(http)
            if now is None or before is None:
                before = before or now
                continue
            reason = lost_reason(before, now)
            if reason is not None:
                on_lost(reason)
                return

    async def stop(self, grace_s: float = 10) -> None:
        """Stop the head and everything in its process group."""
        process, self.process = self.process, None
        self.view = None
        if process is not None:
            log.info("%s: stopping the Ray head", self.name)
            with contextlib.suppress(ProcessLookupError):
                await process.stop(grace_s)
