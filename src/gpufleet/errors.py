"""The one exception tree of gpufleet.

    GpufleetError                 anything gpufleet raises on purpose; carries a user-facing message
    ├── ConfigError               gpufleet.yaml (or a CLI flag) is wrong: file, key path, reason
    ├── PlanError                 a model does not fit / cannot be planned; carries the reasons + fixes
    ├── CatalogError              unknown model or GPU (lists close matches)
    ├── ModelSourceError          a model's weights cannot be found / assembled / verified
    ├── EngineError               an engine process failed to start, crashed, or timed out
    │   └── EngineNotReady        the engine exists but is not serving yet (HTTP 503 + Retry-After)
    ├── UpstreamError             an OpenAI-compatible upstream answered badly or not at all
    ├── StoreError                the key/usage database (SQLite or PostgreSQL) cannot be reached or written
    └── RequestError              the client's request is invalid (HTTP 4xx)
        ├── ModelNotFound         unknown model name (HTTP 404, lists available names)
        ├── AuthError             missing/invalid API key (HTTP 401)
        └── RateLimited           a key is over one of its limits (HTTP 429 + Retry-After, x-ratelimit-*)

Each error knows its HTTP status and OpenAI error `type`/`code`, so the gateway maps them in one place.
"""

from __future__ import annotations

from gpufleet.redact import mask_credentials


class GpufleetError(Exception):
    """Base of every error gpufleet raises on purpose; `str(err)` is the message a user should read."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        # Messages reach clients, /status and logs: a URL's credentials never do, whoever formatted it (issue 20).
        message = mask_credentials(message)
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(GpufleetError):
    """Configuration is invalid. The message names the file, the key path and the reason."""

    code = "config_error"

    def __init__(self, message: str, *, file: str | None = None, key_path: str | None = None) -> None:
        where = ""
        if file and key_path:
            where = f"{file}: {key_path}: "
        elif file:
            where = f"{file}: "
        elif key_path:
            where = f"{key_path}: "
        super().__init__(where + message)
        self.file = file
        self.key_path = key_path
        self.reason = message


class CatalogError(GpufleetError):
    """Unknown catalog entry (model or GPU); the message lists close matches."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "catalog_not_found"


class PlanError(GpufleetError):
    """A launch cannot be planned (bad numbers, or the model does not fit)."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "plan_error"


class ModelSourceError(GpufleetError):
    """Model weights are missing, incomplete, or fail their checksum."""

    code = "model_source_error"


class EngineError(GpufleetError):
    """An engine failed to start, crashed, or did not become ready in time."""

    status_code = 503
    error_type = "server_error"
    code = "engine_error"

    def __init__(self, message: str, *, log_tail: str = "", retry_after_s: int | None = None) -> None:
        # `message` is what an HTTP client gets: the engine's log (paths, tracebacks, 2 KB of it) stays with the
        # operator, in str(err) for the CLI and in /status (issue 12).
        if log_tail:
            message += "; the engine log is in 'gpufleet status' and /status"
        super().__init__(message)
        self.log_tail = log_tail
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        if not self.log_tail:
            return self.message
        return f"{self.message}\n--- engine log (last lines) ---\n{self.log_tail}"


class EngineNotReady(EngineError):
    """The engine is starting (or restarting); try again after `retry_after_s`."""

    code = "engine_not_ready"


class UpstreamError(GpufleetError):
    """An upstream OpenAI-compatible server failed (connect error, timeout, 5xx, bad body)."""

    status_code = 502
    error_type = "server_error"
    code = "upstream_error"
    retry_after_s: int | None = None  # a 429's Retry-After (the upstream's own, or one from cooldowns)

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.retryable = retryable


class StoreError(GpufleetError):
    """The store (keys, usage ledger) failed; the message names the database, never its password."""

    status_code = 503
    code = "store_error"


class RequestError(GpufleetError):
    """The client's request is invalid."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"

    def __init__(
        self, message: str, *, param: str | None = None, status_code: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, param=param)
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code


class ModelNotFound(RequestError):
    """The requested model name is not served here."""

    status_code = 404
    code = "model_not_found"


class AuthError(RequestError):
    """Missing or invalid API key."""

    status_code = 401
    code = "invalid_api_key"


class RateLimited(RequestError):
    """A key is over one of its limits (requests or tokens per minute, tokens per day, concurrency).

    `headers` are OpenAI's x-ratelimit-* headers plus Retry-After; the gateway sends them with the 429.
    """

    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.error_type = kind  # OpenAI's 429s say "requests" or "tokens" here
        self.headers = headers
