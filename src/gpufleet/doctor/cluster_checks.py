"""Cross-node checks of a multi-node model (`nodes:`), pure: collected facts in, findings (each with its fix) out.

Facts come from this host (the head) and from the Ray labels every `gpufleet node join` publishes
(cluster/node_facts.py); doctor/cluster_probe.py collects them. What must hold for vLLM over Ray (seed 004):
- the head (first of `nodes:`) is this host, and workers reach its Ray GCS port;
- every node joined, and runs the same vLLM, Ray, torch and NCCL (a Ray of another version cannot join; NCCL of
  another version hangs or fails the first all-reduce), on the same NVIDIA driver;
- NCCL talks over the interface that routes to the peer: NCCL_SOCKET_IFNAME (prefix match, `^` excludes, `=`
  exact) must name it, and when unset NCCL picks among all up interfaces (docker0, virbr0, a management port…).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gpufleet.cluster.node_facts import NodeFacts
from gpufleet.doctor.facts import Finding, Level

# Versions that must agree, and how bad a mismatch is.
_VERSION_KEYS: tuple[tuple[str, str, Level], ...] = (
    ("vllm", "vLLM", "error"),
    ("ray", "Ray", "error"),
    ("torch", "torch", "error"),
    ("nccl", "NCCL", "error"),
    ("driver", "NVIDIA driver", "warn"),
)


@dataclass(frozen=True)
class ClusterFacts:
    """What the doctor saw for one multi-node model."""

    model: str
    nodes: tuple[str, ...]  # as configured, the head first
    head_address: str  # host:port of the Ray GCS
    head_is_local: bool
    local: NodeFacts  # this host's own facts (its environment as the engine gets it)
    cluster_up: bool = False  # the head's state API answered
    joined: Mapping[str, NodeFacts | None] = field(default_factory=dict)  # up hosts → label facts (None: no labels)
    gcs_reachable: bool | None = None  # TCP to the head's GCS port on its cluster address


def nccl_uses(setting: str, interface: str) -> bool:
    """Whether NCCL_SOCKET_IFNAME=`setting` lets NCCL use `interface` (prefixes; `^` excludes; `=` exact)."""
    exclude = setting.startswith("^")
    body = setting[1:] if exclude else setting
    exact = body.startswith("=")
    names = [n for n in (body[1:] if exact else body).split(",") if n]
    matched = any(interface == n if exact else interface.startswith(n) for n in names)
    return not matched if exclude else matched


def check_head(facts: ClusterFacts) -> list[Finding]:
    """The head is this host and its GCS port is reachable on the cluster address."""
    head = facts.nodes[0]
    if not facts.head_is_local:
        return [
            Finding(
                "ray-head",
                "error",
                f"{facts.model}: the head {head} (first of nodes:) is not an address of this host",
                "run gpufleet serve on the head, or list this host's address first in nodes:",
            )
        ]
    out = [Finding("ray-head", "ok", f"{facts.model}: this host is the head {head}")]
    if facts.gcs_reachable is False and facts.cluster_up:
        out.append(
            Finding(
                "ray-ports",
                "error",
                f"Ray GCS {facts.head_address} does not accept connections on the cluster address",
                f"open TCP {facts.head_address.rsplit(':', 1)[1]} to the workers"
                " (firewall), and check the head was started with that address",
            )
        )
    elif facts.gcs_reachable:
        out.append(Finding("ray-ports", "ok", f"Ray GCS {facts.head_address} accepts connections"))
    return out


def check_joined(facts: ClusterFacts) -> list[Finding]:
    """Every node of `nodes:` is in the cluster (and joined through gpufleet, which publishes its facts)."""
    if not facts.cluster_up:
        return [
            Finding(
                "ray-nodes",
                "warn",
                f"{facts.model}: the Ray cluster is not running; cross-node versions are checked once it is",
                "start gpufleet serve on the head (it starts Ray when the model"
                f" starts) and `gpufleet node join {facts.head_address}` on each worker, then run doctor"
                " again",
            )
        ]
    out = []
    for host in facts.nodes[1:]:
        if host not in facts.joined:
            out.append(
                Finding(
                    "ray-nodes",
                    "error",
                    f"worker {host} has not joined the cluster",
                    f"on {host} run `gpufleet node join {facts.head_address}`; it needs TCP to"
                    f" {facts.head_address}, and the head must reach its Ray ports",
                )
            )
        elif facts.joined[host] is None:
            out.append(
                Finding(
                    "ray-nodes",
                    "warn",
                    f"worker {host} joined without `gpufleet node join`: its versions are unknown",
                    f"join it with `gpufleet node join {facts.head_address}`",
                )
            )
    if not out:
        out.append(Finding("ray-nodes", "ok", f"all {len(facts.nodes)} nodes are in the cluster"))
    return out


def check_versions(facts: ClusterFacts) -> list[Finding]:
    """vLLM, Ray, torch, NCCL and the driver are the same on every node that reported them."""
    reported = {facts.nodes[0]: facts.local, **{h: f for h, f in facts.joined.items() if f is not None}}
    out = []
    for key, label, level in _VERSION_KEYS:
        values = {host: getattr(f, key) for host, f in reported.items() if getattr(f, key)}
        if len(set(values.values())) > 1:
            seen = ", ".join(f"{host}: {value}" for host, value in sorted(values.items()))
            want = values.get(facts.nodes[0]) or sorted(values.values())[-1]
            out.append(
                Finding(
                    "cluster-versions",
                    level,
                    f"{label} differs across nodes ({seen})",
                    f"install {label} {want} on every node (the same image tag or lock file everywhere)",
                )
            )
        elif len(values) > 1:
            out.append(
                Finding("cluster-versions", "ok", f"{label} {next(iter(values.values()))} on all {len(values)} nodes")
            )
    return out


def check_interfaces(facts: ClusterFacts) -> list[Finding]:
    """On each node NCCL (and Gloo) use the interface of the route to the peer."""
    reported = {facts.nodes[0]: facts.local, **{h: f for h, f in facts.joined.items() if f is not None}}
    out = []
    for host, node in sorted(reported.items()):
        route = node.route_if
        if route is None:
            continue
        for var, setting in (
            ("NCCL_SOCKET_IFNAME", node.nccl_socket_ifname),
            ("GLOO_SOCKET_IFNAME", node.gloo_socket_ifname),
        ):
            if setting and not nccl_uses(setting, route):
                out.append(
                    Finding(
                        "nccl-interface",
                        "error",
                        f"{host}: {var}={setting}, but the route to the peer goes through {route}",
                        f"set {var}={route} on {host} (models.<name>.env on"
                        " the head, the environment of `gpufleet node join` on a worker)",
                    )
                )
        if not node.nccl_socket_ifname and (node.if_count or 0) > 1:
            out.append(
                Finding(
                    "nccl-interface",
                    "warn",
                    f"{host}: NCCL_SOCKET_IFNAME is unset and {node.if_count}"
                    f" interfaces are up; NCCL may pick one that does not reach the peer (route: {route})",
                    f"set NCCL_SOCKET_IFNAME={route} and GLOO_SOCKET_IFNAME={route} on {host}",
                )
            )
        elif not [f for f in out if f.seen.startswith(f"{host}:")]:
            out.append(Finding("nccl-interface", "ok", f"{host}: NCCL uses {route}, the route to the peer"))
    return out


def check_cluster(facts: ClusterFacts) -> list[Finding]:
    """Every cross-node check of one multi-node model."""
    return [*check_head(facts), *check_joined(facts), *check_versions(facts), *check_interfaces(facts)]
