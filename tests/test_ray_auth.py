"""Ray token auth for multi-node models (issue 20 §2): the token file, the env every Ray process gets, the
state API headers, the client server off, and `gpufleet node join` refusing to run without a token.
The real cluster in token mode is tested in test_ray_netns.py."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.cluster.node_join import JoinSettings
from gpufleet.cluster.ray_auth import auth_env, ensure_token_file, looks_refused, read_token, state_api_headers
from gpufleet.config import VllmModel, parse_config
from gpufleet.errors import EngineError


def _model(**ray: Any) -> VllmModel:
    model = parse_config(
        {
            "models": {
                "m": {
                    "engine": "vllm",
                    "model": "/m",
                    "nodes": ["10.0.0.1", "10.0.0.2"],
                    "tensor_parallel_size": 2,
                    "gpus_per_node": 1,
                    "ray": ray,
                }
            }
        }
    ).models["m"]
    assert isinstance(model, VllmModel)
    return model


def test_token_file_is_made_once_with_mode_600(tmp_path: Path) -> None:
    path = ensure_token_file(tmp_path / "ray" / "auth_token")
    token = path.read_text()
    assert len(token) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token_file(path).read_text() == token  # kept: workers hold a copy


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("abc")
    path.chmod(0o644)
    with pytest.raises(EngineError, match="chmod 600"):
        read_token(path)


def test_env_and_headers_carry_the_path_not_the_token(tmp_path: Path) -> None:
    path = ensure_token_file(tmp_path / "t")
    token = read_token(path)
    env = auth_env(path)
    assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)} and token not in str(env)
    assert state_api_headers(token) == {"x-ray-authorization": f"Bearer {token}"}


def test_auth_can_be_turned_off_only_by_saying_so() -> None:
    assert _model().ray is not None and _model().ray.auth == "token"  # type: ignore[union-attr]
    assert _model(auth="disabled").ray.auth == "disabled"  # type: ignore[union-attr]


def test_worker_env_from_file_or_value(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "head_host": "10.0.0.1",
        "head_port": 6379,
        "node_ip": "10.0.0.2",
        "python": Path("/py"),
        "temp_dir": tmp_path,
        "log_path": tmp_path / "log",
    }
    by_file = JoinSettings(**base, token_file=tmp_path / "t")
    assert by_file.ray_env() == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")}
    by_value = JoinSettings(**base, token="s3cret")
    assert by_value.ray_env()["RAY_AUTH_TOKEN"] == "s3cret" and "s3cret" not in repr(by_value)
    assert JoinSettings(**base).ray_env() == {}


def test_node_join_without_a_token_is_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUFLEET_RAY_TOKEN", raising=False)
    monkeypatch.delenv("GPUFLEET_RAY_TOKEN_FILE", raising=False)
    result = CliRunner().invoke(app, ["node", "join", "127.0.0.1", "--node-ip", "127.0.0.1"])
    assert result.exit_code == 2
    assert "--token-file" in result.output and "Traceback" not in result.output


def test_node_join_with_a_world_readable_token_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc")
    token.chmod(0o644)
    result = CliRunner().invoke(
        app, ["node", "join", "127.0.0.1", "--node-ip", "127.0.0.1", "--token-file", str(token)]
    )
    assert result.exit_code == 2 and "chmod 600" in result.output


def test_refused_token_markers() -> None:
    assert looks_refused("RuntimeError: Token authentication is enabled but the authentication token is invalid")
    assert not looks_refused("Ray runtime started.")


def test_doctor_reads_the_state_api_with_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`gpufleet doctor` on the head polls the token-mode dashboard like the supervisor does (a STAND-IN
    dashboard here, answering like Ray's state API: 401 without the header)."""
    import http.server
    import json
    import threading

    from gpufleet.doctor.cluster_probe import _token_headers, read_state_nodes

    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path))
    token = read_token(ensure_token_file(tmp_path / "ray" / "auth_token"))

    class Dashboard(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.headers.get("x-ray-authorization") == f"Bearer {token}"
            body = json.dumps({"result": True, "data": {"result": {"result": []}}}).encode() if ok else b"no"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert read_state_nodes(port) is None  # refused without the token
        assert read_state_nodes(port, headers=_token_headers(_model())) == []
    finally:
        server.shutdown()
        server.server_close()
