"""The HTTP side of the STAND-IN vLLM (tests only, not vLLM); imported once the startup log is replayed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
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
from vllm.entrypoints.openai._standin_common import BLOCK_SIZE, VERSION, crash_later, info, say, ts


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
        worker_pid_file = os.environ.get("STANDIN_VLLM_WORKER_PID_FILE")
        if worker_pid_file:
            worker = subprocess.Popen(
                ["sleep", "300"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            Path(worker_pid_file).write_text(str(worker.pid))
        crash_after = os.environ.get("STANDIN_VLLM_CRASH_AFTER_S")
        if crash_after:
            crash_later(float(crash_after), os.environ.get("STANDIN_VLLM_CRASH_ONCE_FILE"))
        yield

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return _json({"version": VERSION})

    async def models(self, request: Request) -> Response:
        card = {
            "id": self.name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": self.args.model,
            "parent": None,
            "max_model_len": self.args.max_model_len,
        }
        return _json({"object": "list", "data": [card]})

    async def chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("model") != self.name:
            return _error(
                f"The model `{body.get('model')}` does not exist. Valid aliases: {self.name}.",
                "NotFoundError",
                "model",
                404,
            )
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and max_tokens > self.args.max_model_len:
            return _error(
                f"max_tokens={max_tokens} cannot be greater than max_model_len={self.args.max_model_len}."
                f" Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})",
                "BadRequestError",
                "max_tokens",
                400,
            )
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
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + len(words),
            "completion_tokens": len(words),
            "prompt_tokens_details": None,
        }
        if body.get("stream"):
            return StreamingResponse(self._stream(words, usage, chat, body), media_type="text/event-stream")
        content = " ".join(words)
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": None},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
        else:
            choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": "stop", "stop_reason": None}
        answer = {
            "id": "chatcmpl-standin" if chat else "cmpl-standin",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [choice],
            "system_fingerprint": f"vllm-{VERSION}-standin",
            "usage": usage,
        }
        return _json(answer)

    async def _stream(
        self, words: list[str], usage: dict[str, Any], chat: bool, body: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        self.running += 1
        try:
            base = {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()),
                "model": self.name,
            }
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
            say(
                f"(APIServer pid={os.getpid()}) ERROR {ts()} [serving.py:1] Sleep mode is not enabled; start with"
                " --enable-sleep-mode"
            )
            return Response(b"Internal Server Error", status_code=500, media_type="text/plain")
        self.paused = True
        self.awake.clear()
        if level >= 1:
            self.sleep_level = level
            self.sleeping_tags = {"weights", "kv_cache"}
            say(
                f"(Worker pid={os.getpid()}) INFO {ts()} [gpu_worker.py:310] Sleep mode freed 20.93 GiB memory,"
                " 1.12 GiB memory is still in use."
            )
            say(
                f"(EngineCore pid={os.getpid()}) INFO {ts()} [abstract.py:391] It took 0.412345 seconds to fall asleep."
            )
        return _json({"status": "sleeping", "level": level})

    async def wake_up(self, request: Request) -> Response:
        tags: list[str] | None = request.query_params.getlist("tags") or None
        info(f"wake up the engine with tags: {tags}", "api_router.py:50")
        wake = [t for t in (tags or list(self.sleeping_tags)) if t != "scheduling"]
        if self.sleeping_tags and all(t in self.sleeping_tags for t in wake):
            self.sleeping_tags -= set(wake)
            say(
                f"(EngineCore pid={os.getpid()}) INFO {ts()} [abstract.py:408] It took 0.301234 seconds to wake up"
                f" tags {tags if tags is not None else sorted(wake)}."
            )
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
        states = {
            "awake": float(self.sleep_level == 0 and not self.paused),
            "weights_offloaded": float(self.sleep_level == 1),
            "discard_all": float(self.sleep_level == 2),
        }
        blocks = self.kv_tokens // BLOCK_SIZE
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
            f'vllm:cache_config_info{{block_size="{BLOCK_SIZE}",cache_dtype="auto",engine="0",'
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
        return {
            "type": "int_parsing",
            **where,
            "msg": "Input should be a valid integer, unable to parse string as an integer",
        }
    if level < 0:
        return {
            "type": "greater_than_equal",
            **where,
            "msg": "Input should be greater than or equal to 0",
            "ctx": {"ge": 0},
        }
    if level > 2:
        return {"type": "less_than_equal", **where, "msg": "Input should be less than or equal to 2", "ctx": {"le": 2}}
    return None


def _check_mode(mode: str) -> dict[str, Any] | None:
    """FastAPI's validation error for `mode: PauseMode` (Literal["abort", "wait", "keep"]), or None when valid."""
    if mode in ("abort", "wait", "keep"):
        return None
    expected = "'abort', 'wait' or 'keep'"
    return {
        "type": "literal_error",
        "loc": ["query", "mode"],
        "msg": f"Input should be {expected}",
        "input": mode,
        "ctx": {"expected": expected},
    }


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


def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM (uvicorn prints the same "Started server process ... Application startup complete")."""
    server = StandInServer(args)
    uvicorn.run(server.app(), host=args.host, port=args.port, log_level="info", access_log=False, lifespan="on")
