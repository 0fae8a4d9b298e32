"""`gpufleet swap MODEL`: bring a swap-group member up on a running gateway (the seed's `gpu-mode r1`).

    gpufleet swap r1                                  # http://127.0.0.1:8000
    gpufleet swap ml --url http://gpu-box:8000 --api-key "$KEY"

It calls POST /admin/models/MODEL/swap, which waits in the group's queue for busy members to finish, frees idle
ones (sleep or stop) and answers once MODEL is ready. Exit codes: 0 swapped, 1 the gateway refused or failed
(its message is printed), 2 usage error.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import httpx
import orjson
import typer

DEFAULT_URL = "http://127.0.0.1:8000"


class SwapFailed(Exception):
    """The gateway could not be asked, or answered with an error; the message says which."""


def swap_url(url: str, model: str) -> str:
    """`<gateway root>/admin/models/<model>/swap`; a base URL ending in /v1 works too."""
    root = url.rstrip("/").removesuffix("/v1")
    return f"{root}/admin/models/{quote(model, safe='')}/swap"


def request_swap(url: str, model: str, api_key: str | None, *, timeout_s: float) -> dict[str, Any]:
    """POST the swap and return the gateway's JSON answer ({model, state, engine_url, swap_group, freed})."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(swap_url(url, model), headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        raise SwapFailed(
            f"no answer from {url} within {timeout_s:.0f} s; the swap may still be under way "
            "(see 'gpufleet status'), or raise --timeout"
        ) from None
    except httpx.HTTPError as err:
        raise SwapFailed(
            f"cannot reach the gpufleet gateway at {url} ({err or type(err).__name__}); is "
            "'gpufleet serve' running there? (--url points elsewhere)"
        ) from None
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        data = None
    if response.status_code != 200:
        message = (data or {}).get("error", {}).get("message") if isinstance(data, dict) else None
        retry = response.headers.get("retry-after")
        hint = f" (retry after {retry} s)" if retry else ""
        raise SwapFailed(f"HTTP {response.status_code}: {message or response.text[:300]}{hint}")
    if not isinstance(data, dict):
        raise SwapFailed(f"{swap_url(url, model)} answered {response.text[:200]!r} (is this a gpufleet gateway?)")
    return data


def swap(
    model: Annotated[str, typer.Argument(help="the model (or alias) to bring up")],
    url: Annotated[str, typer.Option("--url", envvar="GPUFLEET_URL", help="the gateway's root URL")] = DEFAULT_URL,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="GPUFLEET_API_KEY", help="a key from server.api_keys")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="seconds to wait for the model")] = 900,
    as_json: Annotated[bool, typer.Option("--json", help="print the gateway's answer as JSON")] = False,
) -> None:
    """Swap MODEL onto its group's GPU: idle members are put to sleep or stopped, MODEL is woken or started."""
    try:
        result = request_swap(url, model, api_key, timeout_s=timeout)
    except SwapFailed as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    freed = ", ".join(f"{f['model']} ({f['how']})" for f in result.get("freed", [])) or "nothing"
    typer.echo(
        f"{result['model']}: ready at {result['engine_url']} (swap group {result['swap_group']}; freed: {freed})"
    )


def register(app: typer.Typer) -> None:
    app.command("swap")(swap)
