"""Ray token authentication for multi-node models (issue 20): without it the head is code execution for anyone
who reaches it (Ray's job API and client server run whatever they are sent).

gpufleet turns Ray's token mode on (`RAY_AUTH_MODE=token`) for every head, its vLLM driver and every worker.
The token is generated once per head host and kept in a file only its owner reads (mode 0600, default
`<cache>/ray/auth_token`); processes get the file's path (`RAY_AUTH_TOKEN_PATH`), never the token in an argv,
a log line or /status. Workers get the same token through `gpufleet node join --token-file FILE` (or the
`GPUFLEET_RAY_TOKEN` environment variable, e.g. from a systemd EnvironmentFile with mode 0600).

    path = ensure_token_file(token_path(model.ray))    # created on first use
    env = auth_env(path)                               # {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": ...}
    headers = state_api_headers(read_token(path))      # what the dashboard's state API wants
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from gpufleet.config import RayClusterConfig
from gpufleet.errors import EngineError
from gpufleet.paths import cache_root

TOKEN_ENV = "GPUFLEET_RAY_TOKEN"  # a worker's token by value (systemd EnvironmentFile, container secret)
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
TOKEN_VALUE_ENV = "RAY_AUTH_TOKEN"
# Ray's own markers of a refused token in a worker's `ray start` output (Ray 2.60).
REFUSED_MARKERS = (
    "authentication token is invalid",
    "UNAUTHENTICATED",
    "Invalid authentication token",
    "Unauthenticated",
    "AuthenticationError",
)


def auth_enabled(ray: RayClusterConfig | None) -> bool:
    """Token auth is on unless the model's `ray.auth` says `disabled`."""
    return ray is None or ray.auth == "token"


def token_path(ray: RayClusterConfig | None) -> Path:
    """Where the head's token lives: `ray.token_file`, else `<cache>/ray/auth_token`."""
    if ray is not None and ray.token_file:
        return Path(ray.token_file).expanduser()
    return cache_root() / "ray" / "auth_token"


def ensure_token_file(path: Path) -> Path:
    """Create `path` with a fresh 256-bit token (mode 0600) unless it exists; EngineError when it is unusable."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    read_token(path)
    return path


def read_token(path: Path) -> str:
    """The token in `path`; EngineError when it is missing, empty, or readable by others."""
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as err:
        raise EngineError(f"Ray token file {path}: cannot read it: {err.strerror}") from None
    if mode & 0o077:
        raise EngineError(f"Ray token file {path} is readable by other users (mode {mode & 0o777:o}); chmod 600 {path}")
    if not token:
        raise EngineError(f"Ray token file {path} is empty")
    return token


def auth_env(path: Path) -> dict[str, str]:
    """The environment that puts a Ray process (head, worker, vLLM's driver) in token mode with this token."""
    return {AUTH_MODE_ENV: "token", TOKEN_PATH_ENV: str(path)}


def state_api_headers(token: str) -> dict[str, str]:
    """Headers for the dashboard's HTTP API in token mode (Ray also takes `Authorization`)."""
    return {"x-ray-authorization": f"Bearer {token}"}


def looks_refused(log_tail: str) -> bool:
    """Whether a worker's `ray start` output says the head refused its token."""
    return any(marker in log_tail for marker in REFUSED_MARKERS)
