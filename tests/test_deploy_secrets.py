"""`gpufleet deploy` keeps secrets out of manifests and world-readable files (issue 20 §4): literal API keys,
a remote's api_key, URL passwords and secret-named env values become ${VAR}s whose values go only to a 0600 env
file; a gateway reachable without keys is warned about on stderr."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.config import parse_config
from gpufleet.deploy.secret_lift import lift_secrets

SECRETS = ("sk-gateway-literal", "sk-remote-literal", "pw-in-url", "hf_literaltoken", "db-pw-literal")


def config(**server: Any) -> dict[str, Any]:
    return {
        "server": {"api_keys": ["sk-gateway-literal"], "database_url": "postgresql://gf:db-pw-literal@db/gf", **server},
        "models": {
            "big": {
                "engine": "vllm",
                "model": "Qwen/Qwen3-8B-AWQ",
                "vllm_version": "0.11.0",
                "env": {"HF_TOKEN": "hf_literaltoken", "VLLM_LOGGING_LEVEL": "INFO"},
            },
            "rig": {"engine": "remote", "url": "http://10.0.0.5:8000/v1", "api_key": "sk-remote-literal"},
            "basic": {"engine": "remote", "url": "http://bob:pw-in-url@10.0.0.6:8000/v1"},
        },
    }


def deploy(tmp_path: Path, target: str, raw: dict[str, Any]) -> tuple[Any, Path]:
    path = tmp_path / "gpufleet.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / target
    result = CliRunner().invoke(app, ["deploy", target, "--config", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return result, out


@pytest.mark.parametrize("target", ["compose", "k8s", "systemd"])
def test_literal_secrets_only_in_a_0600_env_file(tmp_path: Path, target: str) -> None:
    _, out = deploy(tmp_path, target, config())
    env_name = "gpufleet.env" if target == "systemd" else ".env"
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.name == env_name:
            assert mode == 0o600
            for secret in SECRETS:
                assert secret in text, (secret, text)
        else:
            assert mode == 0o644
            for secret in SECRETS:
                assert secret not in text, (path, secret)


def test_lifted_config_still_loads_with_the_env_file_values(monkeypatch: pytest.MonkeyPatch) -> None:
    lifted, secrets = lift_secrets(config())
    assert lifted["server"]["api_keys"] == ["${GPUFLEET_API_KEY_1}"]
    assert lifted["models"]["basic"]["url"] == "http://bob:${GPUFLEET_BASIC_URL_PASSWORD}@10.0.0.6:8000/v1"
    assert lifted["models"]["big"]["env"] == {"HF_TOKEN": "${HF_TOKEN}", "VLLM_LOGGING_LEVEL": "INFO"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    loaded = parse_config(lifted)
    assert loaded.server.api_keys == ["sk-gateway-literal"]
    assert loaded.models["rig"].api_key == "sk-remote-literal"  # type: ignore[union-attr]


def test_references_stay_references() -> None:
    raw = {
        "server": {"api_keys": ["${GPUFLEET_KEY}"]},
        "models": {"rig": {"engine": "remote", "url": "http://10.0.0.5/v1", "api_key": "${RIG_KEY}"}},
    }
    lifted, secrets = lift_secrets(raw)
    assert lifted == raw and secrets == {}


@pytest.mark.parametrize(
    ("target", "server", "warned"),
    [
        ("compose", {"api_keys": []}, True),
        ("k8s", {"api_keys": []}, True),
        ("systemd", {"api_keys": [], "host": "0.0.0.0"}, True),
        ("systemd", {"api_keys": []}, False),
        ("compose", {}, False),
    ],
)
def test_keyless_reachable_gateway_is_warned_about(
    tmp_path: Path, target: str, server: dict[str, Any], warned: bool
) -> None:
    raw = config()
    raw["server"] = {**raw["server"], **server}
    result, _ = deploy(tmp_path, target, raw)
    assert ("without server.api_keys" in result.stderr) is warned
