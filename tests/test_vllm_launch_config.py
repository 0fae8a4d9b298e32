"""`gpufleet plan ... --emit-config` prints a models: entry that gpufleet.config accepts and that launches the plan;
and the supervisor's stop hook removes a container its `docker run` client left behind."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.config import VllmModel, parse_config
from gpufleet.engine_supervisor.process import EngineProcess
from gpufleet.engines.base import LaunchSpec
from gpufleet.engines.vllm_resolve import resolve_model
from gpufleet.planner.launch import server_args
from tests.vllm_specs import vllm_spec


def emit(*args: str) -> tuple[str, VllmModel]:
    result = CliRunner().invoke(app, ["plan", *args, "--emit-config"])
    assert result.exit_code == 0, result.output
    config = parse_config(yaml.safe_load(result.stdout))
    ((name, model),) = config.models.items()
    assert isinstance(model, VllmModel)
    return name, model


def test_emitted_config_for_seed_001_parses_and_launches_the_same_flags() -> None:
    name, model = emit("qwen3-32b-awq", "--gpu", "rtx3090", "--context", "8192")
    assert name == "qwen3-32b-awq"
    assert (model.model, model.max_model_len, model.quantization) == ("Qwen/Qwen3-32B-AWQ", 8192, "awq_marlin")
    assert (model.reasoning_parser, model.tool_call_parser, model.launch) == ("qwen3", "hermes", "process")
    # The same flags as `plan: true` would fill at launch time.
    planned = parse_config(
        {
            "models": {
                name: {"engine": "vllm", "model": model.model, "plan": True, "gpu": "rtx3090", "max_model_len": 8192}
            }
        }
    ).models[name]
    assert isinstance(planned, VllmModel)
    assert server_args(resolve_model(name, model, None).launch) == server_args(
        resolve_model(name, planned, None).launch
    )


def test_emitted_config_with_an_image_runs_in_docker_at_that_version() -> None:
    result = CliRunner().invoke(
        app,
        [
            "plan",
            "qwen3-235b-awq",
            "--gpu",
            "gb10",
            "--tp",
            "2",
            "--util",
            "0.75",
            "--context",
            "8192",
            "--emit-config",
            "--image",
            "vllm/vllm-openai:v0.10.2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "vLLM 0.10.2" in result.stdout
    model = parse_config(yaml.safe_load(result.stdout)).models["qwen3-235b-awq"]
    assert isinstance(model, VllmModel) and model.docker is not None
    assert model.launch == "docker" and model.docker.network_host
    assert model.extra_args == ["--distributed-executor-backend", "ray"] and model.enforce_eager


def test_emitted_config_for_yarn_and_cpu_offload_carries_overrides_and_env() -> None:
    _, yarn = emit("qwen2.5-coder-32b-instruct", "--gpu", "a100-80gb", "--tp", "2", "--context", "131072")
    assert yarn.hf_overrides is not None and yarn.hf_overrides["max_position_embeddings"] == 131072
    _, offload = emit(
        "qwen3-32b-awq",
        "--gpu",
        "rtx3090",
        "--util",
        "0.90",
        "--context",
        "16384",
        "--allow-cpu-offload",
        "--wsl2",
        "--vllm-version",
        "0.8.5",
    )
    assert offload.cpu_offload_gb and offload.env == {"VLLM_USE_V1": "0"}


def test_emit_config_of_a_plan_that_does_not_fit_prints_no_config() -> None:
    result = CliRunner().invoke(app, ["plan", "qwen3-32b", "--gpu", "rtx3090", "--context", "8192", "--emit-config"])
    assert result.exit_code == 1 and "models:" not in result.stdout


async def test_stop_runs_the_stop_command_after_the_process_group_is_gone(tmp_path: Path) -> None:
    marker = tmp_path / "removed"
    spec = LaunchSpec(
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        env={},
        port=0,
        base_url="",
        health_url="",
        stop_argv=[sys.executable, "-c", f"open({str(marker)!r}, 'w').write('rm')"],
    )
    process = EngineProcess(spec, tmp_path / "engine.log")
    await process.spawn()
    await process.stop(grace_s=5)
    assert process.returncode is not None and marker.read_text() == "rm"


DOC = Path(__file__).parent.parent / "docs" / "vllm.md"


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    return text[start : text.index("\n## ", start + 1)]


def test_docs_vllm_md_config_examples_parse_and_build_the_documented_docker_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for title in ("Launch from the plan", "Run vLLM in a container"):
        for block in _section(title).split("```yaml\n")[1:]:
            parse_config(yaml.safe_load(block.split("```")[0]))
    section = _section("Run vLLM in a container")
    config = parse_config(yaml.safe_load(section.split("```yaml\n")[1].split("```")[0]))
    documented = section.split("This becomes (seed 002's 3060 setup):\n\n```\n")[1].split("```")[0]
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    model = config.models["qwen3-8b-awq"]
    assert isinstance(model, VllmModel)
    spec = vllm_spec("qwen3-8b-awq", model, 41234)
    built = shlex.join(["docker", *spec.argv[1:]]).replace("41234", "PORT")
    assert shlex.split(documented.replace("\\\n", " ")) == shlex.split(built)
