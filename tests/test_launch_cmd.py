"""`gpufleet launch`: the environment and arguments that point Claude Code and Codex at a gateway."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.cli.launch_cmd import claude_env, codex_overrides, engine_context
from gpufleet.config import parse_config
from gpufleet.gateway import build_app
from tests.gateway_harness import served_app
from tests.standin_qwen_coder import StandInQwenCoder


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    coder = StandInQwenCoder().start()
    config = parse_config(
        {
            "server": {"api_keys": ["k1"]},
            "models": {
                "coder": {"engine": "remote", "url": coder.url, "upstream_model": "Qwen/Qwen3-8B", "aliases": ["fast"]}
            },
        }
    )
    with served_app(build_app(config)) as url:
        yield url
    coder.stop()


def _exports(output: str) -> dict[str, str]:
    pairs = [shlex.split(line.removeprefix("export "))[0] for line in output.splitlines() if line.startswith("export ")]
    return dict(pair.split("=", 1) for pair in pairs)


def test_launch_claude_print_shows_the_environment(gateway_url: str) -> None:
    result = CliRunner().invoke(
        app, ["launch", "claude", "--print", "--url", gateway_url, "--api-key", "k1", "--model", "fast"]
    )
    assert result.exit_code == 0, result.output
    env = _exports(result.output)
    assert env["ANTHROPIC_BASE_URL"] == gateway_url and env["ANTHROPIC_API_KEY"] == "k1"
    assert env["ANTHROPIC_MODEL"] == env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "fast"
    assert "CLAUDE_CODE_MAX_CONTEXT_TOKENS" not in env  # a remote engine's window is not known here
    assert result.output.splitlines()[-1] == "claude"


def test_launch_codex_print_shows_a_responses_provider(gateway_url: str) -> None:
    result = CliRunner().invoke(
        app, ["launch", "codex", "--print", "--url", gateway_url + "/v1", "--api-key", "k1", "--", "exec", "hello"]
    )
    assert result.exit_code == 0, result.output
    command = shlex.split(result.output.splitlines()[-1])
    assert command[0] == "codex" and command[-2:] == ["exec", "hello"]
    assert (
        f'model_providers.gpufleet={{name="gpufleet", base_url="{gateway_url}/v1", env_key="GPUFLEET_API_KEY", '
        'wire_api="responses"}' in command
    )
    assert 'model="coder"' in command  # the first served model when --model is not given


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["launch", "claude", "--model", "nope"], "model 'nope' is not served"),
        (["launch", "vim"], "unknown client 'vim'"),
    ],
)
def test_launch_errors_exit_2_with_a_message(gateway_url: str, argv: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*argv, "--url", gateway_url, "--api-key", "k1", "--print"])
    assert result.exit_code == 2 and message in result.output


def test_launch_unreachable_gateway_names_the_url() -> None:
    result = CliRunner().invoke(app, ["launch", "claude", "--print", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "cannot reach the gpufleet gateway at http://127.0.0.1:9" in result.output


def test_context_window_reaches_both_clients() -> None:
    assert claude_env("http://g", "k", "m", 4096)["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "4096"
    assert "model_context_window=4096" in codex_overrides("http://g", "m", 4096)
    assert engine_context({"models": [{"name": "m", "base_url": None}]}, "m", [{"id": "m"}]) is None
