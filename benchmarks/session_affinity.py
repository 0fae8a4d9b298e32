"""Agent sessions on two real llama.cpp replicas: time to first token with session affinity vs without.

One gateway serves two embedded llama.cpp replicas of SmolLM2-135M behind two routes over the same pair:
``affine`` (the default: a session sticks to one replica) and ``spread`` (``affinity: false``: least-loaded,
ties taken in turn). Eight agent sessions per route each run six turns through ``POST /v1/responses`` with
``prompt_cache_key`` (Codex's session id), or with ``--api messages`` through ``POST /v1/messages`` with
the session in ``metadata.user_id`` (Claude Code's form): a long system prompt, then a growing conversation
(every turn sends the whole history plus a new user message, as an agent does). Both routes' requests are interleaved
in one seeded random order, one at a time, so machine noise hits both alike; every session's text is
unique from its first token, so one session never finds another's prefix in an engine's cache.

Time to first token (the first ``response.output_text.delta`` / ``text_delta``) is what the engine's prefix cache saves:
a turn that lands on the replica holding its session's previous turn prefills only the new tokens. The
script prints TTFT p50/p90 of turns 2 and later and of turn 1 for each route, and how the turns spread.

Usage::

    .venv/bin/python benchmarks/session_affinity.py                 # 8 sessions x 6 turns per route
    .venv/bin/python benchmarks/session_affinity.py --sessions 4 --turns 4 --threads 2
    .venv/bin/python benchmarks/session_affinity.py --api messages  # Claude Code's metadata.user_id
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from harness import free_port, machine_line, start_service, wait_ready

ROUTES = ("affine", "spread")
REPLICAS = ("smol-a", "smol-b")
# A coding agent's standing instructions: long enough that prefilling it is most of a turn's cost.
SYSTEM = " ".join(
    f"Rule {i}: keep edits small, run the tests after each change, and explain every command before it runs."
    for i in range(1, 9)
)
QUESTIONS = (
    "List the files in the project and say which one holds the entry point.",
    "Open the entry point and describe what its main function does.",
    "Which test covers that function? Name the file.",
    "Run that test and report whether it passes.",
    "Suggest one small refactor of the main function.",
    "Write the commit message for that refactor.",
)


@dataclass
class Session:
    """One agent conversation on one route; `history` grows by two items a turn."""

    route: str
    key: str
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Turn:
    route: str
    turn: int
    ttft_ms: float
    replica: str
    session: str


def gateway_config(port: int, threads: int) -> dict[str, Any]:
    # 8 slots of 1024 tokens each: room for every session a replica sees (llama.cpp keeps one prompt per slot
    # and picks the slot whose cached prompt matches best), the longest conversation fits a slot.
    replica = {
        "engine": "llamacpp",
        "source": "package:smollm2-135m-instruct",
        "context": 8192,
        "parallel": 8,
        "threads": threads,
        "preload": True,
        "listed": False,
    }
    return {
        "server": {"port": port, "queue_timeout_s": 600},
        "models": {name: dict(replica) for name in REPLICAS},
        "routes": {"affine": {"targets": list(REPLICAS)}, "spread": {"targets": list(REPLICAS), "affinity": False}},
    }


def responses_body(session: Session, question: str, max_tokens: int) -> dict[str, Any]:
    """Codex's shape: `input` items, `instructions`, the session in `prompt_cache_key`."""
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]}
    return {
        "model": session.route,
        "instructions": f"Session {session.key}. {SYSTEM}",
        "input": [*session.history, user],
        "prompt_cache_key": session.key,
        "max_output_tokens": max_tokens,
        "temperature": 0,
        "store": False,
        "stream": True,
    }


def messages_body(session: Session, question: str, max_tokens: int) -> dict[str, Any]:
    """Claude Code's shape: `system`, `messages`, the session at the end of `metadata.user_id`."""
    return {
        "model": session.route,
        "system": f"Session {session.key}. {SYSTEM}",
        "max_tokens": max_tokens,
        "messages": [*session.history, {"role": "user", "content": question}],
        "temperature": 0,
        "metadata": {"user_id": f"user_bench_account_bench_session_{session.key}"},
        "stream": True,
    }


# Per API: path, request body, the event type of a text delta and where its text is, the history entries.
API = {
    "responses": (
        "/v1/responses",
        responses_body,
        "response.output_text.delta",
        lambda e: e["delta"],
        lambda q, a: [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": q}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": a}]},
        ],
    ),
    "messages": (
        "/v1/messages",
        messages_body,
        "content_block_delta",
        lambda e: e["delta"].get("text", ""),
        lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a or "."}],
    ),
}


async def run_turn(
    http: aiohttp.ClientSession, base: str, api: str, session: Session, turn: int, max_tokens: int
) -> Turn:
    """One streamed turn: its TTFT and the replica that served it; the answer joins the session's history."""
    path, body_of, delta_type, delta_text, history_of = API[api]
    question = QUESTIONS[turn % len(QUESTIONS)]
    started = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    async with http.post(base + path, json=body_of(session, question, max_tokens)) as reply:
        if reply.status != 200:
            raise RuntimeError(f"{session.route} turn {turn + 1}: HTTP {reply.status}: {await reply.text()}")
        replica = reply.headers.get("x-gpufleet-model", "?")
        async for raw in reply.content:
            if not raw.startswith(b"data: "):
                continue
            event = orjson.loads(raw[6:])
            if event.get("type") == delta_type:
                piece = delta_text(event)
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
            elif event.get("type") in ("response.failed", "error"):
                raise RuntimeError(f"{session.route} turn {turn + 1}: {event}")
    # An empty answer has no delta: its first (and only) output is the end of the stream.
    ttft_ms = ((first or time.perf_counter()) - started) * 1000
    session.history += history_of(question, "".join(text))
    return Turn(session.route, turn + 1, ttft_ms, replica, session.key)


async def measure(base: str, api: str, sessions: int, turns: int, max_tokens: int, seed: int) -> list[Turn]:
    rng = random.Random(seed)
    # Distinct keys per route: the affine route's pins must not decide where the spread route's turns go.
    all_sessions = [
        Session(route, f"{route}-{i}-{rng.getrandbits(32):08x}") for route in ROUTES for i in range(sessions)
    ]
    results: list[Turn] = []
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for turn in range(turns):
            order = list(all_sessions)
            rng.shuffle(order)  # a seeded interleaving: neither route always goes first, noise hits both
            for session in order:
                results.append(await run_turn(http, base, api, session, turn, max_tokens))
                print(
                    f"  turn {turn + 1} {session.key:22s} {results[-1].replica}  TTFT {results[-1].ttft_ms:7.1f} ms",
                    file=sys.stderr,
                )
    return results


def continuity(results: list[Turn], route: str) -> tuple[int, int]:
    """(turns 2+ served by the replica that served the session's previous turn, turns 2+)."""
    last: dict[str, str] = {}
    same = total = 0
    for r in results:
        if r.route != route:
            continue
        if r.session in last:
            total += 1
            same += last[r.session] == r.replica
        last[r.session] = r.replica
    return same, total


def report(results: list[Turn]) -> None:
    p50: dict[str, float] = {}
    print(
        "\nroute    affinity  TTFT p50 turns 2+  p90 turns 2+   p50 turn 1  same replica as last turn  "
        "turns per replica"
    )
    for route in ROUTES:
        later = [r.ttft_ms for r in results if r.route == route and r.turn > 1]
        first = [r.ttft_ms for r in results if r.route == route and r.turn == 1]
        per_replica = Counter(r.replica for r in results if r.route == route)
        same, total = continuity(results, route)
        p50[route] = statistics.median(later)
        p90 = statistics.quantiles(later, n=10)[-1] if len(later) > 1 else later[0]
        spread = ", ".join(f"{name} {count}" for name, count in sorted(per_replica.items()))
        print(
            f"{route:8s} {'on' if route == 'affine' else 'off':8s}  {p50[route]:13.1f} ms  {p90:10.1f} ms  "
            f"{statistics.median(first):7.1f} ms  {same:>14d}/{total:<10d}  {spread}"
        )
    print(
        f"\naffinity cuts TTFT p50 of turns 2+ by {p50['spread'] / p50['affine']:.1f}x "
        f"({p50['spread'] - p50['affine']:.1f} ms)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--api",
        choices=sorted(API),
        default="responses",
        help="responses: prompt_cache_key (Codex); messages: metadata.user_id (Claude Code)",
    )
    parser.add_argument("--sessions", type=int, default=8, help="sessions per route")
    parser.add_argument("--turns", type=int, default=6, help="turns per session")
    parser.add_argument("--max-tokens", type=int, default=16, help="answer length cap per turn")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per replica")
    parser.add_argument("--seed", type=int, default=1, help="the interleaving's and session keys' seed")
    args = parser.parse_args()
    if args.turns < 2 or args.sessions < 1:
        parser.error("need at least 1 session and 2 turns (turns 2+ are what is measured)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        config = log_dir / "gpufleet.yaml"
        config.write_text(yaml.safe_dump(gateway_config(port, args.threads)))
        gateway = start_service(
            "gpufleet", [sys.executable, "-m", "gpufleet.cli", "serve", "--config", str(config)], log_dir, None
        )
        try:
            wait_ready(gateway, f"http://127.0.0.1:{port}/health/ready", 300)
            print(machine_line())
            started = time.perf_counter()
            results = asyncio.run(
                measure(f"http://127.0.0.1:{port}", args.api, args.sessions, args.turns, args.max_tokens, args.seed)
            )
            print(
                f"{args.api}: {args.sessions} sessions x {args.turns} turns per route, "
                f"answers of at most {args.max_tokens} tokens, "
                f"temperature 0, {args.threads} thread(s) per replica, {time.perf_counter() - started:.0f} s; "
                f"{machine_line().rsplit('; ', 1)[-1]} at the end"
            )
            report(results)
        finally:
            gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
