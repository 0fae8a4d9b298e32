"""`gpufleet plan`, `gpufleet catalog`, `gpufleet doctor` through the CLI runner."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.cli import app

STABLE_KEYS = {
    "fits",
    "reasons",
    "weights_bytes_per_gpu",
    "kv_bytes_per_token",
    "kv_cache_tokens",
    "max_context",
    "max_concurrency",
    "needs_yarn",
    "yarn_factor",
    "cpu_offload_bytes",
    "quantization",
    "decode_tok_s_estimate",
    "argv",
    "env",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run_json(runner: CliRunner, *args: str) -> tuple[int, dict[str, object]]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_plan_json_has_every_stable_key_and_the_seed_001_launch(runner: CliRunner) -> None:
    code, out = run_json(runner, "plan", "qwen3-32b-awq", "--gpu", "rtx3090", "--context", "8192")
    assert code == 0
    assert set(out) >= STABLE_KEYS
    assert out["fits"] is True and out["reasons"] == [] and out["quantization"] == "awq_marlin"
    assert out["kv_bytes_per_token"] == 262144 and out["needs_yarn"] is False and out["yarn_factor"] is None
    assert out["argv"][:3] == ["Qwen/Qwen3-32B-AWQ", "--served-model-name", "qwen3-32b-awq"]  # type: ignore[index]
    assert out["env"] == {}


def test_plan_that_does_not_fit_exits_1_with_reasons_and_fixes(runner: CliRunner) -> None:
    code, out = run_json(runner, "plan", "qwen3-32b", "--gpu", "rtx3090", "--context", "8192")
    assert code == 1
    assert out["fits"] is False and out["argv"] == [] and out["cpu_offload_bytes"] > 40 * 2**30  # type: ignore[operator]
    reasons = out["reasons"]
    assert isinstance(reasons, list) and "weights need 61.02 GiB" in reasons[0] and "--quantization awq" in reasons[0]


def test_plan_human_output_shows_the_budget_the_context_table_and_the_command(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["plan", "qwen3-235b-awq", "-q", "awq", "--gpu", "gb10", "--gpus", "2", "--util", "0.75", "--context", "8192"],
    )
    assert result.exit_code == 0, result.output
    assert "FITS" in result.output and "context vs memory" in result.output and "262,144" in result.output
    assert "--distributed-executor-backend ray --enforce-eager" in result.output


def test_seed_003_yarn_context_through_the_cli(runner: CliRunner) -> None:
    code, out = run_json(
        runner, "plan", "Qwen/Qwen2.5-Coder-32B-Instruct", "--gpu", "a100-80gb", "--tp", "2", "--context", "131072"
    )
    assert code == 0 and out["needs_yarn"] is True and out["yarn_factor"] == 4.0
    assert "--hf-overrides" in out["argv"]  # type: ignore[operator]
    code, out = run_json(runner, "plan", "qwen3-8b", "--gpu", "h100", "--context", "131072", "--no-yarn")
    assert code == 1 and "needs YaRN (factor 4.0)" in out["reasons"][0]  # type: ignore[index]


def test_custom_gpu_flags_and_cpu_mode(runner: CliRunner) -> None:
    code, out = run_json(
        runner,
        "plan",
        "qwen3-8b-awq",
        "--vram-gb",
        "16",
        "--bandwidth-gbps",
        "448",
        "--compute-capability",
        "7.5",
        "--context",
        "8192",
    )
    assert code == 0 and out["quantization"] == "awq" and out["device"] == "custom"
    code, out = run_json(runner, "plan", "smollm2", "--cpu", "--kv-space-gib", "1", "--context", "2048")
    assert code == 0 and out["kv_cache_tokens"] == 46592 and out["env"] == {"VLLM_CPU_KVCACHE_SPACE": "1"}


def test_plan_accepts_a_local_hf_directory(runner: CliRunner, tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["Qwen3ForCausalLM"],
                "model_type": "qwen3",
                "hidden_size": 4096,
                "intermediate_size": 12288,
                "num_attention_heads": 32,
                "num_hidden_layers": 36,
                "num_key_value_heads": 8,
                "head_dim": 128,
                "vocab_size": 151936,
                "max_position_embeddings": 40960,
            }
        )
    )
    with (model / "model.safetensors").open("wb") as f:
        f.truncate(16 * 10**9)
    code, out = run_json(runner, "plan", str(model), "--gpu", "rtx4090", "--context", "8192")
    assert code == 0 and out["kv_bytes_per_token"] == 147456 and out["argv"][0] == str(model)  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "qwen3-33b", "--gpu", "rtx3090"], "unknown model 'qwen3-33b'. Did you mean: qwen3-32b"),
        (["plan", "qwen3-32b", "--gpu", "rtx3095"], "unknown GPU 'rtx3095'. Did you mean: rtx3090"),
        (["plan", "qwen3-8b", "--gpu", "rtx3090", "--context", "-5"], "context must be a positive number"),
        (["plan", "qwen3-8b", "--gpu", "rtx3090", "--util", "1.5"], "gpu_memory_utilization must be in (0, 1]"),
        (["plan", "qwen3-8b"], "say which GPU: --gpu NAME"),
        (["plan", "qwen3-8b", "--gpu", "a100", "--gpus", "4", "--tp", "2"], "--gpus 4 does not match --tp 2"),
        (["plan", "qwen3-8b", "--gpu", "rtx3090", "-q", "gptq"], "qwen3-8b has no 'gptq' checkpoint"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output


def test_typer_usage_errors_also_exit_2(runner: CliRunner) -> None:
    assert runner.invoke(app, ["plan", "qwen3-8b", "--gpu", "rtx3090", "--context", "lots"]).exit_code == 2
    assert runner.invoke(app, ["catalog", "planets"]).exit_code == 2


def test_catalog_lists_models_and_gpus_as_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["catalog", "--json"])
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    models = {m["name"]: m for m in out["models"]}
    assert models["qwen3-32b"]["checkpoints"]["awq"]["repo"] == "Qwen/Qwen3-32B-AWQ"
    assert models["qwen3-32b"]["kv_bytes_per_token_bf16"] == 262144 and models["qwen3-32b"]["source"]
    assert {g["name"] for g in out["gpus"]} >= {"rtx3060", "rtx3090", "h100-sxm", "gb10"}
    only_gpus = json.loads(runner.invoke(app, ["catalog", "gpus", "--json"]).stdout)
    assert set(only_gpus) == {"gpus"}


def test_catalog_tables_render(runner: CliRunner) -> None:
    result = runner.invoke(app, ["catalog", "models"])
    assert result.exit_code == 0 and "qwen3-235b-a22b-instruct-2507" in result.output


def test_doctor_on_this_host_reports_findings_and_exit_code(runner: CliRunner) -> None:
    result = runner.invoke(app, ["doctor", "--json", "--model", "qwen3-8b-awq", "--gpu", "rtx3060"])
    out = json.loads(result.stdout)
    assert result.exit_code == out["exit_code"]
    checks = {f["check"] for f in out["findings"]}
    assert {"gpu", "wsl2", "shm", "engine", "plan"} <= checks
    if not out["facts"]["gpus"]:
        assert out["exit_code"] == 1
        assert any(f["seen"].startswith("no NVIDIA GPU found") for f in out["findings"])


DOC = Path(__file__).parent.parent / "docs" / "planner.md"


def _doc_commands() -> list[str]:
    return [line[2:] for line in DOC.read_text().splitlines() if line.startswith("$ gpufleet ")]


@pytest.mark.parametrize("command", _doc_commands())
def test_every_command_in_docs_planner_md_runs(runner: CliRunner, command: str) -> None:
    """docs/planner.md promises its examples run: exit 0 (fits / ok) or 1 (does not fit / error finding)."""
    args = shlex.split(command)[1:]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
