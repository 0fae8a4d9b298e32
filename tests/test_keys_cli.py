"""`gpufleet keys` end to end, and a real `gpufleet serve` restart (SIGTERM) that loses no answered usage row.

Upstream is the STAND-IN server (tests/standin_upstream.py).
"""

from __future__ import annotations

import csv
import io
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.store import open_store
from tests.served_gateway import start_gateway, stop_gateway
from tests.standin_upstream import StandInUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandInUpstream]:
    server = StandInUpstream().start()
    yield server
    server.stop()


def config(tmp_path: Path, upstream: StandInUpstream) -> dict[str, object]:
    return {
        "server": {"database_url": f"sqlite:///{tmp_path}/store.sqlite3"},
        "models": {"qwen": {"engine": "remote", "url": upstream.url}},
    }


def cli(cfg: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["keys", *args, "--config", str(cfg)])
    return result.exit_code, result.stdout, result.stderr


def test_create_prints_the_key_once_and_list_revoke_usage_work(tmp_path: Path, upstream: StandInUpstream) -> None:
    cfg = tmp_path / "gpufleet.yaml"
    cfg.write_text(yaml.safe_dump(config(tmp_path, upstream)))
    code, out, err = cli(
        cfg,
        "create",
        "--name",
        "alice",
        "--models",
        "qwen*,nothing*",
        "--rpm",
        "60",
        "--tokens-per-day",
        "1000",
        "--expires",
        "30d",
    )
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("gfk-") and len(secret) > 40
    assert "not shown again" in err and "rpm 60" in err
    assert "'nothing*' matches no model" in err
    code, out, _ = cli(cfg, "list")
    assert code == 0 and "alice" in out and "active" in out and secret not in out and f"...{secret[-4:]}" in out
    assert secret not in cfg.with_name("store.sqlite3").read_bytes().decode("latin-1")  # only its hash is stored
    code, _, err = cli(cfg, "create", "--name", "alice")
    assert code == 2 and "live key named 'alice'" in err
    for bad in (
        ["create", "--name", "x", "--expires", "3y"],
        ["create", "--name", "bad name"],
        ["usage", "--by", "password"],
        ["usage", "--since", "soon"],
        ["revoke", "nobody"],
    ):
        code, _, err = cli(cfg, *bad)
        assert code == 2 and err.startswith("error: "), (bad, err)
    code, out, _ = cli(cfg, "revoke", "alice")
    assert code == 0 and "revoked key 'alice'" in out
    code, out, _ = cli(cfg, "list")
    assert "alice" not in out
    code, out, _ = cli(cfg, "list", "--all")
    assert "revoked" in out


@pytest.mark.processes
def test_a_restart_loses_no_answered_row_and_keeps_the_daily_budget(tmp_path: Path, upstream: StandInUpstream) -> None:
    cfg_data = config(tmp_path, upstream)
    cfg = tmp_path / "keys.yaml"
    cfg.write_text(yaml.safe_dump(cfg_data))
    _, out, _ = cli(cfg, "create", "--name", "bob", "--tokens-per-day", "10")
    headers = {"Authorization": f"Bearer {out.strip()}"}
    body = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}
    served = start_gateway(cfg_data, tmp_path)
    try:
        statuses = [
            httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=headers, timeout=30).status_code
            for _ in range(3)
        ]
    finally:
        stop_gateway(served, signal.SIGTERM)  # uvicorn ends by re-raising SIGTERM: the exit status is -15
    assert statuses == [200, 200, 429]  # 7 tokens, then 14 >= 10
    store = open_store(str(cfg_data["server"]["database_url"]))  # type: ignore[index]
    assert store.usage(0, [])[0]["requests"] == 3  # written at shutdown, though the flush interval had not come
    store.close()
    (tmp_path / "second").mkdir()
    served = start_gateway(cfg_data, tmp_path / "second")
    try:
        again = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    finally:
        stop_gateway(served, signal.SIGTERM)
    assert again.status_code == 429 and "tokens per day (10)" in again.json()["error"]["message"]
    code, out, _ = cli(cfg, "usage", "--since", "1d", "--by", "key,model,status", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["key"], r["model"], r["status"], r["requests"]) for r in rows] == [
        ("bob", "qwen", "200", "2"),
        ("bob", "qwen", "429", "2"),
    ]
    assert rows[0]["prompt_tokens"] == "6" and rows[0]["completion_tokens"] == "8"
