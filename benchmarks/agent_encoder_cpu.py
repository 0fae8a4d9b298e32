"""CPU time of the Messages and Responses translation alone, in-process: this checkout against a baseline.

What `agent_protocol_overhead.py` measures end to end (through a gateway, on a shared machine) moves by more
than the translation costs; this times only the code the translation adds, in one process, with
``time.process_time``: each protocol's stream encoder over the chunks ``fixed_upstream.py`` sends (16
content chunks and the usage chunk), the request translation (body bytes -> chat payload) and the answer
translation (chat.completion -> the protocol's JSON bytes). The chat path's own work on the same chunks
(``orjson.dumps`` of each, as the relay writes them) is the reference. ``--baseline-src DIR`` loads a second
copy of ``gpufleet.protocols`` from another checkout's ``src/`` into the same process; rounds alternate
between the two, so the machine's load hits both alike. Printed: the median (and min) CPU µs per call over
the rounds.

Usage::

    .venv/bin/python benchmarks/agent_encoder_cpu.py
    .venv/bin/python benchmarks/agent_encoder_cpu.py --baseline-src /tmp/main-src/src --rounds 40
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from agent_protocol_overhead import bodies
from harness import BENCH_DIR, machine_line

CONTENT = "The quick brown fox jumps over the lazy dog."  # fixed_upstream.py's answer


def stream_chunks(n_chunks: int = 16) -> list[dict[str, Any]]:
    """The chat chunks of fixed_upstream.py's stream (after the relay parsed them), then its usage chunk."""
    words = CONTENT.split(" ")
    chunks: list[dict[str, Any]] = []
    for i in range(n_chunks):
        delta = {"content": words[i % len(words)] + " "}
        if i == 0:
            delta["role"] = "assistant"
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if i == n_chunks - 1 else None}
        chunks.append(
            {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "bench", "choices": [choice]}
        )
    usage = {"prompt_tokens": 12, "completion_tokens": n_chunks, "total_tokens": 12 + n_chunks}
    chunks.append(
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "bench", "choices": [], "usage": usage}
    )
    return chunks


def load_protocols(src: Path) -> ModuleType:
    """`gpufleet.protocols` imported from `src` (a fresh copy of the package: earlier imports are set aside)."""
    for name in [name for name in sys.modules if name == "gpufleet" or name.startswith("gpufleet.")]:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        return importlib.import_module("gpufleet.protocols")
    finally:
        sys.path.remove(str(src))


def cases(protocols: ModuleType) -> dict[str, Callable[[], object]]:
    """What the translation adds, per request: stream encoders, request and answer translations."""
    chunks = stream_chunks()
    responses_body = orjson.dumps(bodies("bench", True)["responses"][1])
    messages_body = orjson.dumps(bodies("bench", True)["messages"][1])
    request = orjson.loads(responses_body)
    answer = {
        "id": "c",
        "object": "chat.completion",
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": CONTENT}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }

    def responses_stream() -> None:
        encoder = protocols.ResponsesStreamEncoder(request, "bench")
        for chunk in chunks:
            encoder.chunk(chunk)
        encoder.done()

    def messages_stream() -> None:
        encoder = protocols.MessagesStreamEncoder("bench")
        for chunk in chunks:
            encoder.chunk(chunk)
        encoder.done()

    return {
        "Responses stream encoder": responses_stream,
        "Messages stream encoder": messages_stream,
        "Responses request": lambda: protocols.responses_to_chat(orjson.loads(responses_body)),
        "Messages request": lambda: protocols.messages_to_chat(orjson.loads(messages_body)),
        "Responses answer": lambda: orjson.dumps(protocols.chat_to_response(answer, request, "bench")),
        "Messages answer": lambda: orjson.dumps(protocols.chat_to_message(answer, "bench")),
    }


def chat_stream(chunks: list[dict[str, Any]]) -> Callable[[], object]:
    """The chat path's write of the same chunks (the reference)."""

    def write() -> None:
        for chunk in chunks:
            b"data: " + orjson.dumps(chunk) + b"\n\n"

    return write


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", metavar="DIR", type=Path, help="another checkout's src/ to compare")
    parser.add_argument("--rounds", type=int, default=30, help="rounds; each times every case once")
    parser.add_argument("--calls", type=int, default=300, help="calls of a case per round")
    args = parser.parse_args()
    sources = {"this checkout": BENCH_DIR.parent / "src"}
    if args.baseline_src is not None:
        sources["baseline"] = args.baseline_src.resolve()
    reference = chat_stream(stream_chunks())
    table: dict[tuple[str, str], Callable[[], object]] = {("chat (reference)", "chat stream re-encode"): reference}
    for label, src in sources.items():
        for name, case in cases(load_protocols(src)).items():
            table[(label, name)] = case
    print(machine_line())
    cpu_us: dict[tuple[str, str], list[float]] = {key: [] for key in table}
    for _ in range(args.rounds):
        for key, case in table.items():
            started = time.process_time()
            for _ in range(args.calls):
                case()
            cpu_us[key].append((time.process_time() - started) / args.calls * 1e6)
    names = ["chat stream re-encode", *cases(load_protocols(sources["this checkout"]))]
    print(f"\nCPU µs per call, median (min) of {args.rounds} rounds x {args.calls} calls:")
    print(f"  {'':26s}" + "".join(f"{label:>24s}" for label in ["chat (reference)", *sources]))
    for name in names:
        cells = []
        for label in ["chat (reference)", *sources]:
            values = cpu_us.get((label, name))
            cells.append(f"{statistics.median(values):11.1f} ({min(values):6.1f})" if values else " " * 20)
        print(f"  {name:26s}" + "".join(f"{cell:>24s}" for cell in cells))
    print(machine_line().rsplit("; ", 1)[-1], "at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
