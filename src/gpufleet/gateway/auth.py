"""Optional Bearer API keys, compared in constant time, and what an unauthenticated gateway may expose.

A gateway bound to a non-loopback address without `server.api_keys` is open to its whole network: it warns
at startup and refuses `/admin/*` (stopping and swapping engines) unless the operator opts in with
`server.allow_unauthenticated_admin: true` (issue 12).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from gpufleet.config import ServerConfig
from gpufleet.errors import AuthError


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
    admin = ("/admin/* is OPEN (server.allow_unauthenticated_admin: true)" if server.allow_unauthenticated_admin
             else "/admin/* is refused until keys are set")
    return (f"listening on {server.host} WITHOUT server.api_keys: anyone who can reach this address can use every "
            f"model; {admin}. Set server.api_keys, or bind 127.0.0.1.")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The request's credentials as an Authorization value: `Authorization` itself, else `x-api-key: <key>`
    (the header Anthropic's clients send) as `Bearer <key>`."""
    authorization = headers.get("authorization")
    if authorization is None and (api_key := headers.get("x-api-key")):
        return f"Bearer {api_key}"
    return authorization


class KeyCheck:
    """Accepts a request when no keys are configured or its Bearer token matches one of them."""

    def __init__(self, keys: list[str], *, host: str = "127.0.0.1", allow_unauthenticated_admin: bool = False) -> None:
        self._keys = [key.encode() for key in keys]
        self._host = host
        self._admin_open = allow_unauthenticated_admin or is_loopback(host)

    @classmethod
    def for_server(cls, server: ServerConfig) -> KeyCheck:
        return cls(server.api_keys, host=server.host, allow_unauthenticated_admin=server.allow_unauthenticated_admin)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise AuthError (401) unless `authorization` is 'Bearer <a configured key>'."""
        if not self._keys:
            return
        if not authorization:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
        candidate = token.strip().encode()
        # Compare against every key (no early exit) so timing does not reveal which key nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise AuthError("invalid API key")

    def check_admin(self, authorization: str | None) -> None:
        """Like `check`; without keys on a non-loopback address, AuthError 403 unless admin was opened."""
        if not self._keys and not self._admin_open:
            raise AuthError(
                f"/admin endpoints are refused: the gateway listens on {self._host} without API keys. "
                "Set server.api_keys (then send 'Authorization: Bearer <key>'), or set "
                "server.allow_unauthenticated_admin: true to allow them anyway",
                status_code=403, code="admin_requires_api_key",
            )
        self.check(authorization)
