"""`gpufleet doctor --config` on a multi-node model: pure cross-node checks over collected facts (tables), and the
command on a config whose cluster is not running."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.cluster.node_facts import NodeFacts
from gpufleet.doctor.cluster_checks import ClusterFacts, check_cluster, nccl_uses

HEAD, WORKER = "192.168.100.10", "192.168.100.11"
GOOD = NodeFacts(
    HEAD,
    vllm="0.10.2",
    torch="2.8.0",
    nccl="2.27.3",
    ray="2.49.1",
    driver="580.95.05",
    route_if="enp1s0f0np0",
    if_count=1,
)


def cluster(**changes: Any) -> ClusterFacts:
    base = ClusterFacts(
        model="qwen3-235b-awq",
        nodes=(HEAD, WORKER),
        head_address=f"{HEAD}:6379",
        head_is_local=True,
        local=GOOD,
        cluster_up=True,
        joined={WORKER: replace(GOOD, address=WORKER)},
        gcs_reachable=True,
    )
    return replace(base, **changes)


def problems(facts: ClusterFacts) -> list[tuple[str, str, str, str]]:
    return [(f.check, f.level, f.seen, f.fix or "") for f in check_cluster(facts) if f.level != "ok"]


def test_matching_nodes_have_no_problems() -> None:
    assert problems(cluster()) == []
    assert {f.check for f in check_cluster(cluster())} == {
        "ray-head",
        "ray-ports",
        "ray-nodes",
        "cluster-versions",
        "nccl-interface",
    }


@pytest.mark.parametrize(
    ("facts", "check", "level", "seen", "fix"),
    [
        (
            cluster(head_is_local=False),
            "ray-head",
            "error",
            "the head 192.168.100.10 (first of nodes:) is not an address of this host",
            "run gpufleet serve on the head",
        ),
        (
            cluster(gcs_reachable=False),
            "ray-ports",
            "error",
            "Ray GCS 192.168.100.10:6379 does not accept connections",
            "open TCP 6379 to the workers",
        ),
        (
            cluster(cluster_up=False, joined={}),
            "ray-nodes",
            "warn",
            "the Ray cluster is not running",
            "`gpufleet node join 192.168.100.10:6379` on each worker",
        ),
        (
            cluster(joined={}),
            "ray-nodes",
            "error",
            "worker 192.168.100.11 has not joined",
            "on 192.168.100.11 run `gpufleet node join 192.168.100.10:6379`",
        ),
        (
            cluster(joined={WORKER: None}),
            "ray-nodes",
            "warn",
            "joined without `gpufleet node join`",
            "join it with `gpufleet node join 192.168.100.10:6379`",
        ),
        (
            cluster(joined={WORKER: replace(GOOD, address=WORKER, vllm="0.11.0")}),
            "cluster-versions",
            "error",
            "vLLM differs across nodes (192.168.100.10: 0.10.2, 192.168.100.11: 0.11.0)",
            "install vLLM 0.10.2 on every node",
        ),
        (
            cluster(joined={WORKER: replace(GOOD, address=WORKER, nccl="2.21.5")}),
            "cluster-versions",
            "error",
            "NCCL differs across nodes (192.168.100.10: 2.27.3, 192.168.100.11: 2.21.5)",
            "install NCCL 2.27.3",
        ),
        (
            cluster(joined={WORKER: replace(GOOD, address=WORKER, ray="2.48.0")}),
            "cluster-versions",
            "error",
            "Ray differs across nodes",
            "install Ray 2.49.1",
        ),
        (
            cluster(joined={WORKER: replace(GOOD, address=WORKER, driver="570.195.03")}),
            "cluster-versions",
            "warn",
            "NVIDIA driver differs across nodes (192.168.100.10: 580.95.05, 192.168.100.11: 570.195.03)",
            "install NVIDIA driver 580.95.05 on every node",
        ),
        (
            cluster(local=replace(GOOD, nccl_socket_ifname="eth0")),
            "nccl-interface",
            "error",
            "192.168.100.10: NCCL_SOCKET_IFNAME=eth0, but the route to the peer goes through enp1s0f0np0",
            "set NCCL_SOCKET_IFNAME=enp1s0f0np0 on 192.168.100.10",
        ),
        (
            cluster(joined={WORKER: replace(GOOD, address=WORKER, gloo_socket_ifname="docker0")}),
            "nccl-interface",
            "error",
            "192.168.100.11: GLOO_SOCKET_IFNAME=docker0, but the route to the peer goes through enp1s0f0np0",
            "set GLOO_SOCKET_IFNAME=enp1s0f0np0 on 192.168.100.11",
        ),
        (
            cluster(local=replace(GOOD, if_count=3)),
            "nccl-interface",
            "warn",
            "192.168.100.10: NCCL_SOCKET_IFNAME is unset and 3 interfaces are up",
            "set NCCL_SOCKET_IFNAME=enp1s0f0np0 and GLOO_SOCKET_IFNAME=enp1s0f0np0 on 192.168.100.10",
        ),
    ],
)
def test_each_cross_node_problem_names_its_fix(
    facts: ClusterFacts, check: str, level: str, seen: str, fix: str
) -> None:
    found = [p for p in problems(facts) if p[0] == check]
    assert len(found) == 1, problems(facts)
    assert found[0][1] == level
    assert seen in found[0][2] and fix in found[0][3], found[0]


@pytest.mark.parametrize(
    ("setting", "interface", "used"),
    [
        ("enp1s0", "enp1s0f0np0", True),  # a prefix
        ("=enp1s0", "enp1s0f0np0", False),  # exact only
        ("eth,enp", "enp1s0f0np0", True),
        ("^docker,lo", "enp1s0f0np0", True),  # excluded: docker*, lo*
        ("^docker,lo", "docker0", False),
        ("ib", "enp1s0f0np0", False),
    ],
)
def test_nccl_socket_ifname_rules(setting: str, interface: str, used: bool) -> None:
    assert nccl_uses(setting, interface) is used


def test_doctor_config_reports_a_foreign_head_and_the_cluster_not_running(tmp_path: Path) -> None:
    # 198.51.100.0/24 (TEST-NET-2) is no address of this host: the doctor says so and probes nothing there; the
    # state API it asks is on 127.0.0.1, where nothing listens on the port chosen here.
    config = {
        "models": {
            "big": {
                "engine": "vllm",
                "model": "/models/m",
                "python": "/nonexistent/python",
                "nodes": ["198.51.100.10", "198.51.100.11"],
                "tensor_parallel_size": 2,
                "ray": {"port": 28637, "dashboard_port": 28638},
            }
        }
    }
    path = tmp_path / "gpufleet.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["doctor", "--config", str(path), "--json"])
    assert result.exit_code == 1, result.output
    found = {f["check"]: f for f in json.loads(result.output)["findings"] if f["check"].startswith("ray")}
    assert found["ray-head"]["level"] == "error" and "is not an address of this host" in found["ray-head"]["seen"]
    assert "ray-ports" not in found
    assert found["ray-nodes"]["level"] == "warn" and "not running" in found["ray-nodes"]["seen"]
