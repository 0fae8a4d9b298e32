"""Refuse cross-site writes: foreign `Origin`, unknown `Host` (DNS rebinding), non-JSON bodies (issue 20).

A page on another site can make a browser send requests to the gateway: a `no-cors` POST or a `text/plain`
"simple" request needs no CORS preflight, and a gateway on 127.0.0.1 without keys would act on it (stop an
engine, run a chat). A rebound DNS name (evil.example → 127.0.0.1) makes such a page same-origin. Three
checks, before any route sees the request:

- `Host` must be one of the gateway's names: loopback names and the bound address, plus
  `server.allowed_hosts` (`"*"` turns the check off). With a wildcard bind (0.0.0.0, ::) any IP literal and
  this machine's host name are accepted too; other names (a DNS name, a Kubernetes service) must be listed.
- a request carrying `Origin` must come from the gateway's own origin or one of `server.cors_origins`
  (browsers send `Origin` on every cross-origin POST, `no-cors` ones included); the listed origins also get
  CORS answers (preflight, `Access-Control-Allow-Origin`) from Starlette's CORS middleware.
- a request body (POST/PUT/PATCH with content) must be `application/json`: no other type reaches a handler,
  so a form or `text/plain` post can never be parsed as an API call.

The console (/ui) is served with a Content-Security-Policy that forbids framing (clickjacking).

    Starlette(routes=..., middleware=origin_middleware(config.server))
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpufleet.config import ServerConfig
from gpufleet.gateway.errors import error_body

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# The console's own files only: no inline script, no framing, no form posts elsewhere.
CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"
)
CORS_HEADERS = ["authorization", "content-type", "x-api-key", "anthropic-version", "x-gpufleet-session"]


@dataclass(frozen=True)
class OriginPolicy:
    """Which `Host` names and browser origins the gateway answers (built by `policy_for`)."""

    hosts: frozenset[str]
    any_host: bool
    ip_hosts: bool  # any IP literal is a name of this gateway (wildcard bind)
    cors_origins: frozenset[str]
    any_origin: bool

    def host_allowed(self, host: str | None) -> bool:
        """Whether a `Host` header (with or without port) names this gateway; a request without one passes."""
        if host is None or self.any_host:
            return True
        name = host_name(host)
        if name in self.hosts:
            return True
        return self.ip_hosts and _is_ip(name)

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """Whether a browser `Origin` may call: the gateway's own origin or a listed one."""
        normal = normalize_origin(origin)
        if normal is None:
            return False  # "null" (sandboxed frames, file://) or garbage: never the gateway's own page
        if self.any_origin or normal in self.cors_origins:
            return True
        return host is not None and _origin_netloc(normal) == _host_netloc(host)


def policy_for(server: ServerConfig) -> OriginPolicy:
    """The policy for a server config: loopback names, the bind address and `allowed_hosts`."""
    bind = server.host.strip("[]").lower()
    wildcard = bind in WILDCARD_BINDS
    hosts = {*LOOPBACK_NAMES, *(name.lower().strip("[]") for name in server.allowed_hosts if name != "*")}
    if not wildcard:
        hosts.add(bind)
    else:
        hosts.add(socket.gethostname().lower())
    origins = {o for o in (normalize_origin(origin) for origin in server.cors_origins if origin != "*") if o}
    return OriginPolicy(
        hosts=frozenset(hosts),
        any_host="*" in server.allowed_hosts,
        ip_hosts=wildcard,
        cors_origins=frozenset(origins),
        any_origin="*" in server.cors_origins,
    )


def host_name(host: str) -> str:
    """The name part of a `Host` header, lower case, without port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host  # a bare name, or a bare IPv6 address (never sent by browsers)


def normalize_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case with a default port dropped; None for "null" or a malformed one."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    explicit = f":{port}" if port is not None and str(port) != _DEFAULT_PORTS[parts.scheme] else ""
    return f"{parts.scheme}://{name}{explicit}"


def _origin_netloc(origin: str) -> str:
    return origin.split("://", 1)[1]


def _host_netloc(host: str) -> str:
    # A Host header carries the port only when it is not the scheme's default; so does a normalized Origin.
    host = host.strip().lower()
    for default in (":80", ":443"):
        if host.endswith(default):
            return host.removesuffix(default)
    return host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return _header(scope, b"transfer-encoding") is not None


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


class OriginGuard:
    """ASGI middleware: the three checks above, each refused with an OpenAI-shaped error."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            await self.refuse(send, refusal)
            return
        if scope["path"].rstrip("/") == "/ui" or scope["path"].startswith("/ui/"):
            send = _with_headers(
                send, [(b"content-security-policy", CONSOLE_CSP.encode()), (b"x-frame-options", b"DENY")]
            )
        await self.app(scope, receive, send)

    @staticmethod
    async def refuse(send: Send, refusal: tuple[int, str, str]) -> None:
        """Answer a `refusal` (from `refusal`) with its OpenAI-shaped error."""
        status, message, code = refusal
        await _send_error(send, status, message, code)

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        """(status, message, code) when the request must not reach the app; None when it may."""
        host = _header(scope, b"host")
        if not self.policy.host_allowed(host):
            return (
                403,
                f"Host {host!r} is not a name of this gateway (DNS rebinding guard); add it to server.allowed_hosts",
                "host_not_allowed",
            )
        origin = _header(scope, b"origin")
        if origin is not None and not self.policy.origin_allowed(origin, host):
            return (
                403,
                f"cross-origin request from {origin!r} refused; allow the origin in server.cors_origins",
                "origin_not_allowed",
            )
        if scope["method"] in _BODY_METHODS and _has_body(scope):
            content_type = _header(scope, b"content-type")
            if not _is_json(content_type):
                return (
                    415,
                    f"request bodies must be Content-Type: application/json, not {content_type!r}",
                    "unsupported_media_type",
                )
        return None


def origin_middleware(server: ServerConfig) -> list[Middleware]:
    """Starlette middleware: the guard, then CORS answers (preflight included) for the listed `cors_origins`."""
    stack = [Middleware(OriginGuard, policy=policy_for(server))]
    if server.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(server.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=CORS_HEADERS,
                max_age=600,
            )
        )
    return stack


async def _send_error(send: Send, status: int, message: str, code: str) -> None:
    body = orjson.dumps(error_body(message, type_="invalid_request_error", code=code))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _with_headers(send: Send, extra: Iterable[tuple[bytes, bytes]]) -> Send:
    headers = list(extra)

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *headers]}
        await send(message)

    return sending
