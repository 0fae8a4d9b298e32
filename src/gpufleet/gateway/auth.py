"""Optional Bearer API keys, compared in constant time."""

from __future__ import annotations

import hmac

from gpufleet.errors import AuthError


class KeyCheck:
    """Accepts a request when no keys are configured or its Bearer token matches one of them."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise AuthError (401) unless `authorization` is 'Bearer <a configured key>'."""
        if not self._keys:
            return
        if not authorization:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
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
