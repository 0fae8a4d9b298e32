"""What the Ray cluster looks like, read from the dashboard's state API (pure: JSON in, views out).

`GET http://127.0.0.1:8265/api/v0/nodes` (what `ray list nodes` reads) answers

    {"result": true, "data": {"result": {"result": [
        {"node_id": "50b1…", "node_ip": "10.213.0.1", "is_head_node": true, "state": "ALIVE",
         "state_message": null, "resources_total": {"GPU": 1.0, "CPU": 1.0, …}, "labels": {"gpufleet.io/vllm": …}},
        {"node_ip": "10.213.0.2", "state": "DEAD",
         "state_message": "Unexpected termination: health check failed due to missing too many heartbeats", …}]}}}

(recorded from Ray 2.60). A worker that rejoins is a new node with the same IP; the dead entry stays, so a host
counts as up when any node with its address is ALIVE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpufleet.cluster.ray_commands import LABEL_PREFIX


@dataclass(frozen=True)
class RayNode:
    """One node as the state API lists it."""

    ip: str
    alive: bool
    is_head: bool = False
    gpus: float = 0.0
    state_message: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def fact(self, key: str) -> str | None:
        """A fact `gpufleet node join` (or the head) put in the node's labels; None when absent/unknown."""
        value = self.labels.get(LABEL_PREFIX + key)
        return None if value in (None, "unknown") else value


@dataclass(frozen=True)
class ClusterView:
    """Expected hosts against the live cluster: ready when every host is up and the GPUs are there."""

    expected: tuple[str, ...]
    up: tuple[str, ...]
    missing: tuple[str, ...]
    gpus: float
    gpus_needed: int
    lost_messages: Mapping[str, str] = field(default_factory=dict)  # host → Ray's reason it is DEAD

    @property
    def ready(self) -> bool:
        return not self.missing and self.gpus >= self.gpus_needed

    def progress(self) -> str:
        """The startup phase /status shows: `ray: 1/2 nodes, 1/2 GPUs (waiting for 10.0.0.2)`."""
        line = f"ray: {len(self.up)}/{len(self.expected)} nodes, {self.gpus:g}/{self.gpus_needed} GPUs"
        if self.missing:
            return f"{line} (waiting for {', '.join(self.missing)})"
        if not self.ready:
            return f"{line} (the nodes show fewer GPUs than tensor × pipeline parallel size)"
        return line

    def snapshot(self) -> dict[str, Any]:
        """JSON view for /status."""
        return {
            "nodes_up": len(self.up),
            "nodes_expected": len(self.expected),
            "gpus": self.gpus,
            "gpus_needed": self.gpus_needed,
            "missing": list(self.missing),
            "ready": self.ready,
        }


class StateApiError(ValueError):
    """The state API answered something that is not a node list."""


def parse_nodes(payload: Any) -> list[RayNode]:
    """The nodes in a `/api/v0/nodes` answer; StateApiError for anything else (an error body, another shape)."""
    try:
        if payload.get("result") is not True:
            raise StateApiError(f"Ray state API error: {payload.get('msg') or payload!r}"[:300])
        rows = payload["data"]["result"]["result"]
        return [
            RayNode(
                ip=str(row["node_ip"]),
                alive=row["state"] == "ALIVE",
                is_head=bool(row.get("is_head_node")),
                gpus=float((row.get("resources_total") or {}).get("GPU", 0.0)),
                state_message=row.get("state_message"),
                labels=dict(row.get("labels") or {}),
            )
            for row in rows
        ]
    except (AttributeError, KeyError, TypeError) as err:
        raise StateApiError(f"unexpected Ray state API answer ({err!r}): {str(payload)[:200]}") from None


def assess(expected: Sequence[str], gpus_needed: int, nodes: Sequence[RayNode]) -> ClusterView:
    """Which expected hosts are up (by IP), the GPUs they give, and why the others are gone."""
    alive_ips = {n.ip for n in nodes if n.alive}
    up = tuple(host for host in expected if host in alive_ips)
    missing = tuple(host for host in expected if host not in alive_ips)
    gpus = sum(n.gpus for n in nodes if n.alive and n.ip in expected)
    lost = {n.ip: n.state_message or "dead" for n in nodes if not n.alive and n.ip in missing}
    return ClusterView(tuple(expected), up, missing, gpus, gpus_needed, lost)


def lost_reason(before: ClusterView, now: ClusterView) -> str | None:
    """Why a ready cluster no longer is: `ray worker 10.0.0.2 lost (…)`; None while every host is still up."""
    gone = [host for host in before.up if host in now.missing]
    if not gone:
        return None
    parts = []
    for host in gone:
        why = now.lost_messages.get(host)
        role = "head" if host == now.expected[0] else "worker"
        parts.append(f"ray {role} {host} lost" + (f" ({why})" if why else ""))
    return "; ".join(parts)
