"""gpufleet.yaml loading: defaults, and bad config → file, key path and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.config import LlamaCppModel, RemoteModel, load_config
from gpufleet.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gpufleet.yaml"
    path.write_text(text)
    return path


def test_no_config_file_serves_the_embedded_qwen_model() -> None:
    config = load_config(None)
    model = config.models["qwen2.5-coder-1.5b-instruct"]
    assert isinstance(model, LlamaCppModel)
    assert model.source == "package:qwen2.5-coder-1.5b-instruct"
    assert model.preload
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8000)


def test_full_example_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIG_KEY", "sk-rig")
    path = write(
        tmp_path,
        """
server: {host: 0.0.0.0, port: 9000, api_keys: ["${RIG_KEY}"], max_body_bytes: 1000}
models:
  coder:
    engine: llamacpp
    source: package:qwen2.5-coder-1.5b-instruct
    aliases: [qwen-coder]
    idle_ttl_s: 600
  rig:
    engine: remote
    url: http://10.0.0.5:8000/v1/
    api_key: ${RIG_KEY}
    upstream_model: Qwen/Qwen3-32B-AWQ
""",
    )
    config = load_config(path)
    rig = config.models["rig"]
    assert isinstance(rig, RemoteModel)
    assert rig.url == "http://10.0.0.5:8000/v1"
    assert rig.api_key == "sk-rig"
    assert config.server.api_keys == ["sk-rig"]


@pytest.mark.parametrize(
    ("text", "key_path", "reason"),
    [
        ("models:\n  a: {engine: llamacpp, source: x.gguf, context: -5}\n", "models.a.context", "greater than 0"),
        ("models:\n  a: {engine: llamacpp, source: x.gguf, contxt: 5}\n", "models.a.contxt", "unknown key"),
        ("models:\n  a: {engine: tgi, source: x}\n", "models.a", "unknown engine"),
        ("models:\n  a: {source: x}\n", "models.a", "missing 'engine'"),
        ("models:\n  a: {engine: remote, url: ftp://x}\n", "models.a.url", "http://"),
        (
            "models:\n  a: {engine: remote, url: 'http://x/v1', aliases: [b]}\n  b: {engine: remote, url: 'http://y/v1'}\n",
            "models.b",
            "already used by models.a",
        ),
        ("server: {port: 99999}\nmodels:\n  a: {engine: remote, url: 'http://x/v1'}\n", "server.port", "65535"),
        ("models: {}\n", "models", "at least one model"),
        (
            "models:\n  a: {engine: remote, url: 'http://x/v1'}\nroutes:\n  r: {targets: [a, ghost]}\n",
            "routes.r.targets",
            "unknown model or route 'ghost'",
        ),
        (
            "models:\n  a: {engine: remote, url: 'http://x/v1', fallbacks: [r]}\n"
            "routes:\n  r: {targets: [a], fallbacks: [a]}\n",
            "models.a.fallbacks",
            "fallback cycle",
        ),
        (
            "models:\n  a: {engine: remote, url: 'http://x/v1'}\nroutes:\n  a: {targets: [a]}\n",
            "routes.a",
            "already used by models.a",
        ),
        (
            "models:\n  a: {engine: remote, url: 'http://x/v1'}\nrouter:\n  auto: {routine: a, moderate: a}\n",
            "router.auto.complex",
            "Field required",
        ),
        (
            "models:\n  a: {engine: remote, url: 'http://x/v1'}\n"
            "router:\n  auto: {routine: a, moderate: a, complex: b}\n",
            "router.auto.complex",
            "unknown model or route 'b'",
        ),
        (
            "models:\n  a: {engine: remote, url: 'http://x/v1'}\npersonas:\n  p: {route: zz, system_prompt: hi}\n",
            "personas.p.route",
            "unknown model or route 'zz'",
        ),
        (
            "models:\n  a: {engine: llamacpp, source: x.gguf, swap_group: g}\nswap_groups:\n  g: {memory_mib: 100}\n",
            "models.a.memory_mib",
            "required in swap group",
        ),
    ],
)
def test_bad_config_names_file_key_path_and_reason(tmp_path: Path, text: str, key_path: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert key_path in message
    assert reason in message


def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "models:\n  a: {engine: remote, url: 'http://x/v1'}\n  a: {engine: remote, url: 'http://y/v1'}\n"
    )
    with pytest.raises(ConfigError, match=r"duplicate key 'a' \(line 3\)"):
        load_config(path)


def test_unset_environment_variable_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    path = write(tmp_path, "models:\n  a: {engine: remote, url: 'http://x/v1', api_key: '${NOPE_KEY}'}\n")
    with pytest.raises(ConfigError, match=r"models\.a\.api_key: environment variable NOPE_KEY is not set"):
        load_config(path)


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(path)


def test_cli_bad_config_exits_2_with_message_not_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  a: {engine: llamacpp, source: x.gguf, parallel: 0}\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert "models.a.parallel" in result.output or "models.a.parallel" in str(result.exception)


def test_cli_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
