"""The `gpufleet bench` command lines README.md and docs/bench.md show work on the config `make run` serves.

README once showed `gpufleet bench smollm2 qwen ...`, and the built-in config has no model named `qwen`
(issue 25). Every documented bench command that goes to the default gateway is parsed by the CLI itself and
each of its model names resolved by the router against the built-in config; one of them is run verbatim
against a real `gpufleet serve` started with no config at all (what `make run` starts).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer.main

from gpufleet.bench.targets import parse_targets
from gpufleet.cli import app
from gpufleet.config import DEFAULT_CONFIG, parse_config
from gpufleet.engine_supervisor.ports import free_port
from gpufleet.router.table import ModelTable
from tests.repo_paths import REPO
from tests.served_gateway import ServedGateway, stop_gateway

DOCS = (REPO / "README.md", REPO / "docs" / "bench.md")
RUN_VERBATIM = "gpufleet bench smollm2 --compare-direct --concurrency 1,2 --requests 2 --max-tokens 8 --plot bench.png"
_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"`(gpufleet bench [^`]+)`")


def documented_bench_commands(path: Path) -> list[str]:
    """Every `gpufleet bench ...` command of a Markdown file, in code blocks (continuations joined, comments
    dropped) or inline code, except the synopsis in README's command table (TARGET..., [options])."""
    text = path.read_text(encoding="utf-8")
    lines = [line for block in _FENCE.findall(text) for line in block.replace("\\\n", " ").splitlines()]
    lines += _INLINE.findall(text)
    commands = []
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        if not line.startswith("gpufleet bench ") or "TARGET" in line or "[" in line:
            continue
        commands.append(" ".join(line.split()))
    return commands


def _default_gateway_commands() -> list[str]:
    found = [command for path in DOCS for command in documented_bench_commands(path)]
    # Commands with --base-url go to another gateway (docs/bench.md's recorded fleet run), not `make run`'s.
    return [command for command in found if "--base-url" not in command]


def test_the_docs_show_bench_commands_for_the_default_gateway() -> None:
    commands = _default_gateway_commands()
    assert len(commands) >= 5, commands
    assert RUN_VERBATIM in commands
    assert any(
        command.startswith("gpufleet bench qwen2.5-coder") for command in documented_bench_commands(REPO / "README.md")
    ), "README's bench example names the model `make run` preloads"


@pytest.mark.parametrize("command", _default_gateway_commands())
def test_documented_bench_command_parses_and_names_models_of_the_default_config(command: str) -> None:
    argv = shlex.split(command)[2:]  # drop "gpufleet bench"
    click_bench = typer.main.get_command(app).commands["bench"]  # type: ignore[attr-defined]
    context = click_bench.make_context("bench", argv)  # the CLI's own option parsing, nothing run
    table = ModelTable(parse_config(DEFAULT_CONFIG, file="<built-in default>"))
    for target in parse_targets(list(context.params["targets"]), gateway=context.params["base_url"]):
        if target.via_gateway:
            table.resolve(target.model)  # ModelNotFound (lists the names) for a model the default config lacks


@pytest.fixture(scope="module")
def default_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    """`gpufleet serve` with no --config and no $GPUFLEET_CONFIG: the built-in config, as `make run` serves it."""
    tmp = tmp_path_factory.mktemp("default-gateway")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "GPUFLEET_CONFIG"}
    log_path = tmp / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gpufleet.cli", "serve", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    gateway = ServedGateway(process, port, log_path)
    deadline = time.monotonic() + 600  # the preloaded Qwen2.5-Coder-1.5B loads in ~25 s on a quiet 2-core host
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gpufleet serve exited early:\n{gateway.log()[-3000:]}")
        try:
            if httpx.get(f"{gateway.url}/health/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        stop_gateway(gateway)
        pytest.fail(f"the default gateway was not ready in 600 s:\n{gateway.log()[-3000:]}")
    yield gateway
    stop_gateway(gateway)


@pytest.mark.slow
@pytest.mark.qwen
def test_the_documented_first_bench_runs_verbatim_on_the_default_gateway(
    default_gateway: ServedGateway, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "gpufleet.cli", *shlex.split(RUN_VERBATIM)[1:]]
    # The documented line as it stands; the environment says where the gateway is ($GPUFLEET_URL, an
    # option's documented variable) and keeps the latest report out of the user's cache.
    env = {
        **os.environ,
        "GPUFLEET_URL": f"{default_gateway.url}/v1",
        "GPUFLEET_CACHE": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "cache" / "bench" / "latest" / "report.json").read_text())
    assert [t["label"] for t in report["targets"]] == ["smollm2", "smollm2 (direct)"]
    assert all(run["succeeded"] == run["requests"] == 2 for run in report["runs"]), report["runs"]
    assert {t["engine"]["name"] for t in report["targets"]} == {"llamacpp"}
