"""Optional Bearer API keys, compared in constant time, and what an unauthenticated gateway may expose.

A gateway bound to a non-loopback address without `server.api_keys` is open to its whole network: it warns
at startup and refuses `/admin/*` (stopping and swapping engines) unless the operator opts in with
`server.allow_unauthenticated_admin: true` (issue 12).

Two kinds of keys (docs/keys.md): the static `server.api_keys` are admin keys (every model, /admin/*); team
keys made with `gpufleet keys create` live hashed in the store (KeyDirectory), each with its models and
limits. Once any team key exists, requests without a key are refused even without static keys.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpufleet.config import ServerConfig
from gpufleet.errors import AuthError
from gpufleet.gateway.asgi_headers import scope_header
from gpufleet.store.directory import KeyDirectory
from gpufleet.store.keys import KeyRecord


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: an admin (a static key), a team key, or anyone (a gateway without keys)."""

    name: str
    admin: bool
    key: KeyRecord | None = None

    def allows(self, *names: str) -> bool:
        """True when this caller may use a model known by any of `names`."""
        return self.key is None or self.key.allows(*names)


ADMIN = Principal("admin", admin=True)
ANONYMOUS = Principal("anonymous", admin=False)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_warning(server: ServerConfig) -> str | None:
    """The startup warning for a gateway reachable from the network without API keys, else None."""
    if server.api_keys or is_loopback(server.host):
        return None
    admin = (
        "/admin/* is OPEN (server.allow_unauthenticated_admin: true)"
        if server.allow_unauthenticated_admin
        else "/admin/* is refused until keys are set"
    )
    return (
        f"listening on {server.host} WITHOUT server.api_keys: anyone who can reach this address can use every "
        f"model; {admin}. Set server.api_keys, or bind 127.0.0.1."
    )


def presented_key_in_scope(scope: Mapping[str, Any]) -> str | None:
    """`presented_key` of an ASGI request, read from its scope's raw headers."""
    authorization = scope_header(scope, b"authorization")
    if authorization is None and (api_key := scope_header(scope, b"x-api-key")):
        return f"Bearer {api_key}"
    return authorization


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The request's credentials as an Authorization value: `Authorization` itself, else `x-api-key: <key>`
    (the header Anthropic's clients send) as `Bearer <key>`."""
    authorization = headers.get("authorization")
    if authorization is None and (api_key := headers.get("x-api-key")):
        return f"Bearer {api_key}"
    return authorization


class KeyCheck:
    """Accepts a request when no keys are configured or its Bearer token is a static or a live team key."""

    def __init__(
        self,
        keys: list[str],
        *,
        host: str = "127.0.0.1",
        allow_unauthenticated_admin: bool = False,
        directory: KeyDirectory | None = None,
    ) -> None:
        self._keys = [key.encode() for key in keys]
        self._host = host
        self._admin_open = allow_unauthenticated_admin or is_loopback(host)
        self.directory = directory if directory is not None else KeyDirectory()
        # One Principal per team key, made once: building a frozen dataclass per request costs ~2 µs (hot path).
        self._principals: dict[str, Principal] = {}

    @classmethod
    def for_server(cls, server: ServerConfig, directory: KeyDirectory | None = None) -> KeyCheck:
        return cls(
            server.api_keys,
            host=server.host,
            allow_unauthenticated_admin=server.allow_unauthenticated_admin,
            directory=directory,
        )

    @property
    def enabled(self) -> bool:
        return bool(self._keys) or self.directory.enabled

    def check(self, authorization: str | None) -> Principal:
        """Who sent `authorization`; AuthError (401) unless it is 'Bearer <a static or live team key>'."""
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
        candidate = token.encode()
        # Compare against every key (no early exit) so timing does not reveal which key nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if matched:
            return ADMIN
        record = self.directory.find(token)
        if record is None:
            raise AuthError("invalid API key")
        state = record.state(time.time())
        if state != "active":
            raise AuthError(
                f"this API key was {state}; ask an admin for a new one ('gpufleet keys create')",
                code=f"api_key_{state}",
            )
        principal = self._principals.get(record.id)
        if principal is None or principal.key is not record:  # a refresh replaces records: rebuild then
            if len(self._principals) > 10_000:
                self._principals.clear()  # bounded; keys come from the store, not from clients
            principal = self._principals[record.id] = Principal(record.name, admin=False, key=record)
        return principal

    def check_admin(self, authorization: str | None) -> None:
        """Only admin keys (server.api_keys); without them, AuthError 403 unless admin is open here."""
        if not self._keys:
            if self.directory.enabled:
                raise AuthError(
                    "/admin endpoints need an admin key from server.api_keys; team keys cannot use them",
                    status_code=403,
                    code="admin_requires_admin_key",
                )
            if not self._admin_open:
                raise AuthError(
                    f"/admin endpoints are refused: the gateway listens on {self._host} without API keys. "
                    "Set server.api_keys (then send 'Authorization: Bearer <key>'), or set "
                    "server.allow_unauthenticated_admin: true to allow them anyway",
                    status_code=403,
                    code="admin_requires_api_key",
                )
            return
        if not self.check(authorization).admin:
            raise AuthError(
                "/admin endpoints need an admin key (server.api_keys), not a team key",
                status_code=403,
                code="admin_requires_admin_key",
            )
