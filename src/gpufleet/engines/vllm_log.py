"""Follow a vLLM server log line by line: startup phases, KV-cache capacity, and why a start failed.

Pure: feed it lines (from a pipe or a recorded file), read `.phase`, `.kv_cache`, `.failure`.

    log = VllmStartupLog()
    for line in proc_stdout:
        for change in log.feed(line):
            print(change.phase, log.progress_line())

Formats covered (from the vLLM 0.26/0.32/0.33 sources and a real 0.32.0 CPU log in tests/data/vllm/):
the KV capacity is one line in 0.32+ ("GPU KV cache size: N tokens, Maximum concurrency for M tokens per
request: X.XXx") and two lines in 0.26; the CPU build says "CPU KV cache size" instead of "GPU".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

from gpufleet.engines.vllm_flags import REMOVED_FLAGS


class Phase(IntEnum):
    """Startup phases in the order vLLM goes through them (FAILED ends any of them)."""

    STARTING = 0
    LOADING_WEIGHTS = 1
    PROFILING = 2
    KV_CACHE_ALLOCATED = 3
    CUDA_GRAPHS = 4
    READY = 5
    FAILED = 6

    @property
    def label(self) -> str:
        """Lower-case name for status lines and JSON ("loading_weights")."""
        return self.name.lower()


class FailureCause(StrEnum):
    """Why a vLLM start failed, as recognised from its log."""

    CUDA_OOM = "cuda_oom"
    KV_CACHE_TOO_SMALL = "kv_cache_too_small"
    NO_KV_CACHE_MEMORY = "no_kv_cache_memory"
    MAX_MODEL_LEN_ABOVE_MODEL = "max_model_len_above_model"
    UNSUPPORTED_QUANTIZATION = "unsupported_quantization"
    COMPUTE_CAPABILITY = "compute_capability"
    DRIVER_TOO_OLD = "driver_too_old"
    UNRECOGNIZED_ARGUMENT = "unrecognized_argument"
    INVALID_ARGUMENT = "invalid_argument"
    FREE_MEMORY_BELOW_UTILIZATION = "free_memory_below_utilization"
    ENGINE_INIT_FAILED = "engine_init_failed"


@dataclass(frozen=True)
class KvCacheCapacity:
    """What vLLM reported about its KV cache: token capacity, concurrency, memory."""

    device: str
    tokens: int
    max_concurrency: float | None = None
    concurrency_tokens: int | None = None
    available_gib: float | None = None


@dataclass(frozen=True)
class StartupFailure:
    """A recognised start failure: the cause, a hint that names the fix, and the log line it came from."""

    cause: FailureCause
    hint: str
    line: str
    details: dict[str, str | int | float] = field(default_factory=dict)


@dataclass(frozen=True)
class PhaseChange:
    """The log moved to `phase` on `line`."""

    phase: Phase
    line: str


# vLLM colours its log when stdout is a TTY; recorded logs and pipes may still carry the codes.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NUM = r"[\d,]+"

_KV_TOKENS = re.compile(rf"\b(GPU|CPU)(?: \+ host)? KV cache size: ({_NUM}) tokens")
_KV_CONCURRENCY = re.compile(rf"Maximum concurrency for ({_NUM}) tokens per request: ([\d.]+)x")
_KV_AVAILABLE = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
# CPU build: "Explicitly set (1.0/8.21) GiB for KV cache on node 0." (VLLM_CPU_KVCACHE_SPACE / node memory).
_KV_CPU_SET = re.compile(r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache")
_ENGINE_VERSION = re.compile(r"Initializing a V1 LLM engine \(v([^)]+)\)")
_SERVER_VERSION = re.compile(r"vLLM API server version (\S+)")
_SERVER_URL = re.compile(r"Starting vLLM (?:API )?server(?: \d+)? on (https?://\S+)")
_WEIGHTS_LOADED = re.compile(r"Loading weights took ([\d.]+) seconds|Model loading took ([\d.]+) GiB")

_PHASE_MARKERS: list[tuple[Phase, re.Pattern[str]]] = [
    (Phase.READY, re.compile(r"Application startup complete|Starting vLLM (?:API )?server(?: \d+)? on ")),
    (Phase.CUDA_GRAPHS, re.compile(r"Capturing CUDA graphs|Graph capturing finished|Capturing cudagraphs")),
    (Phase.KV_CACHE_ALLOCATED, _KV_TOKENS),
    (
        Phase.PROFILING,
        re.compile(
            r"Loading weights took|Model loading took|Memory profiling takes|Available KV cache memory"
            r"|Explicitly set \([\d.]+/[\d.]+\) GiB for KV cache"
            r"|torch\.compile takes|Dynamo bytecode transform"
        ),
    ),
    (
        Phase.LOADING_WEIGHTS,
        re.compile(
            r"Starting to load model|Loading safetensors checkpoint shards"
            r"|Loading weights|Using model weights format"
        ),
    ),
]

_CUDA_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|Failed to load model - not enough GPU memory")
_OOM_TRIED = re.compile(r"Tried to allocate ([\d.]+ [KMG]iB)")
_KV_TOO_SMALL = re.compile(
    r"To serve at least one request with the models?'s max seq len \((\d+)\),"
    r" \(([\d.]+) GiB KV cache is needed, which is larger than the available KV cache memory"
    r" \(([\d.]+) GiB\)"
)
_KV_ESTIMATED = re.compile(r"estimated maximum model length is (\d+)")
# The V0 engine (vLLM <= 0.10) spelled the same failure differently.
_KV_TOO_SMALL_V0 = re.compile(
    r"The model's max seq len \((\d+)\) is larger than the maximum number of tokens that can be stored in KV"
    r" cache \((\d+)\)"
)
_NO_KV_MEMORY = re.compile(r"No available memory for the cache blocks")
# With VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 vLLM logs the same sentence as a WARNING and goes on; only the
# error form carries "To allow overriding this maximum".
_ABOVE_DERIVED = re.compile(
    r"User-specified max_model_len \((\d+)\) is greater than the derived max_model_len \((\w+)=([\d.]+)"
    r".*To allow overriding this maximum"
)
_QUANT_CAPABILITY = re.compile(
    r"The quantization method (\S+) is not supported for the current GPU\. Minimum capability: (\d+)\."
    r" Current capability: (\d+)"
)
_QUANT_UNKNOWN = re.compile(r"Unknown quantization method: ([^.\s]+)")
_QUANT_MISMATCH = re.compile(
    r"Quantization method specified in the model config \((\S+)\) does not match the quantization method"
    r" specified in the `quantization` argument \((\S+)\)"
)
_QUANT_SCHEME = re.compile(r"Quantization scheme is not supported for the current GPU")
_BF16_CAPABILITY = re.compile(
    r"Bfloat16 is only supported on GPUs with compute capability of at least 8\.0\. Your (.+?) GPU"
    r" has compute capability (\S+?)\."
)
_DRIVER = re.compile(
    r"forward compatibility was attempted on non supported HW"
    r"|The NVIDIA driver on your system is too old"
    r"|CUDA driver version is insufficient for CUDA runtime version"
)
_UNRECOGNIZED = re.compile(r"error: unrecognized arguments: (.+)$")
_INVALID_ARG = re.compile(r"error: argument (\S+?): (.+)$")
_FREE_MEMORY = re.compile(
    r"Free memory on device (\S+) \(([\d.]+)/([\d.]+) GiB\) on startup is less than desired GPU memory"
    r" utilization \(([\d.]+), ([\d.]+) GiB\)"
)
# vLLM's own prefix: "(EngineCore pid=7) WARNING 11-23 11:52:34 [model.py:2660] ...".
_WARNING = re.compile(r"^(?:\([\w-]+ pid=\d+\) )?WARNING \d\d-\d\d ")
_ENGINE_INIT = re.compile(r"Engine core initialization failed|EngineCore failed to start")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _unrecognized_hint(arguments: str) -> str:
    """Name the replacement for flags that vLLM removed (the seeds used several of them)."""
    flags = [word.split("=", 1)[0] for word in arguments.split() if word.startswith("--")]
    notes = [f"{flag} {REMOVED_FLAGS[flag].replacement}" for flag in flags if flag in REMOVED_FLAGS]
    base = f"this vLLM does not accept {arguments}; check the flags against the installed version"
    return base + ("; " + "; ".join(notes) if notes else "")


def _kv_too_small(m: re.Match[str], text: str) -> StartupFailure:
    details: dict[str, str | int | float] = {
        "max_model_len": int(m[1]),
        "needed_gib": float(m[2]),
        "available_gib": float(m[3]),
    }
    hint = f"--max-model-len {m[1]} needs {m[2]} GiB of KV cache but only {m[3]} GiB is left after the weights"
    if est := _KV_ESTIMATED.search(text):
        details["estimated_max_model_len"] = int(est[1])
        hint += f"; set --max-model-len to at most {est[1]}"
    hint += (
        ", or raise --gpu-memory-utilization, or use --kv-cache-dtype fp8"
        " (on the CPU build: raise VLLM_CPU_KVCACHE_SPACE)"
    )
    return StartupFailure(FailureCause.KV_CACHE_TOO_SMALL, hint, text, details)


def _kv_too_small_v0(m: re.Match[str], text: str) -> StartupFailure:
    return StartupFailure(
        FailureCause.KV_CACHE_TOO_SMALL,
        f"--max-model-len {m[1]} exceeds the {m[2]} tokens the KV cache holds; set --max-model-len to at"
        f" most {m[2]} or raise --gpu-memory-utilization",
        text,
        {"max_model_len": int(m[1]), "estimated_max_model_len": int(m[2])},
    )


def _above_derived(m: re.Match[str], text: str) -> StartupFailure:
    derived = int(float(m[3]))
    return StartupFailure(
        FailureCause.MAX_MODEL_LEN_ABOVE_MODEL,
        f"--max-model-len {m[1]} is above the model's {m[2]}={derived}; lower it, or for Qwen enable"
        " YaRN with --hf-overrides (rope_parameters + max_position_embeddings),"
        " or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1",
        text,
        {"max_model_len": int(m[1]), "derived_max_model_len": derived, "derived_from": m[2]},
    )


def _free_memory(m: re.Match[str], text: str) -> StartupFailure:
    return StartupFailure(
        FailureCause.FREE_MEMORY_BELOW_UTILIZATION,
        f"only {m[2]} of {m[3]} GiB is free on {m[1]} but --gpu-memory-utilization {m[4]} asks for"
        f" {m[5]} GiB; stop the other process on that GPU (another vLLM?) or lower"
        " --gpu-memory-utilization (two instances on one GPU need about 0.45 each)",
        text,
        {
            "device": m[1],
            "free_gib": float(m[2]),
            "total_gib": float(m[3]),
            "gpu_memory_utilization": float(m[4]),
            "requested_gib": float(m[5]),
        },
    )


def _quant_capability(m: re.Match[str], text: str) -> StartupFailure:
    return StartupFailure(
        FailureCause.UNSUPPORTED_QUANTIZATION,
        f"quantization {m[1]} needs compute capability {m[2]} but this GPU has {m[3]}; pick a method"
        " this GPU supports (awq_marlin/gptq_marlin need 80, i.e. Ampere or newer; fp8 W8A8 needs 89)",
        text,
        {"quantization": m[1], "min_capability": int(m[2]), "capability": int(m[3])},
    )


def _quant_unknown(m: re.Match[str], text: str) -> StartupFailure:
    return StartupFailure(
        FailureCause.UNSUPPORTED_QUANTIZATION,
        f"this vLLM has no quantization method {m[1]!r}; use one it lists (e.g. awq_marlin, gptq_marlin, fp8)",
        text,
        {"quantization": m[1]},
    )


def _quant_mismatch(m: re.Match[str], text: str) -> StartupFailure:
    return StartupFailure(
        FailureCause.UNSUPPORTED_QUANTIZATION,
        f"the checkpoint is {m[1]} but --quantization says {m[2]}; drop --quantization"
        " (vLLM reads it from config.json) or give a method compatible with the checkpoint",
        text,
        {"checkpoint_quantization": m[1], "quantization": m[2]},
    )


def _bf16_capability(m: re.Match[str], text: str) -> StartupFailure:
    return StartupFailure(
        FailureCause.COMPUTE_CAPABILITY,
        f"{m[1]} (compute capability {m[2]}) has no bfloat16; start with --dtype half",
        text,
        {"gpu": m[1], "capability": m[2]},
    )


def _cuda_oom(m: re.Match[str], text: str) -> StartupFailure:
    details: dict[str, str | int | float] = {}
    if tried := _OOM_TRIED.search(text):
        details["tried_to_allocate"] = tried[1]
    return StartupFailure(
        FailureCause.CUDA_OOM,
        "the GPU ran out of memory; lower --max-model-len or --max-num-seqs, use a quantized checkpoint,"
        " raise --tensor-parallel-size, or free the GPU of other processes",
        text,
        details,
    )


def _unrecognized(m: re.Match[str], text: str) -> StartupFailure:
    return StartupFailure(
        FailureCause.UNRECOGNIZED_ARGUMENT, _unrecognized_hint(m[1].strip()), text, {"arguments": m[1].strip()}
    )


def _invalid_arg(m: re.Match[str], text: str) -> StartupFailure:
    return StartupFailure(FailureCause.INVALID_ARGUMENT, f"bad value for {m[1]}: {m[2]}", text, {"argument": m[1]})


def _fixed(cause: FailureCause, hint: str) -> Callable[[re.Match[str], str], StartupFailure]:
    """A failure whose hint does not depend on the matched line."""
    return lambda _m, text: StartupFailure(cause, hint, text)


# The failure table, most specific first: the first pattern that matches a line names its cause.
_FAILURES: list[tuple[re.Pattern[str], Callable[[re.Match[str], str], StartupFailure]]] = [
    (_KV_TOO_SMALL, _kv_too_small),
    (_KV_TOO_SMALL_V0, _kv_too_small_v0),
    (
        _NO_KV_MEMORY,
        _fixed(
            FailureCause.NO_KV_CACHE_MEMORY,
            "the weights (and activations) use all the memory vLLM may take, none is left for the KV"
            " cache; raise --gpu-memory-utilization, use a quantized checkpoint, or add GPUs"
            " (--tensor-parallel-size)",
        ),
    ),
    (_ABOVE_DERIVED, _above_derived),
    (_FREE_MEMORY, _free_memory),
    (_QUANT_CAPABILITY, _quant_capability),
    (_QUANT_UNKNOWN, _quant_unknown),
    (_QUANT_MISMATCH, _quant_mismatch),
    (
        _QUANT_SCHEME,
        _fixed(
            FailureCause.UNSUPPORTED_QUANTIZATION,
            "this GPU cannot run the checkpoint's quantization scheme; use a checkpoint quantized for it",
        ),
    ),
    (_BF16_CAPABILITY, _bf16_capability),
    # Seed 002: vLLM v0.15.1's image carried CUDA 12.9 while driver 570.195.03 supported 12.8.
    (
        _DRIVER,
        _fixed(
            FailureCause.DRIVER_TOO_OLD,
            "the NVIDIA driver is older than the CUDA this vLLM was built with; upgrade the driver or pin a"
            " vLLM build/image made for the driver's CUDA (nvidia-smi shows the highest CUDA it supports)",
        ),
    ),
    (_CUDA_OOM, _cuda_oom),
    (_UNRECOGNIZED, _unrecognized),
    (_INVALID_ARG, _invalid_arg),
    (
        _ENGINE_INIT,
        _fixed(
            FailureCause.ENGINE_INIT_FAILED,
            "the engine process failed during start; the lines above it in the log say why",
        ),
    ),
]


def classify_failure(line: str) -> StartupFailure | None:
    """The failure cause a single log line shows (the first row of `_FAILURES` that matches), or None."""
    text = _ANSI.sub("", line).rstrip()
    if _WARNING.search(text):
        return None
    for pattern, build in _FAILURES:
        if m := pattern.search(text):
            return build(m, text)
    return None


class VllmStartupLog:
    """Accumulates what a vLLM log has said so far; `feed` one line at a time."""

    def __init__(self) -> None:
        self.phase: Phase = Phase.STARTING
        self.kv_cache: KvCacheCapacity | None = None
        self.failure: StartupFailure | None = None
        self.vllm_version: str | None = None
        self.server_url: str | None = None
        self.weights_load_s: float | None = None
        self._available_gib: float | None = None

    def feed(self, line: str) -> list[PhaseChange]:
        """Take one log line; return the phase changes it caused (usually none)."""
        text = _ANSI.sub("", line).rstrip("\r\n")
        self._capture_facts(text)
        changes: list[PhaseChange] = []
        failure = classify_failure(text)
        if failure is not None:
            # A specific cause logged earlier beats the generic "Engine core initialization failed" after it.
            generic = self.failure is not None and self.failure.cause is FailureCause.ENGINE_INIT_FAILED
            if self.failure is None or (generic and failure.cause is not FailureCause.ENGINE_INIT_FAILED):
                self.failure = failure
            if self.phase is not Phase.FAILED:
                self.phase = Phase.FAILED
                changes.append(PhaseChange(Phase.FAILED, text))
            return changes
        if self.phase is Phase.FAILED:
            return changes
        for phase, pattern in _PHASE_MARKERS:
            if pattern.search(text):
                if phase > self.phase:
                    self.phase = phase
                    changes.append(PhaseChange(phase, text))
                break
        return changes

    def _capture_facts(self, text: str) -> None:
        if m := _ENGINE_VERSION.search(text) or _SERVER_VERSION.search(text):
            self.vllm_version = m[1]
        if m := _SERVER_URL.search(text):
            self.server_url = m[1]
        if (m := _WEIGHTS_LOADED.search(text)) and m[1]:
            self.weights_load_s = float(m[1])
        if m := _KV_AVAILABLE.search(text) or _KV_CPU_SET.search(text):
            self._available_gib = float(m[1])
            if self.kv_cache is not None:
                self.kv_cache = replace(self.kv_cache, available_gib=self._available_gib)
        if m := _KV_TOKENS.search(text):
            self.kv_cache = KvCacheCapacity(device=m[1], tokens=_int(m[2]), available_gib=self._available_gib)
        if (m := _KV_CONCURRENCY.search(text)) and self.kv_cache is not None:
            # 0.32+ prints this on the tokens line; 0.26 on the next line.
            self.kv_cache = replace(self.kv_cache, concurrency_tokens=_int(m[1]), max_concurrency=float(m[2]))

    def progress_line(self) -> str:
        """One human line for CLI progress and status, e.g. 'ready: CPU KV cache 46,592 tokens (22.75x …)'."""
        if self.failure is not None:
            return f"failed ({self.failure.cause}): {self.failure.hint}"
        text = self.phase.label
        if self.kv_cache is not None and self.phase >= Phase.KV_CACHE_ALLOCATED:
            kv = self.kv_cache
            text += f": {kv.device} KV cache {kv.tokens:,} tokens"
            if kv.max_concurrency is not None and kv.concurrency_tokens is not None:
                text += f" ({kv.max_concurrency:.2f}x at {kv.concurrency_tokens:,} tokens per request)"
        return text


def parse_startup_log(lines: str | list[str]) -> VllmStartupLog:
    """Feed a whole recorded log (text or lines) and return the resulting state."""
    log = VllmStartupLog()
    for line in lines.splitlines() if isinstance(lines, str) else lines:
        log.feed(line)
    return log
