"""What every engine provides: a model's launch resolved once, and a launch spec (argv, env, URLs) per start.

    resolved = engine.resolve(name, model)                    # before the supervisor starts it (may block)
    spec = engine.launch_spec(name, model, resolved, port)    # each start, restart and swap-in (cheap)

Every engine speaks OpenAI HTTP on a local port, so the supervisor and gateway never care which one it is.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar

from gpufleet.errors import EngineError
from gpufleet.paths import engines_dir


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one engine process and how to tell when it is ready."""

    argv: list[str]
    env: dict[str, str]
    port: int
    base_url: str  # OpenAI base URL, e.g. http://127.0.0.1:41234/v1
    health_url: str
    metrics_url: str | None = None
    log_phase_parser: str | None = None  # name of a log parser ("vllm") for startup phases
    extra: dict[str, str] = field(default_factory=dict)
    # Run after the process group is stopped, e.g. `docker rm --force NAME`: a container outlives a
    # SIGKILLed `docker run` client. Its failure is ignored (the container is usually gone already).
    stop_argv: list[str] | None = None
    # What the planner and the flag checks warned about (shown in /status, not only in the log).
    warnings: tuple[str, ...] = ()
    # Working directory of the process (None: the gateway's). `transformers serve` names its model after it.
    cwd: str | None = None
    # The environment variable through which the engine takes an API key for its OpenAI routes (None: it has
    # none, e.g. `transformers serve`); `with_engine_key` fills it and `api_key` with a fresh random key.
    api_key_env: str | None = None
    api_key: str | None = None


def with_engine_key(spec: LaunchSpec) -> LaunchSpec:
    """`spec` with a fresh random API key for this start, when its engine takes one (issue 20).

    Engines listen on 127.0.0.1, where every local user reaches them; the key, which only the gateway holds
    (it sends it as Bearer), closes that door. It goes in the environment, never the argv: /proc/PID/cmdline
    is readable by every user, /proc/PID/environ only by the engine's own.
    """
    if spec.api_key_env is None:
        return spec
    key = secrets.token_urlsafe(32)
    return replace(spec, env={**spec.env, spec.api_key_env: key}, api_key=key)


ModelT_contra = TypeVar("ModelT_contra", contravariant=True)
ResolvedT = TypeVar("ResolvedT")


class Engine(Protocol[ModelT_contra, ResolvedT]):
    """An engine kind, for its kind of model config (`ModelT_contra`) and its resolved launch (`ResolvedT`)."""

    kind: str

    def resolve(self, name: str, model: ModelT_contra) -> ResolvedT:
        """Everything about the launch that does not change between starts (which interpreter, which files, the
        plan), checked; an EngineError names what is wrong. May block: call it off the event loop."""
        ...

    def launch_spec(self, name: str, model: ModelT_contra, resolved: ResolvedT, port: int) -> LaunchSpec:
        """The argv/env/URLs to serve model `name` on `port` (127.0.0.1) from its resolved launch."""
        ...


def local_urls(port: int, *, health_path: str = "/health", metrics_path: str | None = "/metrics") -> dict[str, str]:
    """Standard URLs of an OpenAI-compatible engine listening on 127.0.0.1:port."""
    root = f"http://127.0.0.1:{port}"
    urls = {"base_url": f"{root}/v1", "health_url": root + health_path}
    if metrics_path:
        urls["metrics_url"] = root + metrics_path
    return urls


def engine_python(python: str, *, kind: str, needs: str) -> Path:
    """An interpreter path (must exist), or the newest environment gpufleet installed under that engine name
    (`gpufleet engines install NAME`). `kind` names the engine in errors; `needs` says what the environment
    must contain."""
    if "/" in python:
        path = Path(python).expanduser()
        if not path.exists():
            raise EngineError(f"{kind} python {path} does not exist (models.*.python)")
        return path
    candidates = sorted(engines_dir().glob(f"{python}-*/bin/python"))
    if not candidates:
        raise EngineError(
            f"engine {python!r} is not installed; run 'gpufleet engines install {python}' "
            f"or set models.<name>.python to the interpreter of an environment with {needs}"
        )
    return candidates[-1]
