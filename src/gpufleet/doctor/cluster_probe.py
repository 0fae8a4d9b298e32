"""Collect what doctor/cluster_checks.py looks at for a multi-node model: this host's facts, the Ray state API's
nodes and their labels, and whether the head's GCS port answers on the cluster address."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request

from gpufleet.cluster.node_facts import collect_node_facts, facts_from_node, is_local_address
from gpufleet.cluster.node_join import port_open
from gpufleet.cluster.ray_auth import auth_enabled, read_token, state_api_headers, token_path
from gpufleet.cluster.ray_commands import DEFAULT_DASHBOARD_PORT, head_address, split_head
from gpufleet.cluster.ray_state import RayNode, StateApiError, parse_nodes
from gpufleet.config import VllmModel
from gpufleet.doctor.cluster_checks import ClusterFacts
from gpufleet.engines.vllm_resolve import resolve_python
from gpufleet.errors import EngineError


def read_state_nodes(
    dashboard_port: int, timeout_s: float = 5, headers: dict[str, str] | None = None
) -> list[RayNode] | None:
    """The nodes the local Ray dashboard lists; None when it does not answer (no cluster)."""
    url = f"http://127.0.0.1:{dashboard_port}/api/v0/nodes?limit=1000"
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return parse_nodes(json.loads(resp.read()))
    except (OSError, urllib.error.URLError, ValueError, StateApiError):
        return None


def _token_headers(model: VllmModel) -> dict[str, str]:
    """The head's Ray token header, when token auth is on and this host holds the token (the head does)."""
    if not auth_enabled(model.ray):
        return {}
    try:
        return state_api_headers(read_token(token_path(model.ray)))
    except EngineError:
        return {}  # not the head, or no model started yet: the state API then reads as "no cluster"


def probe_cluster(name: str, model: VllmModel) -> ClusterFacts:
    """Facts for `gpufleet doctor --config` about one model with `nodes:`."""
    head = model.nodes[0]
    python: str = model.python or "python3"
    with contextlib.suppress(EngineError):  # versions then read as unknown; the engine's finding names it
        python = str(resolve_python(model.ray.python if model.ray and model.ray.python else model.python, model.device))
    peer = model.nodes[1] if len(model.nodes) > 1 else None
    local = collect_node_facts(head, python, peer, model.env)
    nodes = read_state_nodes(
        model.ray.dashboard_port if model.ray else DEFAULT_DASHBOARD_PORT, headers=_token_headers(model)
    )
    joined = {}
    for node in nodes or []:
        if node.alive and node.ip in model.nodes[1:]:
            facts = facts_from_node(node)
            joined[node.ip] = (
                facts if any(node.labels.get(k) for k in node.labels if k.startswith("gpufleet.io/")) else None
            )
    host, port = split_head(head_address(model))
    local_head = is_local_address(head)
    return ClusterFacts(
        model=name,
        nodes=tuple(model.nodes),
        head_address=head_address(model),
        head_is_local=local_head,
        local=local,
        cluster_up=nodes is not None,
        joined=joined,
        gcs_reachable=port_open(host, port) if local_head else None,  # only this host's own port is probed
    )
