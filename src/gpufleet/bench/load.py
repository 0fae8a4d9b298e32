"""Load generation: N streamed chat completions against one target at a fixed concurrency.

    samples, wall_s = await run_level(target, prompts, concurrency=4, requests=16, max_tokens=64)

A closed loop: `concurrency` workers each send their next request as soon as the previous one ends, so the
engine sees that many requests in flight. Each request is a streamed chat completion (temperature 0, a seed)
timed on the client: TTFT is the first chunk carrying text, inter-token latency the gaps between such chunks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp

from gpufleet.bench.stats import RequestSample
from gpufleet.bench.targets import BenchTarget
from gpufleet.errors import ConfigError

DEFAULT_PROMPTS = (
    "Explain in two sentences why the sky is blue.",
    "Write a short Python function that reverses a string.",
    "List three uses of a hash map.",
    "What is the capital of France? Answer with one sentence.",
    "Summarize what an HTTP load balancer does.",
    "Give a haiku about autumn.",
)


def load_prompts(path: Path | None) -> list[str]:
    """Prompts from a file (one per line, or JSONL with a "prompt" field); the built-in ones without a file."""
    if path is None:
        return list(DEFAULT_PROMPTS)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--prompts {path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"--prompts {path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"
        ) from None
    prompts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                item = json.loads(line)
            except ValueError:
                raise ConfigError(f"--prompts {path}: line {number} is not valid JSON") from None
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
                raise ConfigError(f'--prompts {path}: line {number} has no string "prompt" field')
            line = item["prompt"]
        prompts.append(line)
    if not prompts:
        raise ConfigError(f"--prompts {path}: no prompts in the file")
    return prompts


# Every answer exactly max_tokens long, so targets and levels do the same decode work. vLLM honours both
# (`min_tokens` stops it ending early at a stop string too); llama.cpp's server honours `ignore_eos` (with
# `max_tokens` as its `n_predict`) and ignores `min_tokens`. An engine that refuses them is run without.
FIXED_OUTPUT_PARAMS = ("ignore_eos", "min_tokens")


def fixed_output_fields(max_tokens: int) -> dict[str, object]:
    """The request fields that ask an engine for exactly `max_tokens` output tokens."""
    return {"ignore_eos": True, "min_tokens": max_tokens}


def request_body(
    target: BenchTarget, prompt: str, *, max_tokens: int, seed: int, fixed_output: bool = False
) -> dict[str, object]:
    """The chat completion one benchmark request sends."""
    body: dict[str, object] = {
        "model": target.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if fixed_output:
        body.update(fixed_output_fields(max_tokens))
    return body


def _chunk_text(chunk: dict[str, object]) -> str:
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta")
    if not isinstance(delta, dict):
        return ""
    # Reasoning models stream their thinking first; it is output the engine generated all the same.
    parts = [delta.get(key) for key in ("content", "reasoning", "reasoning_content")]
    return "".join(part for part in parts if isinstance(part, str))


def _error_text(status: int, body: bytes) -> str:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode(errors="replace").strip()
    return f"HTTP {status}: {message}"[:300]


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Bearer header for `api_key`, none without one."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def fresh_connections(limit: int) -> aiohttp.TCPConnector:
    """A connector that opens a new connection per request (~0.1 ms on loopback, the same for every target):
    llama.cpp's server closes kept-alive connections after a few requests, and aiohttp then fails the next
    POST on it ("Can not write request body") instead of retrying."""
    return aiohttp.TCPConnector(limit=limit, force_close=True)


async def one_request(
    session: aiohttp.ClientSession, target: BenchTarget, body: dict[str, object], headers: dict[str, str]
) -> RequestSample:
    """Send one streamed chat completion and time it; failures become a sample with `ok=False`."""
    started = time.perf_counter()
    token_times: list[float] = []
    usage_tokens: int | None = None
    try:
        async with session.post(f"{target.base_url}/chat/completions", json=body, headers=headers) as response:
            if response.status != 200:
                return RequestSample(ok=False, error=_error_text(response.status, await response.read()))
            async for raw in response.content:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    return RequestSample(ok=False, error=f"invalid SSE data: {data[:80]!r}")
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    return RequestSample(ok=False, error=f"stream error: {str(chunk['error'])[:200]}")
                if _chunk_text(chunk):
                    token_times.append(time.perf_counter() - started)
                usage = chunk.get("usage")
                if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                    usage_tokens = usage["completion_tokens"]
    except (TimeoutError, aiohttp.ClientError, OSError) as err:
        return RequestSample(ok=False, error=f"{type(err).__name__}: {err}"[:300])
    latency = time.perf_counter() - started
    if not token_times:
        return RequestSample(ok=False, latency_s=latency, error="the stream ended without any output text")
    gaps = tuple(b - a for a, b in itertools.pairwise(token_times))
    # The engine's own count when it sends usage; else one token per text chunk.
    tokens = usage_tokens if usage_tokens is not None else len(token_times)
    return RequestSample(ok=True, ttft_s=token_times[0], latency_s=latency, output_tokens=tokens, itl_s=gaps)


async def run_level(
    target: BenchTarget,
    prompts: Sequence[str],
    *,
    concurrency: int,
    requests: int,
    max_tokens: int,
    api_key: str | None = None,
    timeout_s: float = 600,
    on_done: Callable[[RequestSample], None] | None = None,
    seed_offset: int = 0,
    fixed_output: bool = False,
) -> tuple[list[RequestSample], float]:
    """`requests` requests with `concurrency` in flight; returns the samples and the wall time in seconds."""
    headers = auth_headers(api_key)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    samples: list[RequestSample] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = fresh_connections(concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = request_body(
                target,
                prompts[index % len(prompts)],
                max_tokens=max_tokens,
                seed=seed_offset + index,
                fixed_output=fixed_output,
            )
            sample = await one_request(session, target, body, headers)
            samples.append(sample)
            if on_done is not None:
                on_done(sample)

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(min(concurrency, requests))))
        wall_s = time.perf_counter() - started
    return samples, wall_s
