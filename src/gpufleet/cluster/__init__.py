"""Multi-node serving over Ray: the head gpufleet runs for a model with `nodes:`, workers that join it, and the
facts the nodes must agree on. (The config checks of `nodes:` live in config/nodes.py.)

- ray_commands.py — pure: `ray start` command lines, vLLM's distributed flags and RAY_ADDRESS, node labels
- ray_state.py    — pure: the state API's node list → which hosts are up, GPUs, the reason one was lost
- ray_process.py  — one `ray start --block` process group
- ray_cluster.py  — the head's lifecycle: bring up, wait for the nodes, watch, stop
- node_join.py    — `gpufleet node join HEAD`: a worker that stays joined
- node_facts.py   — versions, driver and NCCL interface of a node (published as Ray labels)
"""

from __future__ import annotations

from gpufleet.cluster.ray_commands import distributed_launch, head_address
from gpufleet.cluster.ray_state import ClusterView, RayNode, assess, lost_reason, parse_nodes

__all__ = ["ClusterView", "RayNode", "assess", "distributed_launch", "head_address", "lost_reason", "parse_nodes"]
