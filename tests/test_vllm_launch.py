"""Launching vLLM from a model config: fields filled from the plan, flags checked against the installed
version, and the `docker run` line for each seed's setup (built without Docker: a fake `docker` on PATH)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpufleet.config import parse_config
from gpufleet.engines.base import LaunchSpec, with_engine_key
from gpufleet.engines.vllm_resolve import resolve_model
from gpufleet.errors import ConfigError, EngineError
from gpufleet.gateway import build_app, running
from tests.vllm_specs import SEED_REMOVED_FLAGS, vllm_config, vllm_spec

PORT = 41234


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A `docker` on PATH that is not Docker: the argv is built, never run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return str(docker)


@pytest.fixture
def fake_vllm_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose `vllm` package says it is 0.26.0 (no metadata: vllm/_version.py)."""
    package = tmp_path / "site" / "vllm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_version.py").write_text("__version__ = version = '0.26.0'\n")
    return {"PYTHONPATH": str(tmp_path / "site")}


def docker_spec(**fields: Any) -> LaunchSpec:
    return vllm_spec("m", vllm_config(launch="docker", **fields), PORT)


# --- plan: true fills what the config left unset ---------------------------------------------------------------


def test_plan_fills_seed_002_3060_with_awq_marlin_eager_and_parsers() -> None:
    model = vllm_config(
        model="Qwen/Qwen3-8B-AWQ", plan=True, gpu="rtx3060", max_model_len=8192, gpu_memory_utilization=0.90
    )
    resolved = resolve_model("qwen3-8b", model, "0.26.0")
    m = resolved.launch
    assert (m.quantization, m.enforce_eager, m.max_model_len, m.gpu_memory_utilization) == (
        "awq_marlin",
        True,
        8192,
        0.90,
    )
    assert (m.reasoning_parser, m.tool_call_parser) == ("qwen3", "hermes")
    assert m.cpu_offload_gb is None and m.hf_overrides is None
    assert set(resolved.filled) == {"quantization", "enforce_eager", "reasoning_parser", "tool_call_parser"}


def test_explicit_config_values_win_over_the_plan() -> None:
    model = vllm_config(
        model="Qwen/Qwen3-8B-AWQ",
        plan=True,
        gpu="rtx3060",
        max_model_len=8192,
        enforce_eager=False,
        quantization="awq",
        reasoning_parser="deepseek_r1",
    )
    m = resolve_model("qwen3-8b", model, "0.26.0").launch
    assert (m.enforce_eager, m.quantization, m.reasoning_parser) == (False, "awq", "deepseek_r1")


def test_plan_picks_the_longest_context_that_fits_when_max_model_len_is_unset() -> None:
    m = resolve_model("q", vllm_config(model="Qwen/Qwen3-32B-AWQ", plan=True, gpu="rtx3090"), "0.26.0").launch
    assert m.max_model_len is not None and 8192 <= m.max_model_len <= 40960


def test_a_plan_that_does_not_fit_is_an_engine_error_with_the_planners_fixes() -> None:
    model = vllm_config(model="Qwen/Qwen3-32B", plan=True, gpu="rtx3090", max_model_len=8192)
    with pytest.raises(EngineError, match=r"does not fit: weights need .*Fixes, best first: \(1\)") as err:
        resolve_model("q", model, "0.26.0")
    assert "models.q" in str(err.value)


def test_gpu_given_as_vram_plans_a_custom_card() -> None:
    m = resolve_model(
        "q", vllm_config(model="Qwen/Qwen3-32B-AWQ", plan=True, gpu="24GiB", max_model_len=8192), "0.26.0"
    ).launch
    assert m.quantization == "awq_marlin" and m.gpu_memory_utilization == 0.92


def test_unknown_gpu_and_unknown_model_name_what_to_fix() -> None:
    with pytest.raises(EngineError, match="gpu: unknown GPU 'rtx9999'"):
        resolve_model("q", vllm_config(model="Qwen/Qwen3-8B-AWQ", plan=True, gpu="rtx9999"), None)
    with pytest.raises(EngineError, match="plan: true needs to know the model: unknown model"):
        resolve_model("q", vllm_config(model="org/not-a-model", plan=True, gpu="rtx3090"), None)


def test_seed_003_131072_on_two_80gb_gets_yarn_overrides_for_the_version() -> None:
    model = vllm_config(
        model="Qwen/Qwen2.5-Coder-32B-Instruct",
        plan=True,
        gpu="a100-80gb",
        tensor_parallel_size=2,
        max_model_len=131072,
    )
    new = resolve_model("coder", model, "0.33.0").launch.hf_overrides
    assert new is not None and new["max_position_embeddings"] == 131072
    assert new["rope_parameters"]["factor"] == 4.0
    old = resolve_model("coder", model, "0.10.2").launch.hf_overrides
    assert old is not None and "rope_scaling" in old and "max_position_embeddings" not in old


def test_seed_001_wsl2_offload_only_when_allowed_and_v0_only_before_011() -> None:
    fields: dict[str, Any] = {
        "model": "Qwen/Qwen3-32B-AWQ",
        "plan": True,
        "gpu": "rtx3090",
        "max_model_len": 16384,
        "gpu_memory_utilization": 0.90,
        "wsl2": True,
    }
    with pytest.raises(EngineError, match="does not fit"):
        resolve_model("q", vllm_config(**fields), "0.8.5")
    resolved = resolve_model("q", vllm_config(**fields, allow_cpu_offload=True), "0.8.5")
    assert resolved.launch.cpu_offload_gb and resolved.launch.env == {"VLLM_USE_V1": "0"}
    with pytest.raises(EngineError, match="WSL2 has no pinned memory"):
        resolve_model("q", vllm_config(**fields, allow_cpu_offload=True), "0.26.0")


def test_cpu_plan_with_float32_sizes_the_kv_cache_at_4_bytes() -> None:
    model = vllm_config(
        model="HuggingFaceTB/SmolLM2-135M-Instruct", plan=True, device="cpu", dtype="float32", cpu_kv_cache_space_gib=1
    )
    m = resolve_model("smol", model, "0.32.0")
    assert m.plan is not None and m.plan.kv_bytes_per_token == 2 * 30 * 3 * 64 * 4
    assert m.launch.dtype == "float32" and m.launch.enforce_eager and m.launch.gpu_memory_utilization is None


def test_plan_needs_a_gpu_and_planner_inputs_need_plan() -> None:
    with pytest.raises(ConfigError, match="plan: true needs gpu"):
        vllm_config(model="Qwen/Qwen3-8B-AWQ", plan=True)
    with pytest.raises(ConfigError, match="set plan: true"):
        vllm_config(model="Qwen/Qwen3-8B-AWQ", gpu="rtx3060")


# --- the installed version decides which flags are allowed -----------------------------------------------------


def test_process_launch_reads_the_version_and_refuses_a_removed_flag_naming_it(fake_vllm_env: dict[str, str]) -> None:
    model = vllm_config(
        model="Qwen/Qwen3-235B-A22B-AWQ", python=sys.executable, env=fake_vllm_env, extra_args=["--swap-space", "16"]
    )
    with pytest.raises(
        EngineError,
        match=r"vLLM 0\.26\.0 \(.*python.*\) would refuse .*--swap-space: --swap-space "
        r"was removed in vLLM 0\.18",
    ):
        vllm_spec("q", model, PORT)


def test_process_launch_from_the_plan_has_the_version_and_filled_fields(fake_vllm_env: dict[str, str]) -> None:
    model = vllm_config(
        model="Qwen/Qwen3-8B-AWQ",
        python=sys.executable,
        env=fake_vllm_env,
        plan=True,
        gpu="rtx3060",
        max_model_len=8192,
        gpu_memory_utilization=0.9,
    )
    spec = vllm_spec("qwen3-8b", model, PORT)
    assert spec.argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    # The one flag order (planner/launch.py's renderer), the same as `gpufleet plan` prints.
    assert spec.argv[3:] == [
        "--model",
        "Qwen/Qwen3-8B-AWQ",
        "--served-model-name",
        "qwen3-8b",
        "--quantization",
        "awq_marlin",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.9",
        "--enforce-eager",
        "--reasoning-parser",
        "qwen3",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--host",
        "127.0.0.1",
        "--port",
        str(PORT),
    ]
    assert spec.extra["vllm_version"] == "0.26.0" and spec.stop_argv is None


def test_reasoning_parser_gets_enable_reasoning_before_0_10(fake_docker: str) -> None:
    """Seed 000's follow-up: on 0.8.5 the parser needs --enable-reasoning; from 0.10 the flag is gone."""
    old = docker_spec(
        model="Qwen/Qwen3-32B-AWQ", reasoning_parser="qwen3", docker={"image": "vllm/vllm-openai:v0.8.5"}
    ).argv
    assert old[old.index("--reasoning-parser") - 1] == "--enable-reasoning"
    new = docker_spec(
        model="Qwen/Qwen3-32B-AWQ", reasoning_parser="qwen3", docker={"image": "vllm/vllm-openai:v0.10.2"}
    ).argv
    assert "--enable-reasoning" not in new


# --- docker run, one per seed ----------------------------------------------------------------------------------


def test_seed_000_001_3090_awq_in_a_pinned_container(fake_docker: str, tmp_path: Path) -> None:
    spec = docker_spec(
        model="Qwen/Qwen3-32B-AWQ",
        plan=True,
        gpu="rtx3090",
        max_model_len=8192,
        docker={"image": "vllm/vllm-openai:v0.8.5", "hf_cache": str(tmp_path / "hf"), "env": {"HF_TOKEN": "hf_secret"}},
    )
    name = f"gpufleet-m-{PORT}"
    assert spec.argv == [
        fake_docker,
        "run",
        "--rm",
        "--init",
        "--name",
        name,
        "--gpus",
        "all",
        "--ipc=host",
        "-p",
        f"127.0.0.1:{PORT}:8000",
        "-v",
        f"{tmp_path / 'hf'}:/root/.cache/huggingface",
        "-e",
        "DO_NOT_TRACK",
        "-e",
        "HF_TOKEN",
        "-e",
        "VLLM_API_KEY",
        "-e",
        "VLLM_NO_USAGE_STATS",
        "vllm/vllm-openai:v0.8.5",
        "--model",
        "Qwen/Qwen3-32B-AWQ",
        "--served-model-name",
        "m",
        "--quantization",
        "awq_marlin",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.92",
        "--enable-reasoning",
        "--reasoning-parser",
        "qwen3",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    # Values travel in the client's environment, so the token is not visible in `ps`.
    assert spec.env["HF_TOKEN"] == "hf_secret" and "hf_secret" not in " ".join(spec.argv)
    assert spec.health_url == f"http://127.0.0.1:{PORT}/health"
    assert spec.stop_argv == [fake_docker, "rm", "--force", name]
    assert "--cpu-offload-gb" not in spec.argv and "--enforce-eager" not in spec.argv  # seed 001's lesson
    # The supervisor's per-start engine key travels the same way: by name (issue 20).
    keyed = with_engine_key(spec)
    assert keyed.api_key and keyed.env["VLLM_API_KEY"] == keyed.api_key and keyed.api_key not in keyed.argv
    assert with_engine_key(spec).api_key != keyed.api_key


def test_seed_002_3060_k8s_setup_as_a_container_with_shm_and_one_device(fake_docker: str) -> None:
    spec = docker_spec(
        model="Qwen/Qwen3-8B-AWQ",
        plan=True,
        gpu="rtx3060",
        max_model_len=8192,
        gpu_memory_utilization=0.90,
        docker={
            "image": "vllm/vllm-openai:v0.8.5.post1",
            "gpus": [0],
            "ipc_host": False,
            "shm_size": "8g",
            "hf_cache": "/var/lib/vllm/huggingface",
        },
    )
    argv = spec.argv
    assert flag(argv, "--gpus") == '"device=0"' and flag(argv, "--shm-size") == "8g" and "--ipc=host" not in argv
    assert flag(argv, "-v") == "/var/lib/vllm/huggingface:/root/.cache/huggingface"
    serve = argv[argv.index("vllm/vllm-openai:v0.8.5.post1") + 1 :]
    for f, value in (
        ("--quantization", "awq_marlin"),
        ("--gpu-memory-utilization", "0.9"),
        ("--max-model-len", "8192"),
    ):
        assert flag(serve, f) == value
    assert "--enforce-eager" in serve  # seed 002: "NEVER remove --enforce-eager" on the 3060
    assert spec.extra["vllm_version"] == "0.8.5"


def test_seed_003_two_80gb_tp2_with_yarn_and_a_local_model_dir(fake_docker: str, tmp_path: Path) -> None:
    spec = docker_spec(
        model="Qwen/Qwen2.5-Coder-32B-Instruct",
        plan=True,
        gpu="a100-80gb",
        tensor_parallel_size=2,
        max_model_len=131072,
        docker={"image": "vllm/vllm-openai:v0.26.0", "gpus": [0, 1], "volumes": [f"{tmp_path}:/data:ro"]},
    )
    argv = spec.argv
    assert flag(argv, "--gpus") == '"device=0,1"' and "--ipc=host" in argv
    assert f"{tmp_path}:/data:ro" in argv
    assert flag(argv, "--tensor-parallel-size") == "2" and flag(argv, "--max-model-len") == "131072"
    overrides = json.loads(flag(argv, "--hf-overrides"))
    assert overrides["rope_parameters"]["rope_type"] == "yarn"
    assert "max_position_embeddings" not in overrides  # 0.26 still derives original * factor


def test_seed_004_two_sparks_tp2_over_ray_on_the_host_network(fake_docker: str) -> None:
    spec = docker_spec(
        model="QuantTrio/Qwen3-235B-A22B-Instruct-2507-AWQ",
        plan=True,
        gpu="gb10",
        tensor_parallel_size=2,
        max_model_len=8192,
        gpu_memory_utilization=0.75,
        docker={"image": "vllm/vllm-openai:v0.26.0", "network_host": True},
    )
    argv = spec.argv
    assert "-p" not in argv and flag(argv, "--network") == "host"
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", str(PORT)]
    assert flag(argv, "--distributed-executor-backend") == "ray"
    assert "--enforce-eager" in argv  # CUDA graphs crash on sm_121a (seed 004)
    assert flag(argv, "--tensor-parallel-size") == "2" and flag(argv, "--gpu-memory-utilization") == "0.75"
    assert not any(f in argv for f in SEED_REMOVED_FLAGS)


def test_seed_004_swap_space_in_a_new_image_is_refused_before_docker_runs(fake_docker: str) -> None:
    with pytest.raises(EngineError, match=r"vLLM 0\.26\.0 \(image vllm/vllm-openai:v0\.26\.0\).*--swap-space"):
        docker_spec(
            model="QuantTrio/Qwen3-235B-A22B-Instruct-2507-AWQ",
            extra_args=["--swap-space", "16"],
            docker={"image": "vllm/vllm-openai:v0.26.0"},
        )


def test_local_model_directory_is_mounted_read_only_at_the_same_path(fake_docker: str, tmp_path: Path) -> None:
    model_dir = tmp_path / "qwen"
    model_dir.mkdir()
    argv = docker_spec(model=str(model_dir), docker={"image": "vllm/vllm-openai:v0.26.0", "hf_cache": None}).argv
    assert argv[argv.index("-v") + 1] == f"{model_dir}:{model_dir}:ro"
    assert flag(argv, "--model") == str(model_dir)


def test_container_names_are_docker_safe() -> None:
    from gpufleet.engines.vllm_docker import container_name

    assert container_name("Qwen/Qwen3-8B-AWQ", 8000) == "gpufleet-Qwen-Qwen3-8B-AWQ-8000"


def test_docker_missing_is_an_engine_error_naming_the_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError, match="needs the `docker` binary, which is not on PATH"):
        docker_spec(model="Qwen/Qwen3-8B-AWQ", docker={"image": "vllm/vllm-openai:v0.26.0"})


@pytest.mark.parametrize(
    ("docker", "message"),
    [
        ({"image": "vllm/vllm-openai"}, "has no tag"),
        ({"image": "vllm/vllm-openai:latest"}, "is not pinned"),
        ({"image": "vllm/vllm-openai:v0.26.0", "ipc_host": False}, "set shm_size"),
        ({"image": "vllm/vllm-openai:v0.26.0", "gpus": "0,1"}, "list of device ids"),
    ],
)
def test_docker_block_is_validated_at_load(docker: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        vllm_config(model="Qwen/Qwen3-8B-AWQ", launch="docker", docker=docker)


def test_docker_block_and_launch_mode_go_together() -> None:
    with pytest.raises(ConfigError, match="launch: docker needs a docker: block"):
        vllm_config(model="Qwen/Qwen3-8B-AWQ", launch="docker")
    with pytest.raises(ConfigError, match="only with launch: docker"):
        vllm_config(model="Qwen/Qwen3-8B-AWQ", docker={"image": "vllm/vllm-openai:v0.26.0"})


def test_image_pinned_by_digest_has_no_version_unless_the_config_says(fake_docker: str) -> None:
    image = "vllm/vllm-openai@sha256:" + "a" * 64
    assert docker_spec(model="Qwen/Qwen3-8B-AWQ", docker={"image": image}).extra["vllm_version"] == "unknown"
    with pytest.raises(EngineError, match=r"vLLM 0\.26\.0"):
        docker_spec(
            model="Qwen/Qwen3-8B-AWQ", vllm_version="0.26.0", extra_args=["--enable-reasoning"], docker={"image": image}
        )


# --- the supervisor shows a plan that does not fit ----------------------------------------------------------------


async def test_a_plan_that_does_not_fit_answers_503_with_the_advice(fake_vllm_env: dict[str, str]) -> None:
    config = parse_config(
        {
            "server": {"queue_timeout_s": 5},
            "models": {
                "big": {
                    "engine": "vllm",
                    "model": "Qwen/Qwen3-32B",
                    "python": sys.executable,
                    "env": fake_vllm_env,
                    "plan": True,
                    "gpu": "rtx3090",
                    "max_model_len": 8192,
                }
            },
        }
    )
    app = build_app(config)
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        response = await http.post(
            "/v1/chat/completions", json={"model": "big", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert response.status_code == 503, response.text
    message = response.json()["error"]["message"]
    assert "does not fit" in message and "Fixes, best first" in message


def test_profile_batch_keys_reach_vllm_and_the_planner() -> None:
    # They size vLLM's profile run, so they move the KV cache: the planner must see what vLLM is told.
    config = parse_config(
        {
            "models": {
                "m": {
                    "engine": "vllm",
                    "model": "Qwen/Qwen3-8B",
                    "plan": True,
                    "gpu": "rtx4090",
                    "max_num_seqs": 16,
                    "max_num_batched_tokens": 4096,
                }
            }
        }
    )
    resolved = resolve_model("m", config.models["m"], "0.26.0")  # type: ignore[arg-type]
    argv = resolved.launch.argv
    assert argv[argv.index("--max-num-seqs") + 1] == "16"
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "4096"
    assert resolved.plan is not None
    assert (resolved.plan.request.max_num_seqs, resolved.plan.request.max_num_batched_tokens) == (16, 4096)
