"""`gpufleet keys`: team API keys with models and limits, and the usage ledger (docs/keys.md).

    gpufleet keys create --name alice --models 'qwen*' --rpm 60 --tokens-per-day 200000 --expires 30d
    gpufleet keys list
    gpufleet keys revoke alice
    gpufleet keys usage --since 7d --by key,model --csv > usage.csv

They read and write the store of `server.database_url` (SQLite under the cache dir by default) directly: a
running gateway sees a new or revoked key within 5 s.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from gpufleet.config import Config, load_config
from gpufleet.limits import Limits
from gpufleet.store import GROUPABLE, KeyRecord, SqlStore, new_secret, open_store, parse_duration

keys_app = typer.Typer(help="Team API keys (models, limits, expiry) and their usage.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="gpufleet.yaml, for server.database_url (default: $GPUFLEET_CONFIG, else the built-in default)",
    ),
]


def _config(option: Path | None) -> Config:
    path = option or (Path(os.environ["GPUFLEET_CONFIG"]) if os.environ.get("GPUFLEET_CONFIG") else None)
    return load_config(path)


def _store(config: Config) -> SqlStore:
    return open_store(config.server.database_url)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _model_names(config: Config) -> list[str]:
    names = [*config.models, *config.routes, *config.personas, "auto"]
    names += [alias for model in config.models.values() for alias in model.aliases]
    names += [alias for route in config.routes.values() for alias in route.aliases]
    return names


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="who the key is for (unique among live keys)")],
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="comma-separated model/route name patterns the key may use, e.g. 'qwen*,embed'; default: every model",
        ),
    ] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", min=1, help="tokens (prompt + completion) per minute")] = None,
    tokens_per_day: Annotated[int | None, typer.Option("--tokens-per-day", min=1, help="tokens per UTC day")] = None,
    max_concurrency: Annotated[
        int | None, typer.Option("--max-concurrency", min=1, help="requests in flight at once")
    ] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="lifetime, e.g. 30d, 12h, 2w")] = None,
    config: ConfigOption = None,
) -> None:
    """Make a key and print it once (stdout); only its hash is stored."""
    cfg = _config(config)
    patterns = tuple(p.strip() for p in (models or "").split(",") if p.strip())
    expires_in_s = parse_duration(expires, option="--expires") if expires else None
    secret = new_secret()
    record = KeyRecord.create(
        name=name,
        secret=secret,
        models=patterns,
        expires_in_s=expires_in_s,
        limits=Limits(rpm=rpm, tpm=tpm, tokens_per_day=tokens_per_day, max_concurrency=max_concurrency),
    )
    known = _model_names(cfg)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(known_name, pattern) for known_name in known):
            typer.echo(f"warning: --models {pattern!r} matches no model, route or alias of this config", err=True)
    _store(cfg).add_key(record)
    typer.echo(f"created key {name!r} ({_describe(record)}); store it now, it is not shown again:", err=True)
    typer.echo(secret)


def _describe(record: KeyRecord) -> str:
    lim = record.limits
    parts = [f"models: {', '.join(record.models) or 'all'}"]
    parts += [
        f"{label} {value}"
        for label, value in (
            ("rpm", lim.rpm),
            ("tpm", lim.tpm),
            ("tokens/day", lim.tokens_per_day),
            ("concurrency", lim.max_concurrency),
        )
        if value is not None
    ]
    if record.expires_at is not None:
        parts.append(f"expires {_when(record.expires_at)} UTC")
    return "; ".join(parts)


@keys_app.command("list")
def list_keys(
    all_keys: Annotated[bool, typer.Option("--all", help="include revoked and expired keys")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
    config: ConfigOption = None,
) -> None:
    """The team keys (never the keys themselves: their last 4 characters)."""
    now = time.time()
    records = [r for r in _store(_config(config)).key_records() if all_keys or r.state(now) == "active"]
    rows = [
        {
            "name": r.name,
            "state": r.state(now),
            "key": f"...{r.hint}",
            "models": ",".join(r.models) or "*",
            "rpm": r.limits.rpm,
            "tpm": r.limits.tpm,
            "tokens_per_day": r.limits.tokens_per_day,
            "max_concurrency": r.limits.max_concurrency,
            "created": _when(r.created_at),
            "expires": _when(r.expires_at),
        }
        for r in records
    ]
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
        return
    if not rows:
        typer.echo("no team keys; make one with 'gpufleet keys create --name NAME'")
        return
    _table(rows)


@keys_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="the key's name (or id)")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key: gateways refuse it within 5 s; its usage rows stay."""
    record = _store(_config(config)).revoke(name, time.time())
    typer.echo(f"revoked key {record.name!r} (...{record.hint})")


@keys_app.command("usage")
def usage(
    since: Annotated[str, typer.Option("--since", help="how far back, e.g. 24h, 7d")] = "7d",
    by: Annotated[str, typer.Option("--by", help=f"group by, comma-separated: {', '.join(GROUPABLE)}")] = "key",
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout (for a spreadsheet)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
    config: ConfigOption = None,
) -> None:
    """Requests, errors and tokens from the usage ledger, grouped."""
    start = time.time() - parse_duration(since, option="--since")
    groups = [g.strip() for g in by.split(",") if g.strip()]
    rows = _store(_config(config)).usage(start, groups)
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
    elif as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(
            out,
            fieldnames=[
                *groups,
                "requests",
                "errors",
                "prompt_tokens",
                "completion_tokens",
                "reasoning_tokens",
                "mean_ttft_s",
            ],
        )
        writer.writeheader()
        writer.writerows(rows)
        typer.echo(out.getvalue(), nl=False)
    elif not rows:
        typer.echo(f"no usage in the last {since}")
    else:
        _table(rows)


def _table(rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    cells = [[("-" if row[c] is None else str(row[c])) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
