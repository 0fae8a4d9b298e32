"""The whole gpufleet.yaml: the `server:` block and the `Config` that holds every part.

A frozen pydantic model that rejects unknown keys; `Config` runs the cross-checks (config/checks.py) after its
parts validated.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gpufleet.config.checks import check_config
from gpufleet.config.common import Strict
from gpufleet.config.models import ModelConfig
from gpufleet.config.routing import PersonaConfig, RouteConfig, RouterConfig, SwapGroupConfig

# A browser origin as browsers send it: http(s), a host, an optional port, nothing after.
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?/?")


class ServerConfig(Strict):
    """The gateway's own settings."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list, description="Bearer keys; empty = no auth")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="larger request bodies get HTTP 413")
    request_timeout_s: float = Field(default=600, gt=0, description="upstream read timeout")
    queue_timeout_s: float = Field(
        default=300,
        ge=0,
        description="how long a request waits for a starting engine before HTTP 503; 0 = answer 503 at once",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_upstream_event_bytes: int = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="largest SSE event an upstream may send; a longer one ends the stream with an error event",
    )
    max_upstream_body_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="largest non-stream answer read from an upstream; more → 502",
    )
    shutdown_grace_s: float = Field(
        default=30,
        ge=0,
        description="on SIGTERM, in-flight requests may finish this long; then streams end with an error event",
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="request line + headers; larger requests get HTTP 431"
    )
    header_timeout_s: float = Field(default=10, gt=0, description="a request's headers must arrive within this")
    body_timeout_s: float = Field(default=60, gt=0, description="a request's body must arrive within this")
    allow_unauthenticated_admin: bool = Field(
        default=False, description="allow /admin/* without api_keys on a non-loopback host (not recommended)"
    )
    metrics_require_key: bool = Field(default=False, description="/metrics asks for an API key like the API does")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origins (scheme://host[:port]) allowed to call the API; others get 403; '*' = any",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names besides loopback and the bound address (DNS-rebinding guard); '*' = any",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins_well_formed(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], no path (e.g. https://chat.example.com)"
                )
        return value

    # Team keys, limits and the usage ledger (docs/keys.md).
    database_url: str | None = Field(
        default=None,
        description="where keys and the usage ledger live: postgresql://user:pw@host/db, "
        "sqlite:///path, or unset for SQLite under the cache dir",
    )
    usage_retention_days: int = Field(default=90, ge=1, description="usage ledger rows older than this are purged")
    metrics_per_key: bool = Field(
        default=False, description="Prometheus counters by key name (at most 100 names; the rest count as 'other')"
    )

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("database_url must start with postgresql://, postgres:// or sqlite:///")
        return value

    @model_validator(mode="after")
    def _metrics_key_needs_keys(self) -> ServerConfig:
        if self.metrics_require_key and not self.api_keys:
            raise ValueError("metrics_require_key: true needs server.api_keys (there is no key to require)")
        return self

    @field_validator("api_keys")
    @classmethod
    def _keys_not_empty(cls, value: list[str]) -> list[str]:
        if any(not key for key in value):
            raise ValueError("an API key is empty (is its environment variable set?)")
        return value


class Config(Strict):
    """The whole gpufleet.yaml."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    personas: dict[str, PersonaConfig] = Field(default_factory=dict)
    router: RouterConfig = Field(default_factory=RouterConfig)
    swap_groups: dict[str, SwapGroupConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _parts_fit_together(self) -> Config:
        check_config(self.models, self.routes, self.personas, self.router, self.swap_groups)
        return self
