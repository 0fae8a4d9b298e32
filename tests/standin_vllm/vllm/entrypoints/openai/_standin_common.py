"""Shared bits of the STAND-IN vLLM (tests only, not vLLM): log output and the abrupt crash."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

VERSION = "0.32.0"
BLOCK_SIZE = 128  # the CPU backend's block size in the recording

CRASH_LINES = [
    "(EngineCore pid={pid}) ERROR {ts} [core.py:1188] EngineCore encountered a fatal error.",
    "(APIServer pid={pid}) ERROR {ts} [async_llm.py:708] AsyncLLM output_handler failed.",
    "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the"
    " root cause.",
]


def say(line: str) -> None:
    print(line, flush=True)


def ts() -> str:
    return time.strftime("%m-%d %H:%M:%S")


def info(message: str, where: str = "api_server.py:1") -> None:
    say(f"(APIServer pid={os.getpid()}) INFO {ts()} [{where}] {message}")


def crash_later(delay_s: float, once_file: str | None) -> None:
    if once_file:
        marker = Path(once_file)
        if marker.exists():
            return
        marker.touch()

    def crash() -> None:
        time.sleep(delay_s)
        for line in CRASH_LINES:
            say(line.format(pid=os.getpid(), ts=ts()))
        os._exit(1)  # abrupt: no shutdown, like a dying engine core taking the server down

    threading.Thread(target=crash, daemon=True).start()
