"""Cross-site writes refused (issue 20 §3): foreign Origin, unknown Host (DNS rebinding), non-JSON bodies.

The ASGI app in-process with a STAND-IN upstream (standin_upstream.py); the real-browser attack is in
test_origin_guard_browser.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from gpufleet.config import ServerConfig, parse_config
from gpufleet.errors import ConfigError
from gpufleet.gateway import build_app, running
from gpufleet.gateway.origin_guard import normalize_origin, policy_for
from tests.standin_upstream import StandInUpstream

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandInUpstream]:
    server = StandInUpstream().start()
    yield server
    server.stop()


def _config(upstream: StandInUpstream, **server: Any) -> dict[str, Any]:
    return {"server": server, "models": {"echo": {"engine": "remote", "url": upstream.url}}}


@pytest.fixture
async def open_gateway(upstream: StandInUpstream) -> AsyncIterator[Any]:
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def make(base_url: str = "http://127.0.0.1:8000", **server: Any) -> httpx.AsyncClient:
        app = build_app(parse_config(_config(upstream, **server)))
        ctx = running(app)
        await ctx.__aenter__()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url, timeout=30)
        opened.append((ctx, http))
        return http

    yield make
    for ctx, http in reversed(opened):
        await http.aclose()
        await ctx.__aexit__(None, None, None)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["message"], str) and isinstance(error["type"], str) and isinstance(error["code"], str)
    return error


@pytest.mark.parametrize(
    "content_type",
    ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_chat_body_that_is_not_declared_json_gets_415_and_never_reaches_the_engine(
    open_gateway: Any, upstream: StandInUpstream, content_type: str | None
) -> None:
    http = await open_gateway()
    before = len(upstream.received)
    headers = {} if content_type is None else {"content-type": content_type}
    response = await http.post("/v1/chat/completions", content=orjson.dumps(CHAT), headers=headers)
    error = error_of(response, 415)
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    assert len(upstream.received) == before


async def test_json_with_charset_is_accepted(open_gateway: Any) -> None:
    http = await open_gateway()
    response = await http.post(
        "/v1/chat/completions", content=orjson.dumps(CHAT), headers={"content-type": "Application/JSON; charset=utf-8"}
    )
    assert response.status_code == 200, response.text


async def test_post_without_a_body_needs_no_content_type(open_gateway: Any) -> None:
    """`curl -X POST .../admin/models/M/stop` sends no body and no type: it reaches the route (404 here)."""
    http = await open_gateway()
    response = await http.post("/admin/models/nope/stop")
    assert response.status_code == 404


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:8001", "null", "garbage"])
async def test_foreign_origin_cannot_stop_an_engine_or_chat(
    open_gateway: Any, upstream: StandInUpstream, origin: str
) -> None:
    http = await open_gateway()
    before = len(upstream.received)
    stop = await http.post("/admin/models/echo/stop", headers={"origin": origin})
    assert error_of(stop, 403)["code"] == "origin_not_allowed"
    chat = await http.post("/v1/chat/completions", json=CHAT, headers={"origin": origin})
    error = error_of(chat, 403)
    assert "server.cors_origins" in error["message"]
    assert len(upstream.received) == before


async def test_the_gateways_own_origin_is_allowed(open_gateway: Any) -> None:
    """The console's own fetches carry its origin, which is the gateway's."""
    http = await open_gateway()
    response = await http.post("/v1/chat/completions", json=CHAT, headers={"origin": "http://127.0.0.1:8000"})
    assert response.status_code == 200, response.text
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example:8000", "10.0.0.5:8000"])
async def test_dns_rebinding_host_is_refused(open_gateway: Any, host: str) -> None:
    http = await open_gateway()
    response = await http.get("/status", headers={"host": host})
    error = error_of(response, 403)
    assert error["code"] == "host_not_allowed" and "server.allowed_hosts" in error["message"]


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"])
async def test_loopback_hosts_are_accepted(open_gateway: Any, host: str) -> None:
    http = await open_gateway()
    assert (await http.get("/status", headers={"host": host})).status_code == 200


async def test_allowed_hosts_adds_a_name_and_star_turns_the_check_off(open_gateway: Any) -> None:
    named = await open_gateway("http://gw.internal:8000", allowed_hosts=["gw.internal"])
    assert (await named.get("/status")).status_code == 200
    assert (await named.get("/status", headers={"host": "other.internal"})).status_code == 403
    anything = await open_gateway("http://whatever.example", allowed_hosts=["*"])
    assert (await anything.get("/status")).status_code == 200


async def test_cors_origins_get_cors_answers_and_others_stay_refused(open_gateway: Any) -> None:
    app_origin = "https://chat.example.com"
    http = await open_gateway(cors_origins=[app_origin])
    preflight = await http.options(
        "/v1/chat/completions",
        headers={
            "origin": app_origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == app_origin
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    response = await http.post("/v1/chat/completions", json=CHAT, headers={"origin": app_origin})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == app_origin
    other = await http.options(
        "/v1/chat/completions", headers={"origin": "https://evil.example", "access-control-request-method": "POST"}
    )
    assert error_of(other, 403)["code"] == "origin_not_allowed"


# The agent endpoints are dispatched without Starlette's stack, as chat is (gateway/hot_routes.py, issue 23):
# the same guard answers there, and with CORS configured they go through the stack and get its headers.
AGENT_REQUESTS = [
    ("/v1/messages", {"model": "echo", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages/count_tokens", {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": "echo", "input": "hi", "store": False}),
]


@pytest.mark.parametrize(("path", "body"), AGENT_REQUESTS)
async def test_agent_endpoints_refuse_foreign_origins_and_non_json_bodies_before_the_engine(
    open_gateway: Any, upstream: StandInUpstream, path: str, body: dict[str, Any]
) -> None:
    http = await open_gateway()
    before = len(upstream.received)
    foreign = await http.post(path, json=body, headers={"origin": "http://evil.example"})
    assert error_of(foreign, 403)["code"] == "origin_not_allowed"
    form = await http.post(path, content=orjson.dumps(body), headers={"content-type": "text/plain"})
    assert error_of(form, 415)["code"] == "unsupported_media_type"
    assert len(upstream.received) == before
    own = await http.post(path, json=body, headers={"origin": "http://127.0.0.1:8000"})
    assert own.status_code == 200, own.text


@pytest.mark.parametrize(("path", "body"), AGENT_REQUESTS)
async def test_agent_endpoints_answer_allowed_cors_origins_with_cors_headers(
    open_gateway: Any, path: str, body: dict[str, Any]
) -> None:
    app_origin = "https://chat.example.com"
    http = await open_gateway(cors_origins=[app_origin])
    response = await http.post(path, json=body, headers={"origin": app_origin})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == app_origin


async def test_console_forbids_framing(open_gateway: Any) -> None:
    http = await open_gateway()
    for path in ("/ui", "/ui/static/main.js"):
        response = await http.get(path)
        assert response.status_code == 200
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert response.headers["x-frame-options"] == "DENY"


def test_wildcard_bind_accepts_ip_literals_and_listed_names_only() -> None:
    policy = policy_for(ServerConfig(host="0.0.0.0", allowed_hosts=["gpufleet.default.svc"]))
    for host in ("10.1.2.3:8000", "[fe80::1]:8000", "gpufleet.default.svc:8000", "localhost"):
        assert policy.host_allowed(host), host
    assert not policy.host_allowed("evil.example:8000")


def test_specific_bind_address_is_a_name() -> None:
    policy = policy_for(ServerConfig(host="192.168.1.20"))
    assert policy.host_allowed("192.168.1.20:8000") and not policy.host_allowed("192.168.1.21:8000")


@pytest.mark.parametrize(
    ("origin", "normal"),
    [
        ("HTTP://Example.com:80", "http://example.com"),
        ("https://a.b:8443/", "https://a.b:8443"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("null", None),
        ("ftp://x", None),
        ("http://x/path", None),
        ("http://x:99999", None),
    ],
)
def test_origin_normalization(origin: str, normal: str | None) -> None:
    assert normalize_origin(origin) == normal


@pytest.mark.parametrize("bad", ["chat.example.com", "https://chat.example.com/app", "javascript:alert(1)"])
def test_malformed_cors_origin_fails_at_load_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"server": {"cors_origins": [bad]}, "models": {"m": {"engine": "remote", "url": "http://x/v1"}}})
    assert "server.cors_origins" in str(err.value)
