"""REAL Claude Code and Codex CLI against the gateway, with the STAND-IN raw Qwen3 coder upstream.

The stand-in (tests/standin_qwen_coder.py) speaks only chat completions and writes `<think>` and
`<tool_call>` as text; the gateway's dialect and protocol translation must turn them into the tool calls
each agent runs. Each agent must run the shell command the model called (a file appears) and print the
final text, which quotes the tool's result. The pinned clients are installed by `make test`'s setup into
the cache (`$GPUFLEET_CACHE/agents`, see docs/agents.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.config import parse_config
from gpufleet.gateway import build_app
from gpufleet.gateway.response_store import ResponseStore
from gpufleet.paths import cache_root
from tests.gateway_harness import served_app
from tests.standin_qwen_coder import StandInQwenCoder

pytestmark = pytest.mark.slow
KEY = "sk-agents-test"
# Whatever a client inherits from a developer's shell must not reach the real vendors or change the client.
_QUIET = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "NO_COLOR": "1",
}


def agent_bin(name: str) -> Path:
    path = cache_root() / "agents" / "node_modules" / ".bin" / name
    assert path.exists(), f"{path} is missing: run `make agents` (make test's setup installs the pinned clients)"
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, StandInQwenCoder]]:
    coder = StandInQwenCoder().start()
    config = parse_config(
        {
            "server": {"api_keys": [KEY]},
            "models": {"coder": {"engine": "remote", "url": coder.url, "upstream_model": "Qwen/Qwen3-8B"}},
        }
    )
    app = build_app(config)
    app.state.response_store = ResponseStore(tmp_path_factory.mktemp("store") / "responses.sqlite3")
    with served_app(app) as url:
        yield url, coder
    coder.stop()


def _env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **_QUIET, **extra}


def test_claude_code_runs_the_tool_the_model_called(gateway: tuple[str, StandInQwenCoder], tmp_path: Path) -> None:
    url, coder = gateway
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = _env(
        home,
        {
            "IS_SANDBOX": "1",
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_MODEL": "coder",
            "ANTHROPIC_SMALL_FAST_MODEL": "coder",
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": "coder",
        },
    )
    done = subprocess.run(
        [
            str(agent_bin("claude")),
            "-p",
            "RUN: echo claude-was-here > proof.txt",
            "--output-format",
            "json",
            "--dangerously-skip-permissions",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["is_error"] is False, result
    assert (work / "proof.txt").read_text().strip() == "claude-was-here"
    assert result["result"].startswith("DONE: ")  # the final text, after the tool result went back
    tool_turns = [body for body in coder.received if body["messages"][-1]["role"] == "tool"]
    assert tool_turns, "Claude Code never sent the tool result back"


def test_codex_runs_the_tool_the_model_called(gateway: tuple[str, StandInQwenCoder], tmp_path: Path) -> None:
    url, coder = gateway
    work, home, codex_home = tmp_path / "work", tmp_path / "home", tmp_path / "codex"
    for folder in (work, home, codex_home):
        folder.mkdir()
    (codex_home / "config.toml").write_text(
        'model = "coder"\nmodel_provider = "gpufleet"\n\n[model_providers.gpufleet]\nname = "gpufleet"\n'
        f'base_url = "{url}/v1"\nenv_key = "GPUFLEET_API_KEY"\nwire_api = "responses"\n'
    )
    env = _env(home, {"CODEX_HOME": str(codex_home), "GPUFLEET_API_KEY": KEY})
    done = subprocess.run(
        [
            str(agent_bin("codex")),
            "exec",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "RUN: echo codex-was-here > proof.txt",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (work / "proof.txt").read_text().strip() == "codex-was-here"
    assert "DONE: " in done.stdout  # codex exec prints the final message on stdout
    sent = [body for body in coder.received if body["messages"][-1]["role"] == "tool"]
    assert sent and sent[-1]["user"]  # Codex's prompt_cache_key (its session) reached session affinity


def test_gpufleet_launch_codex_runs_it_against_the_gateway(
    gateway: tuple[str, StandInQwenCoder], tmp_path: Path
) -> None:
    url, _ = gateway
    work, home, codex_home = tmp_path / "work", tmp_path / "home", tmp_path / "codex"
    for folder in (work, home, codex_home):
        folder.mkdir()
    env = _env(
        home,
        {
            "CODEX_HOME": str(codex_home),
            "GPUFLEET_CACHE": str(cache_root()),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpufleet.cli",
            "launch",
            "codex",
            "--url",
            url,
            "--api-key",
            KEY,
            "--",
            "exec",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "RUN: echo launched > proof.txt",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (work / "proof.txt").read_text().strip() == "launched"
    assert "DONE: " in done.stdout
