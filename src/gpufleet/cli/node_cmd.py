"""`gpufleet node join HEAD`: make this host a Ray worker of a multi-node model whose head runs gpufleet serve.

    gpufleet node join 192.168.100.10 --token-file /etc/gpufleet/ray-token   # on spark-2 (seed 004)
    gpufleet node join 192.168.100.10:6379 --num-gpus 1 --python ~/vllm/.venv/bin/python --token-file ...

The token is the head's (`<cache>/ray/auth_token` there, made on the first start of a multi-node model):
without it Ray refuses the worker, since a head without a token runs code for anyone who reaches it.

It stays in the foreground and rejoins whenever Ray exits (the head restarted, the node was marked dead), so a
systemd unit with Restart=always or a container command is all a worker needs. Bad input: message, exit 2.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cluster.node_facts import local_address_for
from gpufleet.cluster.node_join import JoinSettings, join_forever
from gpufleet.cluster.ray_auth import TOKEN_ENV, read_token
from gpufleet.cluster.ray_cluster import ray_temp_dir
from gpufleet.cluster.ray_commands import split_head
from gpufleet.errors import EngineError
from gpufleet.paths import logs_dir

node_app = typer.Typer(
    help="Multi-node over Ray: join this host to a head that runs gpufleet serve.", no_args_is_help=True
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _default_python() -> Path:
    # The `vllm` on PATH lives in the environment whose Ray vLLM's workers must run; else gpufleet's own.
    vllm = shutil.which("vllm")
    if vllm is not None and (Path(vllm).parent / "python").exists():
        return Path(vllm).parent / "python"
    return Path(sys.executable)


@node_app.command("join")
def join(
    head: Annotated[str, typer.Argument(help="the head's address, HOST or HOST:PORT (Ray GCS, default port 6379)")],
    node_ip: Annotated[
        str | None,
        typer.Option(
            "--node-ip",
            help="this node's address on the cluster network (default: the source address of the route to the head)",
        ),
    ] = None,
    num_gpus: Annotated[
        int | None, typer.Option("--num-gpus", min=0, help="GPUs to give Ray (default: detected)")
    ] = None,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", min=0, help="CPUs to give Ray")] = None,
    object_store_mib: Annotated[int | None, typer.Option("--object-store-mib", min=75)] = None,
    python: Annotated[
        Path | None,
        typer.Option(
            "--python",
            help="interpreter of vLLM's environment (its Ray runs"
            " the worker; default: the `vllm` on PATH's, else gpufleet's)",
        ),
    ] = None,
    retry_s: Annotated[float, typer.Option("--retry-s", min=0.1, help="pause before rejoining")] = 5.0,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="GPUFLEET_RAY_TOKEN_FILE",
            help="the head's Ray token (a copy of <cache>/ray/auth_token from the head, mode 0600); or set"
            " GPUFLEET_RAY_TOKEN",
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="join a head whose model has ray.auth: disabled (not recommended)")
    ] = False,
) -> None:
    """Join HEAD's Ray cluster and stay joined (rejoin when Ray exits) until SIGTERM or Ctrl-C."""
    try:
        host, port = split_head(head)
    except ValueError as err:
        raise _fail(f"HEAD: {err}") from None
    address = node_ip or local_address_for(host)
    if address is None:
        raise _fail(f"no route to the head {host}; pass --node-ip with this node's address on the cluster network")
    interpreter = (python or _default_python()).expanduser()
    if not interpreter.exists():
        raise _fail(f"--python {interpreter} does not exist")
    token = os.environ.get(TOKEN_ENV) or None
    if token_file is not None:
        try:
            read_token(token_file.expanduser())
        except EngineError as err:
            raise _fail(str(err)) from None
    elif token is None and not no_auth:
        raise _fail(
            "the head runs Ray with token authentication: copy its token file (<cache>/ray/auth_token on"
            " the head) here with mode 0600 and pass --token-file FILE, or set GPUFLEET_RAY_TOKEN"
        )
    settings = JoinSettings(
        head_host=host,
        head_port=port,
        node_ip=address,
        python=interpreter,
        token_file=token_file.expanduser() if token_file else None,
        token=None if token_file or no_auth else token,
        temp_dir=ray_temp_dir(f"node-{address}"),
        log_path=logs_dir() / f"ray-node-{address}.log",
        num_gpus=num_gpus,
        num_cpus=num_cpus,
        object_store_mib=object_store_mib,
        retry_s=retry_s,
    )
    raise typer.Exit(asyncio.run(join_forever(settings)))


def register(app: typer.Typer) -> None:
    """Add `gpufleet node …`."""
    app.add_typer(node_app, name="node")
