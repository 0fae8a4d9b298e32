"""`gpufleet status`: what a running gateway's engines and targets are doing (reads its GET /status).

    gpufleet status                       # http://127.0.0.1:8000
    gpufleet status --url http://gpu-box:8000 --api-key "$KEY" --watch 2
    gpufleet status --json | jq '.models[] | {name, state}'

Exit codes: 0 shown, 1 gateway unreachable or refused (names the URL / the key), 2 usage error.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

DEFAULT_URL = "http://127.0.0.1:8000"

_STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "backoff": "yellow",
    "stopping": "yellow",
    "failed": "bold red",
    "stopped": "dim",
    "remote": "cyan",
}


class StatusUnavailable(Exception):
    """The gateway could not be asked (unreachable, refused the key, odd answer); the message says which."""


def status_url(url: str) -> str:
    """`<gateway root>/status`; a base URL ending in /v1 (what OpenAI clients are given) works too."""
    root = url.rstrip("/").removesuffix("/v1")
    return f"{root}/status"


def fetch_status(url: str, api_key: str | None, *, timeout_s: float = 10) -> tuple[dict[str, Any], bytes]:
    """GET /status of the gateway at `url`: the parsed JSON and the raw body."""
    target = status_url(url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(target, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as err:
        reason = str(err) or type(err).__name__
        raise StatusUnavailable(
            f"cannot reach the gpufleet gateway at {url} ({reason}); is 'gpufleet serve' "
            "running there? (--url points elsewhere)"
        ) from None
    if response.status_code == 401:
        if api_key:
            raise StatusUnavailable(
                f"the gateway at {url} rejected the API key (401); check --api-key or "
                "GPUFLEET_API_KEY against server.api_keys"
            )
        raise StatusUnavailable(f"the gateway at {url} needs an API key (401); pass --api-key or set GPUFLEET_API_KEY")
    if response.status_code != 200:
        snippet = response.text.strip().replace("\n", " ")[:200]
        raise StatusUnavailable(
            f"{target} answered HTTP {response.status_code}: {snippet} (is this a gpufleet gateway?)"
        )
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise StatusUnavailable(f"{target} did not answer JSON (is this a gpufleet gateway?)") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise StatusUnavailable(f"{target} answered JSON without a 'models' list (is this a gpufleet gateway?)")
    return data, response.content


# ---- rendering (pure: JSON in, rich renderables out) -------------------------------------------------------


def _count(value: Any) -> str:
    return "" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _state(model: dict[str, Any]) -> Text:
    state = str(model.get("state", "?"))
    text = Text(state, style=_STATE_STYLE.get(state, ""))
    sleep = (model.get("engine_metrics") or {}).get("sleep_state")
    if sleep and sleep != "awake":
        text.append(f", {_SLEEP_LEVEL.get(sleep, sleep)}", style="magenta")
    return text


def _phase(model: dict[str, Any]) -> str:
    # A ready vLLM's phase repeats the KV numbers shown in their own column: keep the phase name only.
    phase = str(model.get("phase") or "")
    return phase.split(":", 1)[0] if model.get("state") == "ready" else phase


def _kv_capacity(model: dict[str, Any]) -> str:
    """KV cache capacity in tokens, and how many max-length requests fit at once: "152,880 (4.67x)"."""
    kv = model.get("kv_cache") or {}
    tokens = kv.get("tokens") or (model.get("engine_metrics") or {}).get("kv_cache_tokens")
    if not tokens:
        return ""
    concurrency = kv.get("max_concurrency")
    text = f"{tokens:,}" + (f" ({concurrency:.2f}x)" if concurrency is not None else "")
    error = kv.get("planner_error")  # the plan's figure vs the logged one (planner/calibration.py)
    return text + (f", plan {error:+.1%}" if isinstance(error, int | float) else "")


def _queue(scraped: dict[str, Any]) -> str:
    if not scraped:
        return ""
    return f"{_count(scraped.get('requests_running'))}/{_count(scraped.get('requests_waiting'))}"


def _kv_usage(scraped: dict[str, Any]) -> Text:
    usage = scraped.get("kv_cache_usage")
    if usage is None:
        return Text("")
    # 85% is the alert threshold (seed 003; deploy/prometheus/gpufleet-alerts.yml).
    style = "bold red" if usage > 0.85 else "yellow" if usage > 0.7 else ""
    return Text(f"{usage * 100:.1f}%", style=style)


_NUMERIC = {"in-flight", "restarts", "KV tokens (conc.)", "vLLM run/wait", "KV use", "failures"}
_SLEEP_LEVEL = {"weights_offloaded": "asleep L1", "discard_all": "asleep L2"}


def _column(table: Table, header: str, *, no_wrap: bool = False) -> None:
    table.add_column(header, no_wrap=no_wrap, justify="right" if header in _NUMERIC else "left")


def models_table(models: list[dict[str, Any]]) -> Table:
    """One row per model: engine, state, phase, load, KV capacity and the scraped vLLM numbers."""
    table = Table(title="models", title_justify="left")
    for header in (
        "model",
        "engine",
        "state",
        "phase",
        "in-flight",
        "restarts",
        "KV tokens (conc.)",
        "vLLM run/wait",
        "KV use",
    ):
        _column(table, header, no_wrap=header == "model")
    for model in models:
        scraped = model.get("engine_metrics") or {}
        name = str(model.get("name", "?"))
        aliases = model.get("aliases") or []
        label = Text(name)
        if aliases:
            label.append(f" ({', '.join(aliases)})", style="dim")
        table.add_row(
            label,
            str(model.get("engine", "")),
            _state(model),
            _phase(model),
            _count(model.get("in_flight")),
            _count(model.get("restarts")),
            _kv_capacity(model),
            _queue(scraped),
            _kv_usage(scraped),
        )
    return table


def targets_table(targets: list[dict[str, Any]]) -> Table:
    """The router's view: each target's health, cooldown, load and failures."""
    table = Table(title="targets", title_justify="left")
    for header in ("target", "model", "healthy", "cooldown", "in-flight", "failures"):
        _column(table, header, no_wrap=header == "target")
    table.add_column("last error", max_width=50)
    for target in targets:
        healthy = target.get("healthy")
        cooldown = target.get("cooldown_until_s")
        table.add_row(
            str(target.get("target", "?")),
            str(target.get("model", "")),
            Text("yes", style="green") if healthy else Text("no", style="bold red"),
            f"{cooldown:.1f} s left" if isinstance(cooldown, int | float) else "",
            _count(target.get("in_flight")),
            _count(target.get("failures")),
            Text(str(target.get("last_error") or "").split("\n", 1)[0][:200], style="red"),
        )
    return table


def _errors(models: list[dict[str, Any]]) -> list[RenderableType]:
    out: list[RenderableType] = []
    for model in models:
        error = model.get("last_error")
        if not error:
            continue
        lines = str(error).splitlines()
        text = Text(f"{model.get('name')}: ", style="bold")
        text.append(lines[0], style="red")
        # Failed starts carry the engine's last log lines: show the end, where the cause usually is.
        tail = lines[1:][-8:]
        if tail:
            text.append("\n" + "\n".join(f"    {line}" for line in tail), style="dim")
        out.append(text)
    return out


def _warnings(models: list[dict[str, Any]]) -> list[RenderableType]:
    # Planner and vLLM flag warnings: a running engine may still be slower or smaller than expected.
    return [
        Text(f"{model.get('name')}: ", style="bold").append(str(warning), style="yellow")
        for model in models
        for warning in model.get("warnings") or ()
    ]


def render_status(data: dict[str, Any], url: str) -> Group:
    """Everything `gpufleet status` prints for one /status answer."""
    models = [m for m in data.get("models", []) if isinstance(m, dict)]
    ready = sum(1 for m in models if m.get("state") in ("ready", "remote"))
    parts: list[RenderableType] = [
        Text(f"gpufleet at {url}: {len(models)} models, {ready} ready or remote", style="bold"),
        models_table(models),
    ]
    targets = data.get("targets")
    if isinstance(targets, list) and targets:
        parts.append(targets_table([t for t in targets if isinstance(t, dict)]))
    for title, lines in (("warnings", _warnings(models)), ("last errors", _errors(models))):
        if lines:
            parts.append(Text(title, style="bold"))
            parts.extend(lines)
    return Group(*parts)


# ---- the command -------------------------------------------------------------------------------------------


def status(
    url: Annotated[str, typer.Option("--url", envvar="GPUFLEET_URL", help="the gateway's root URL")] = DEFAULT_URL,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="GPUFLEET_API_KEY", help="Bearer key when server.api_keys is set")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print /status as the gateway sent it")] = False,
    watch: Annotated[
        float | None, typer.Option("--watch", min=0.2, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C")
    ] = None,
) -> None:
    """Show every model's engine state, startup phase, load, KV cache and router targets of a running gateway."""
    console = Console()
    try:
        if watch is None:
            _show_once(console, url, api_key, as_json)
        elif as_json:
            while True:
                _show_once(console, url, api_key, as_json)
                time.sleep(watch)
        else:
            _watch(console, url, api_key, watch)
    except StatusUnavailable as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _show_once(console: Console, url: str, api_key: str | None, as_json: bool) -> None:
    data, raw = fetch_status(url, api_key)
    if as_json:
        typer.echo(raw.decode())
    else:
        console.print(render_status(data, url))


def _watch(console: Console, url: str, api_key: str | None, every_s: float) -> None:
    data, _ = fetch_status(url, api_key)  # a first failure ends the command; later ones are shown and retried
    with Live(render_status(data, url), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(every_s)
            try:
                data, _ = fetch_status(url, api_key)
                view: RenderableType = render_status(data, url)
            except StatusUnavailable as err:
                view = Group(render_status(data, url), Text(f"(stale) {err}", style="bold red"))
            live.update(view, refresh=True)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
