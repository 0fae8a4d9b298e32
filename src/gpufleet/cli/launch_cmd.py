"""`gpufleet launch claude|codex`: start a coding agent pointed at this gateway.

    gpufleet launch claude                         # Claude Code on the gateway's first model
    gpufleet launch codex --model qwen -- exec "fix the tests"
    gpufleet launch claude --print                 # show the environment / config instead of starting it

Claude Code gets ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY / its model variables; Codex gets a `gpufleet`
model provider with `wire_api = "responses"` as `-c` overrides. Both are told the context window the
engine really serves (llama.cpp: its per-slot n_ctx; vLLM: max_model_len), asked from the engine itself.
The client is the pinned one under `$GPUFLEET_CACHE/agents` when installed there, else the one on PATH.
"""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Annotated, Any

import httpx
import typer

from gpufleet.cli.status_cmd import DEFAULT_URL, StatusUnavailable, fetch_status
from gpufleet.errors import ConfigError
from gpufleet.paths import cache_root

_CLIENTS = ("claude", "codex")
_QUIET = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


def claude_env(url: str, api_key: str, model: str, context: int | None) -> dict[str, str]:
    """The environment that points Claude Code at the gateway (every model tier on `model`)."""
    env = {
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": api_key,
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        **_QUIET,
    }
    if context is not None:
        # Claude Code assumes Claude's 200k window; it compacts against these instead.
        env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] = env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] = str(context)
    return env


def codex_overrides(url: str, model: str, context: int | None) -> list[str]:
    """`-c` arguments that give Codex a `gpufleet` provider speaking the Responses API, and the model."""
    provider = f'{{name="gpufleet", base_url="{url}/v1", env_key="GPUFLEET_API_KEY", wire_api="responses"}}'
    values = [f"model_providers.gpufleet={provider}", "model_provider=gpufleet", f'model="{model}"']
    if context is not None:
        values += [f"model_context_window={context}", f"model_auto_compact_token_limit={int(context * 0.9)}"]
    return [arg for value in values for arg in ("-c", value)]


def client_binary(name: str) -> str:
    pinned = cache_root() / "agents" / "node_modules" / ".bin" / name
    if pinned.exists():
        return str(pinned)
    found = shutil.which(name)
    if found is None:
        package = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex"}[name]
        raise ConfigError(
            f"{name} is not installed: `npm install --prefix {cache_root() / 'agents'} {package}` (or put it on PATH)"
        )
    return found


def pick_model(models: list[dict[str, Any]], wanted: str | None, url: str) -> str:
    names = [str(m["id"]) for m in models]
    if wanted is not None:
        if wanted not in names:
            raise ConfigError(f"model {wanted!r} is not served by {url}; available: {', '.join(names) or 'none'}")
        return wanted
    plain = [str(m["id"]) for m in models if "alias_of" not in m and "persona_of" not in m and m["id"] != "auto"]
    if not plain:
        raise ConfigError(f"{url} serves no model")
    return plain[0]


def engine_context(status: dict[str, Any], model: str, models: list[dict[str, Any]]) -> int | None:
    """The context window the model's engine serves, asked from the engine; None when it cannot be known."""
    name = next((str(m.get("alias_of")) for m in models if m["id"] == model and m.get("alias_of")), model)
    listed = next((m for m in models if m["id"] == name and isinstance(m.get("max_model_len"), int)), None)
    if listed is not None:  # the gateway knows it (llama.cpp: the context of one slot; vLLM: max_model_len)
        return int(listed["max_model_len"])
    entry = next((m for m in status.get("models") or () if m.get("name") == name), None)
    base_url = entry.get("base_url") if entry else None
    if not base_url:
        return None
    root = str(base_url).rstrip("/").removesuffix("/v1")
    try:
        if entry and entry.get("engine") == "vllm":
            data = httpx.get(f"{root}/v1/models", timeout=5).json()
            return int(data["data"][0]["max_model_len"])
        props = httpx.get(f"{root}/props", timeout=5).json()  # llama.cpp: the window of one slot
        return int(props["default_generation_settings"]["n_ctx"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return None


def _gateway_models(url: str, api_key: str | None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{url}/v1/models", headers=headers, timeout=10)
    except httpx.HTTPError as err:
        raise ConfigError(
            f"cannot reach the gpufleet gateway at {url} ({err or type(err).__name__}); is "
            "'gpufleet serve' running there? (--url points elsewhere)"
        ) from None
    if response.status_code != 200:
        raise ConfigError(f"{url}/v1/models answered HTTP {response.status_code}; check --api-key / GPUFLEET_API_KEY")
    return list(response.json()["data"])


def launch(
    client: Annotated[str, typer.Argument(help="claude (Claude Code) or codex (Codex CLI)")],
    args: Annotated[list[str] | None, typer.Argument(help="arguments for the client, after --")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="a model, alias or route of the gateway")] = None,
    url: Annotated[str, typer.Option("--url", envvar="GPUFLEET_URL", help="the gateway's root URL")] = DEFAULT_URL,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="GPUFLEET_API_KEY", help="a key of server.api_keys")
    ] = None,
    show: Annotated[bool, typer.Option("--print", help="print the environment and command instead")] = False,
) -> None:
    """Start Claude Code or Codex pointed at this gateway (base URL, key, model, the engine's context)."""
    if client not in _CLIENTS:
        raise ConfigError(f"unknown client {client!r}: choose claude or codex")
    url = url.rstrip("/").removesuffix("/v1")
    models = _gateway_models(url, api_key)
    chosen = pick_model(models, model, url)
    try:
        status, _ = fetch_status(url, api_key)
    except StatusUnavailable:
        status = {}
    context = engine_context(status, chosen, models)
    key = api_key or "gpufleet"  # the clients insist on one; a gateway without keys ignores it
    if client == "claude":
        env, argv = claude_env(url, key, chosen, context), ["claude", *(args or [])]
    else:
        env = {"GPUFLEET_API_KEY": key, **_QUIET}
        argv = ["codex", *codex_overrides(url, chosen, context), *(args or [])]
    if show:
        for name, value in env.items():
            typer.echo(f"export {name}={shlex.quote(value)}")
        typer.echo(shlex.join(argv))
        return
    binary = client_binary(client)
    os.execve(binary, [binary, *argv[1:]], {**os.environ, **env})


def register(app: typer.Typer) -> None:
    app.command("launch", context_settings={"allow_extra_args": True})(launch)
