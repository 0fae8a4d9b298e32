"""Credentials of a remote url never appear in failure messages (issue 20 §4): connection refused, timeout and
a connection dropped after the request was sent, in the client's body, /status and the logs.

Upstreams: a closed port, the STAND-IN upstream (standin_upstream.py) told to hang, and a STAND-IN socket
server that reads the request and closes the connection without an answer.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gpufleet.config import parse_config
from gpufleet.errors import UpstreamError
from gpufleet.gateway import build_app, running
from gpufleet.redact import mask_credentials
from tests.standin_upstream import StandInUpstream

SECRET = "hunter2-s3cret"
USER = "bobthebuilder"


@pytest.fixture(scope="module")
def hanging() -> Iterator[StandInUpstream]:
    server = StandInUpstream().start()
    server.behaviour = "hang"
    yield server
    server.behaviour = "ok"
    server.stop()


@pytest.fixture(scope="module")
def dropping() -> Iterator[int]:
    """A STAND-IN that reads one request and closes the connection without answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def _secret(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{SECRET}@")


def _assert_clean(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and USER not in text, text


@pytest.mark.parametrize("case", ["refused", "timeout", "dropped"])
async def test_failure_messages_never_carry_url_credentials(
    case: str, hanging: StandInUpstream, dropping: int, caplog: pytest.LogCaptureFixture
) -> None:
    url = {"refused": "http://127.0.0.1:9/v1", "timeout": hanging.url, "dropped": f"http://127.0.0.1:{dropping}/v1"}[
        case
    ]
    model: dict[str, Any] = {"engine": "remote", "url": _secret(url), "timeout_s": 1}
    app = build_app(parse_config({"models": {"rig": model}}))
    caplog.set_level(logging.DEBUG)
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=30) as http,
    ):
        body = {"model": "rig", "messages": [{"role": "user", "content": "hi"}]}
        response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code in (502, 503, 504), response.text
        stream = await http.post("/v1/chat/completions", json={**body, "stream": True})
        status = (await http.get("/status")).text
    assert "***@127.0.0.1" in status  # the failure is shown, with the URL redacted
    _assert_clean(response.text, stream.text, status, caplog.text)


@pytest.mark.parametrize(
    "text",
    [
        "cannot connect to http://bob:pw@10.0.0.5:8000/v1: refused",
        "Cannot connect to host bob:pw@10.0.0.5:8000 ssl:default",
        "url='https://token@h.example/v1/chat/completions'",
    ],
)
def test_mask_credentials_in_free_text(text: str) -> None:
    masked = mask_credentials(text)
    assert "pw" not in masked and "token" not in masked and "***@" in masked


def test_upstream_error_masks_credentials_whoever_builds_it() -> None:
    err = UpstreamError("upstream http://bob:pw@10.0.0.5/v1 failed")
    assert str(err) == "upstream http://***@10.0.0.5/v1 failed" and err.message == str(err)
