"""Team API keys: made once, shown once, stored only as a SHA-256 hash.

A key is `gfk-` + 32 random bytes (URL-safe base64): with that much entropy a plain SHA-256 is the right
hash (no salt or slow KDF needed: nobody can guess a preimage), and it lets the gateway find a key by hash
with one dict lookup.

    secret = new_secret()                 # 'gfk-...' printed to the user once
    record = KeyRecord.create(name="alice", key_hash=hash_secret(secret), models=("qwen*",))
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field

from gpufleet.errors import ConfigError
from gpufleet.limits import Limits

KEY_PREFIX = "gfk-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def new_secret() -> str:
    """A fresh key (256 bits of randomness)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a key: what the store keeps."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text: str, *, option: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' in seconds; ConfigError naming `option` otherwise."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(
            f"{text!r} is not a duration: use a positive number and a unit, like 30d, 12h, 90m (s, m, h, d, w)",
            key_path=option,
        )
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def check_name(name: str, *, option: str = "--name") -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"key name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-' (starting with a letter or digit)",
            key_path=option,
        )
    return name


@dataclass(frozen=True)
class KeyRecord:
    """One team key as stored: its hash, never the key itself."""

    id: str
    name: str
    key_hash: str
    hint: str  # the key's last 4 characters, so a user can tell two keys apart in `keys list`
    models: tuple[str, ...] = ()  # shell-style patterns (fnmatch) of model/route names; empty = every model
    limits: Limits = field(default_factory=Limits)
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None

    @classmethod
    def create(
        cls,
        *,
        name: str,
        secret: str,
        models: tuple[str, ...] = (),
        limits: Limits | None = None,
        expires_in_s: float | None = None,
        now: float | None = None,
    ) -> KeyRecord:
        now = time.time() if now is None else now
        return cls(
            id=uuid.uuid4().hex,
            name=check_name(name),
            key_hash=hash_secret(secret),
            hint=secret[-4:],
            models=models,
            limits=limits or Limits(),
            created_at=now,
            expires_at=None if expires_in_s is None else now + expires_in_s,
        )

    def state(self, now: float) -> str:
        """'active', 'revoked' or 'expired'."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def public(self, now: float) -> dict[str, object]:
        """What may be shown about the key (`keys list`, /admin/keys): never the key or its hash."""
        lim = self.limits
        return {
            "name": self.name,
            "id": self.id,
            "state": self.state(now),
            "hint": self.hint,
            "models": list(self.models),
            "rpm": lim.rpm,
            "tpm": lim.tpm,
            "tokens_per_day": lim.tokens_per_day,
            "max_concurrency": lim.max_concurrency,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }

    def allows(self, *names: str) -> bool:
        """True when the key may use a model known by any of `names` (requested name, route, served model)."""
        if not self.models:
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in self.models)
