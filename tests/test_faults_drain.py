"""SIGTERM with streams in flight: a real `gpufleet serve` process drains instead of cutting them.

The upstream is the FAULT-INJECTING STAND-IN (tests/fault_upstream.py) in its slow mode: one event every
0.3 s, as many events as the request's max_tokens. A short stream finishes inside server.shutdown_grace_s
and ends normally; a long one is ended by the gateway with a `gateway_shutting_down` error event and
[DONE], never cut silently; new connections are refused as soon as the signal arrives.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gpufleet.engine_supervisor.ports import free_port
from tests.fault_upstream import FaultUpstream


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    server = FaultUpstream().start()
    yield server
    server.stop()


class StreamReader(threading.Thread):
    """Reads one streamed chat completion in the background; `started` is set at its first event."""

    def __init__(self, url: str, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.max_tokens = url, max_tokens
        self.started = threading.Event()
        self.events: list[Any] = []

    def run(self) -> None:
        body = {
            "model": "a",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": self.max_tokens,
        }
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.events.append(line[6:] if line == "data: [DONE]" else orjson.loads(line[6:]))
                    self.started.set()


@pytest.mark.processes
def test_sigterm_drains_streams_in_flight(upstream: FaultUpstream, tmp_path: Path) -> None:
    upstream.reset("slow-events")
    upstream.interval_s = 0.3
    port = free_port()
    config = {
        "server": {"port": port, "shutdown_grace_s": 2},
        "models": {"a": {"engine": "remote", "url": upstream.url, "upstream_model": "up"}},
    }
    path = tmp_path / "gpufleet.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-c", "from gpufleet.cli import main; main()", "serve", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        short, long = StreamReader(url, 3), StreamReader(url, 200)  # ~1 s and ~60 s of upstream output
        for reader in (short, long):
            reader.start()
            assert reader.started.wait(20)
        process.send_signal(signal.SIGTERM)
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                httpx.get(f"{url}/health", timeout=1)
                time.sleep(0.05)
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                # Refused, or (a connection the kernel queued just before the listener closed) closed unanswered.
                refused = True
        assert refused, "the gateway kept accepting connections after SIGTERM"
        short.join(20)
        long.join(20)
        assert process.wait(30) is not None
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0]
    # The short stream finished inside the grace: a normal end.
    assert short.events[-1] == "[DONE]" and "error" not in short.events[-2], output
    assert [c["choices"][0]["finish_reason"] for c in short.events[:-1] if c.get("choices")][-1] == "stop"
    # The long one was ended by the gateway: an error event naming the shutdown, then [DONE].
    assert long.events[-1] == "[DONE]", output
    error = long.events[-2]["error"]
    assert error["code"] == "gateway_shutting_down" and "server.shutdown_grace_s" in error["message"]
    assert not any(c.get("finish_reason") for e in long.events[:-2] if e.get("choices") for c in e["choices"])
    assert upstream.wait_for(lambda u: u.closed_early == 1)  # and the upstream was told to stop
