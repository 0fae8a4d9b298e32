"""Reading the Ray cluster: the state API's node list (answers recorded from Ray 2.60 in two network namespaces:
tests/data/ray/), which hosts are up, the startup phase /status shows, and the reason a host was lost."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gpufleet.cluster.node_facts import facts_from_node, parse_route_dev
from gpufleet.cluster.ray_cluster import RayHead
from gpufleet.cluster.ray_state import RayNode, StateApiError, assess, lost_reason, parse_nodes
from gpufleet.config import VllmModel, parse_config
from gpufleet.errors import EngineError

DATA = Path(__file__).resolve().parent / "data" / "ray"
NODES = ("10.213.0.1", "10.213.0.2")


def recorded(name: str) -> list[RayNode]:
    return parse_nodes(json.loads((DATA / f"nodes-2.60-{name}.json").read_text()))


def test_recorded_answer_lists_both_nodes_with_their_gpus_and_labels() -> None:
    nodes = sorted(recorded("both-alive"), key=lambda n: n.ip)
    assert [(n.ip, n.alive, n.is_head, n.gpus) for n in nodes] == [
        ("10.213.0.1", True, True, 1.0),
        ("10.213.0.2", True, False, 1.0),
    ]
    facts = facts_from_node(nodes[1])
    assert (facts.vllm, facts.nccl, facts.driver, facts.route_if, facts.nccl_socket_ifname) == (
        "0.10.2",
        "2.27.3",
        "580.95.05",
        "gfw1",
        "",
    )


@pytest.mark.parametrize(
    ("name", "up", "missing", "gpus", "ready", "progress"),
    [
        ("both-alive", NODES, (), 2.0, True, "ray: 2/2 nodes, 2/2 GPUs"),
        ("worker-dead", NODES[:1], NODES[1:], 1.0, False, "ray: 1/2 nodes, 1/2 GPUs (waiting for 10.213.0.2)"),
        # The rejoined worker is a new node with the same address; the dead entry stays in the list.
        ("worker-rejoined", NODES, (), 2.0, True, "ray: 2/2 nodes, 2/2 GPUs"),
    ],
)
def test_assess_recorded_cluster_states(
    name: str, up: tuple[str, ...], missing: tuple[str, ...], gpus: float, ready: bool, progress: str
) -> None:
    view = assess(NODES, 2, recorded(name))
    assert (view.up, view.missing, view.gpus, view.ready, view.progress()) == (up, missing, gpus, ready, progress)


def test_nodes_up_but_too_few_gpus_is_not_ready() -> None:
    view = assess(NODES, 4, recorded("both-alive"))
    assert not view.ready
    assert view.progress() == (
        "ray: 2/2 nodes, 2/4 GPUs (the nodes show fewer GPUs than tensor × pipeline parallel size)"
    )


def test_a_node_outside_nodes_does_not_count() -> None:
    view = assess(NODES, 2, [RayNode("10.213.0.1", True, True, 1.0), RayNode("10.213.0.9", True, False, 1.0)])
    assert view.missing == ("10.213.0.2",) and view.gpus == 1.0


@pytest.mark.parametrize(
    ("before", "now", "reason"),
    [
        ("both-alive", "both-alive", None),
        (
            "both-alive",
            "worker-dead",
            "ray worker 10.213.0.2 lost (Unexpected termination: health check failed due to"
            " missing too many heartbeats)",
        ),
        ("worker-dead", "worker-rejoined", None),
    ],
)
def test_lost_reason_names_the_worker_and_rays_cause(before: str, now: str, reason: str | None) -> None:
    assert lost_reason(assess(NODES, 2, recorded(before)), assess(NODES, 2, recorded(now))) == reason


def test_lost_head_is_named_as_the_head() -> None:
    before = assess(NODES, 2, recorded("both-alive"))
    now = assess(NODES, 2, [RayNode("10.213.0.2", True, False, 1.0)])
    assert lost_reason(before, now) == "ray head 10.213.0.1 lost"


@pytest.mark.parametrize(
    "payload",
    [
        {"result": False, "msg": "Failed to connect to GCS"},
        {"result": True, "data": {}},
        [],
        None,
        {"result": True, "data": {"result": {"result": [{"node_ip": "10.0.0.1"}]}}},
    ],
)
def test_state_api_answers_that_are_no_node_list_are_refused(payload: object) -> None:
    with pytest.raises(StateApiError):
        parse_nodes(payload)


@pytest.mark.parametrize(
    ("text", "dev"),
    [
        ("10.213.0.2 dev gfh1 src 10.213.0.1 uid 0 \n    cache \n", "gfh1"),
        ("192.168.100.11 via 192.168.1.1 dev enp1s0f0np0 src 192.168.1.5 uid 0", "enp1s0f0np0"),
        ("RTNETLINK answers: Network is unreachable", None),
    ],
)
def test_route_interface_from_ip_route_get(text: str, dev: str | None) -> None:
    assert parse_route_dev(text) == dev


def test_a_head_that_is_not_this_host_is_refused_before_anything_starts(tmp_path: Path) -> None:
    # 198.51.100.1 (TEST-NET-2) is no address of this machine: binding to it fails, no packet is sent.
    config = parse_config(
        {
            "models": {
                "m": {
                    "engine": "vllm",
                    "model": "/models/m",
                    "nodes": ["198.51.100.1", "198.51.100.2"],
                    "tensor_parallel_size": 2,
                }
            }
        }
    )
    model = config.models["m"]
    assert isinstance(model, VllmModel)
    head = RayHead("m", model, "/nonexistent/python", tmp_path)
    with pytest.raises(
        EngineError,
        match=r"models\.m\.nodes: the head 198\.51\.100\.1 \(the first node\) is not an"
        " address of this host",
    ):
        asyncio.run(head.ensure_started())
    assert head.process is None
