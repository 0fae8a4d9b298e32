"""`gpufleet serve`: run the gateway (and the engines it supervises) with uvicorn."""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli.progress import prepare_packaged_models
from gpufleet.config import Config, LlamaCppModel, ServerConfig, TransformersModel, VllmModel, load_config
from gpufleet.errors import ConfigError


def _config_path(option: Path | None) -> Path | None:
    if option is not None:
        return option
    from_env = os.environ.get("GPUFLEET_CONFIG")
    return Path(from_env) if from_env else None


def _check_address_free(host: str, port: int) -> None:
    """Bind the gateway's address once before anything starts, so a taken port is a clear error (exit 2).

    uvicorn binds it again later (its own failure is exit 3 and a log line); the gap is a second or two.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        hint = (
            (
                f"another process listens there (see 'ss -ltnp sport = :{port}'); stop it or choose another "
                "port with --port or server.port"
            )
            if err.errno == errno.EADDRINUSE
            else "check server.host"
        )
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}; {hint}", key_path="server.port") from None
    sock.close()


def _managed(config: Config) -> dict[str, LlamaCppModel | VllmModel | TransformersModel]:
    return {
        name: model
        for name, model in config.models.items()
        if isinstance(model, LlamaCppModel | VllmModel | TransformersModel)
    }


def _with_overrides(config: Config, host: str | None, port: int | None) -> Config:
    server = config.server
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if not updates:
        return config
    merged = ServerConfig.model_validate({**server.model_dump(), **updates})
    return config.model_copy(update={"server": merged})


def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="gpufleet.yaml (default: $GPUFLEET_CONFIG, else the built-in embedded Qwen model)"
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)", min=0, max=65535)] = None,
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
) -> None:
    """Serve the OpenAI-compatible API; engines start at startup (preload) or on their first request."""
    import uvicorn

    from gpufleet.engines import resolve_launches
    from gpufleet.gateway import build_app
    from gpufleet.gateway.draining_server import SHUTDOWN_MARGIN_S, DrainingServer
    from gpufleet.gateway.http_limits import HttpLimits, guarded_protocol

    path = _config_path(config)
    cfg = _with_overrides(load_config(path), host, port)
    _check_address_free(cfg.server.host, cfg.server.port)
    logging.basicConfig(level=cfg.server.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    prepare_packaged_models(cfg)
    # Every launch resolved now: a model that can never start is exit 2 naming its key, not a 503 later.
    launches = resolve_launches(_managed(cfg), file=str(path) if path else "<built-in default>")
    app = build_app(cfg, launches)
    url = f"http://{cfg.server.host}:{cfg.server.port}/v1"
    first = next(iter(cfg.models))
    typer.echo(f"gpufleet: serving {', '.join(cfg.models)} on {url}")
    typer.echo(
        f"  try: curl {url}/chat/completions -H 'Content-Type: application/json' "
        f'-d \'{{"model": "{first}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\''
    )
    grace_s = cfg.server.shutdown_grace_s
    limits = HttpLimits(
        max_header_bytes=cfg.server.max_header_bytes,
        header_timeout_s=cfg.server.header_timeout_s,
        body_timeout_s=cfg.server.body_timeout_s,
    )
    server_config = uvicorn.Config(
        app,
        host=cfg.server.host,
        port=cfg.server.port,
        loop="uvloop",
        http=guarded_protocol(limits),
        log_level=cfg.server.log_level,
        access_log=access_log,
        timeout_graceful_shutdown=math.ceil(grace_s + SHUTDOWN_MARGIN_S),
    )
    try:
        server = DrainingServer(server_config, app.state.gateway.streams, grace_s)
        server.run()
        if not server.started:
            sys.exit(3)  # what uvicorn.run does when startup fails (its error is logged)
    except OSError as err:  # e.g. the port is taken
        raise ConfigError(
            f"cannot listen on {cfg.server.host}:{cfg.server.port}: {err.strerror}", key_path="server.port"
        ) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
