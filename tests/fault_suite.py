"""What the fault tests (test_faults.py, test_faults_fallback.py) share: two fault stand-ins `a` and `b`, the
gateway config over them, and readers of what a client and /status, /metrics see.

A test module takes the fixtures by importing them (`from tests.fault_suite import reset, upstreams`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.fault_upstream import FaultUpstream


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, FaultUpstream]]:
    servers = {name: FaultUpstream().start() for name in ("a", "b")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(autouse=True)
def reset(upstreams: dict[str, FaultUpstream]) -> None:
    for server in upstreams.values():
        server.reset()


def config(
    upstreams: dict[str, FaultUpstream],
    *,
    server: dict[str, Any] | None = None,
    router: dict[str, Any] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Models `a` and `b` on the two stand-ins; route `ab` tries a, then falls back to b."""
    models: dict[str, Any] = {}
    for name, upstream in upstreams.items():
        models[name] = {"engine": "remote", "url": upstream.url, "upstream_model": f"up-{name}"}
        if timeout_s is not None:
            models[name]["timeout_s"] = timeout_s
    return {
        "server": {"max_upstream_event_bytes": 1 << 20, "max_upstream_body_bytes": 1 << 20, **(server or {})},
        "models": models,
        "routes": {"ab": {"targets": ["a"], "fallbacks": ["b"]}},
        "router": {"retry_backoff_s": 0, "cooldown_s": 30, **(router or {})},
    }


def sse_events(text: str) -> list[Any]:
    """Every `data:` line decoded; a line that is not JSON fails the test (a garbled event reached the client)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def content(events: list[Any]) -> str:
    return "".join(
        (e["choices"][0].get("delta") or {}).get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


def assert_ends_with_stream_error(
    events: list[Any], code: str = "upstream_stream_error", *, finished: bool = False
) -> dict[str, Any]:
    """A broken stream: the error event, then [DONE], and no finish_reason anywhere (it did not finish) unless
    `finished` (the break came after the finish chunk, e.g. in the usage chunk)."""
    assert events[-1] == "[DONE]", events
    assert events.count("[DONE]") == 1
    error = events[-2]["error"]
    assert error["code"] == code and error["type"] == "server_error", error
    if not finished:
        assert not any(
            c.get("finish_reason") for e in events[:-2] if isinstance(e, dict) for c in e.get("choices") or ()
        )
    return dict(error)


async def status_of(http: httpx.AsyncClient, model: str) -> dict[str, Any]:
    targets = (await http.get("/status")).json()["targets"]
    return dict(next(t for t in targets if t["model"] == model))


async def fallbacks_counted(http: httpx.AsyncClient, reason: str, *, from_model: str = "a", route: str = "ab") -> float:
    """gpufleet_fallbacks_total for moving off `from_model` on `route` for `reason` (0.0: never counted)."""
    series = f'gpufleet_fallbacks_total{{from_model="{from_model}",reason="{reason}",route="{route}"}} '
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(series):
            return float(line.removeprefix(series))
    return 0.0
