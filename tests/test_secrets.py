"""Secrets and exposure (issue 12): credentials in a remote url never shown, admin closed off when the
gateway is reachable without keys, an optional key on /metrics, no engine log in a client's 503.

Upstreams are the STAND-IN from standin_upstream.py; the real embedded engine's loopback binding is checked
in test_request_validation_real.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from gpufleet.config import parse_config
from gpufleet.errors import ConfigError, EngineError
from gpufleet.gateway import build_app, running
from gpufleet.gateway.auth import exposure_warning, is_loopback
from gpufleet.redact import redact_url
from tests.real_engines import smollm2_model
from tests.standin_upstream import StandInUpstream

SECRET = "hunter2-s3cret"


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandInUpstream]:
    server = StandInUpstream().start()
    yield server
    server.stop()


async def client_for(config: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(parse_config(config))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        yield http


@pytest.fixture
async def secret_url_gateway(upstream: StandInUpstream) -> AsyncIterator[httpx.AsyncClient]:
    url = upstream.url.replace("http://", f"http://bob:{SECRET}@")
    async for http in client_for({"models": {"rig": {"engine": "remote", "url": url}}}):
        yield http


async def test_credentials_in_a_remote_url_are_never_shown(
    secret_url_gateway: httpx.AsyncClient, upstream: StandInUpstream
) -> None:
    http = secret_url_gateway
    response = await http.post(
        "/v1/chat/completions", json={"model": "rig", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200
    assert upstream.headers[-1]["authorization"].startswith("Basic ")  # the credentials still reach the upstream
    assert response.headers["x-gpufleet-target"] == f"remote:http://***@127.0.0.1:{upstream.port}/v1"
    status = (await http.get("/status")).text
    metrics = (await http.get("/metrics")).text
    for shown in (status, metrics, str(response.headers)):
        assert SECRET not in shown and "bob" not in shown
    assert "***@127.0.0.1" in status and "***@127.0.0.1" in metrics


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://bob:pw@10.0.0.5:8000/v1", "http://***@10.0.0.5:8000/v1"),
        ("http://token@10.0.0.5/v1", "http://***@10.0.0.5/v1"),
        ("https://h/v1?key=abc&api-version=2", "https://h/v1?key=***&api-version=***"),
        ("http://10.0.0.5:8000/v1", "http://10.0.0.5:8000/v1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_url_with_credentials_and_api_key_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"models": {"rig": {"engine": "remote", "url": f"http://bob:{SECRET}@h/v1", "api_key": "k"}}},
            file="gpufleet.yaml",
        )
    message = str(caught.value)
    assert message.startswith("gpufleet.yaml: models.rig: ")
    assert "api_key" in message and "credentials" in message and SECRET not in message


def test_url_with_a_query_string_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"models": {"rig": {"engine": "remote", "url": f"http://h/v1?key={SECRET}"}}}, file="gpufleet.yaml"
        )
    message = str(caught.value)
    assert message.startswith("gpufleet.yaml: models.rig.url: ") and "query string" in message
    assert SECRET not in message


# --- exposure: non-loopback without keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("gpu-box.lan", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_exposure_warning_only_without_keys_off_loopback() -> None:
    def server(**fields: Any) -> Any:
        return parse_config({"server": fields, "models": {"m": smollm2_model()}}).server

    assert exposure_warning(server()) is None
    assert exposure_warning(server(host="0.0.0.0", api_keys=["k"])) is None
    warning = exposure_warning(server(host="0.0.0.0"))
    assert warning is not None and "WITHOUT server.api_keys" in warning and "/admin/* is refused" in warning


def admin_config(**server: Any) -> dict[str, Any]:
    return {"server": server, "models": {"cold": smollm2_model(preload=False)}}


async def test_admin_is_refused_off_loopback_without_keys(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gpufleet.gateway"):
        async for http in client_for(admin_config(host="0.0.0.0")):
            response = await http.post("/admin/models/cold/stop")
            assert response.status_code == 403
            error = response.json()["error"]
            assert error["code"] == "admin_requires_api_key"
            assert "server.api_keys" in error["message"] and "allow_unauthenticated_admin" in error["message"]
    assert any("SECURITY" in r.getMessage() and "0.0.0.0" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("server", [{"host": "0.0.0.0", "allow_unauthenticated_admin": True}, {}])
async def test_admin_allowed_on_loopback_or_when_opened(server: dict[str, Any]) -> None:
    async for http in client_for(admin_config(**server)):
        response = await http.post("/admin/models/cold/stop")
        assert response.status_code == 200, response.text


async def test_admin_with_keys_off_loopback_needs_the_key() -> None:
    async for http in client_for(admin_config(host="0.0.0.0", api_keys=["sk-1"])):
        assert (await http.post("/admin/models/cold/stop")).status_code == 401
        ok = await http.post("/admin/models/cold/stop", headers={"authorization": "Bearer sk-1"})
        assert ok.status_code == 200


# --- /metrics key ----------------------------------------------------------------------------------------


async def test_metrics_open_by_default_and_behind_the_key_when_asked() -> None:
    async for http in client_for(admin_config(api_keys=["sk-1"])):
        assert (await http.get("/metrics")).status_code == 200
    async for http in client_for(admin_config(api_keys=["sk-1"], metrics_require_key=True)):
        assert (await http.get("/metrics")).status_code == 401
        response = await http.get("/metrics", headers={"authorization": "Bearer sk-1"})
        assert response.status_code == 200 and "gpufleet_" in response.text


def test_metrics_require_key_without_keys_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"server: metrics_require_key: true needs server\.api_keys"):
        parse_config(admin_config(metrics_require_key=True), file="gpufleet.yaml")


# --- engine logs stay with the operator -----------------------------------------------------------------


def test_engine_error_message_has_no_log_tail_but_str_keeps_it_for_the_cli() -> None:
    err = EngineError("model 'm': engine crashed", log_tail="Traceback (most recent call last):\n  File x")
    assert "Traceback" not in err.message and "gpufleet status" in err.message
    assert "Traceback" in str(err)
