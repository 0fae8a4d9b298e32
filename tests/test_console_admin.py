"""The console's admin views: the host panel (/admin/host) and an engine's log tail (/admin/models/NAME/logs).

NVML is a FAKE library object here (this machine has no GPU; scripts/gpu-check reads a real one). The engine
whose log is read is the STAND-IN vLLM (tests/standin_vllm, not vLLM), started through a wrapper interpreter that
prints credentials first, so the masking is checked on what a real process printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pynvml
import pytest

from gpufleet.config import parse_config
from gpufleet.doctor.host_load import (
    HostMonitor,
    cpu_percent,
    parse_loadavg,
    parse_proc_stat,
    process_group,
    read_gpus,
    read_nvml_gpus,
)
from gpufleet.gateway import build_app, running
from gpufleet.limits import Limits
from gpufleet.redact import mask_secrets
from gpufleet.store import KeyRecord, new_secret, open_store
from tests.repo_paths import REPO
from tests.standin_vllm import standin_model

ADMIN = "admin-key-console"
HF_TOKEN = "hf_" + "Q" * 34
MIB = 1 << 20


class FakeNvml:
    """A FAKE NVML library object (pynvml's function names and return shapes) for two GPUs: an H100 with two
    processes and a GB10 that, like the real one, answers memory and power queries with NotSupported."""

    def __init__(self, *, pids: tuple[int, ...] = (4242, 4343)) -> None:
        self.pids = pids
        self.initialised = 0
        self.shut_down = 0

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.shut_down += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return "NVIDIA H100 80GB HBM3" if handle == 0 else b"NVIDIA GB10"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        if handle == 1:
            raise pynvml.NVMLError_NotSupported()
        return SimpleNamespace(total=81559 * MIB, used=61440 * MIB, free=20119 * MIB)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=87 if handle == 0 else 3, memory=41 if handle == 0 else 0)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return 64 if handle == 0 else 41

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1:
            raise pynvml.NVMLError_NotSupported()
        return 412_345  # milliwatts

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        if handle == 1:
            return []
        return [
            SimpleNamespace(pid=self.pids[0], usedGpuMemory=60000 * MIB),
            SimpleNamespace(pid=self.pids[1], usedGpuMemory=None),
        ]


def test_proc_stat_gives_busy_share_between_two_readings() -> None:
    before = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    after = parse_proc_stat("cpu  250 0 100 1000 50 0 0 0 0 0\n")
    assert (before.busy, before.total) == (150, 1000)
    assert cpu_percent(before, after) == 50.0  # 200 busy of 400 jiffies
    assert cpu_percent(after, after) is None
    assert parse_loadavg("0.52 1.10 2.00 3/512 999\n") == [0.52, 1.1, 2.0]
    with pytest.raises(ValueError, match="no 'cpu' line"):
        parse_proc_stat("intr 1 2 3\n")


def test_nvml_reading_of_every_gpu_through_a_fake_library() -> None:
    gpus = read_gpus(FakeNvml())
    assert gpus[0] == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "memory_total_bytes": 81559 * MIB,
        "memory_used_bytes": 61440 * MIB,
        "utilization_percent": 87,
        "memory_utilization_percent": 41,
        "temperature_c": 64,
        "power_w": 412.3,
        "processes": [{"pid": 4242, "used_bytes": 60000 * MIB}, {"pid": 4343, "used_bytes": None}],
    }
    # What the GB10 does not report stays unknown instead of failing the whole reading.
    assert gpus[1]["name"] == "NVIDIA GB10"
    assert gpus[1]["memory_total_bytes"] is None and gpus[1]["power_w"] is None
    assert gpus[1]["utilization_percent"] == 3


def test_nvml_is_shut_down_after_each_reading_and_a_missing_driver_reads_as_no_gpus() -> None:
    fake = FakeNvml()
    gpus, state = read_nvml_gpus(lambda: fake)
    assert state == "ok" and len(gpus) == 2
    assert (fake.initialised, fake.shut_down) == (1, 1)

    def no_driver() -> Any:
        raise pynvml.NVMLError_LibraryNotFound()

    gpus, state = read_nvml_gpus(no_driver)
    assert gpus == []
    assert state.startswith("unavailable: NVMLError_LibraryNotFound")


def test_the_real_nvml_library_answers_on_this_host_with_or_without_a_gpu() -> None:
    gpus, state = read_nvml_gpus(lambda: pynvml)
    if state == "ok":  # a GPU host: each GPU has a name and a memory size
        assert all(gpu["name"] for gpu in gpus)
    else:  # this CPU-only machine: no driver, no GPUs, and the reason is given
        assert gpus == [] and state.startswith("unavailable:")


def test_a_gpu_process_maps_to_its_process_group(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    # The command name may hold spaces and parentheses: the fields after the last ')' count.
    (tmp_path / "4242" / "stat").write_text("4242 (VLLM::Engine (core)) S 4200 4100 4100 0 -1\n")
    assert process_group(4242, tmp_path) == 4100
    assert process_group(9999, tmp_path) is None
    assert process_group(os.getpid()) == os.getpgid(0)


async def test_host_monitor_reads_cpu_memory_and_gpus(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 0 50 800 50 0 0 0 0 0\n")
    (tmp_path / "meminfo").write_text("MemTotal:       131072000 kB\nMemAvailable:    98304000 kB\n")
    (tmp_path / "loadavg").write_text("1.50 1.00 0.50 2/300 77\n")
    monitor = HostMonitor(nvml_loader=FakeNvml, proc_root=tmp_path)
    first = asyncio.create_task(monitor.read())
    await asyncio.sleep(0.05)  # the first read compares two readings a moment apart
    (tmp_path / "stat").write_text("cpu  130 0 60 860 50 0 0 0 0 0\n")
    reading = await first
    assert reading["cpu"]["percent"] == 40.0
    assert reading["cpu"]["load"] == [1.5, 1.0, 0.5]
    assert reading["memory"] == {
        "total_bytes": 131072000 * 1024,
        "available_bytes": 98304000 * 1024,
        "used_bytes": (131072000 - 98304000) * 1024,
    }
    assert reading["nvml"] == "ok" and [g["name"] for g in reading["gpus"]] == ["NVIDIA H100 80GB HBM3", "NVIDIA GB10"]
    (tmp_path / "stat").write_text("cpu  190 0 60 900 50 0 0 0 0 0\n")
    assert (await monitor.read())["cpu"]["percent"] == 60.0  # since the last read, without waiting again


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        (
            "non-default args: {'host': '127.0.0.1', 'api_key': ['abc123xyz']}",
            "non-default args: {'host': '127.0.0.1', 'api_key': ['***']}",
        ),
        ("argv: --api-key sk-abc --port 8000", "argv: --api-key *** --port 8000"),
        (f"HF_TOKEN={HF_TOKEN}", "HF_TOKEN=***"),
        (f"using {HF_TOKEN} for the download", "using *** for the download"),
        ("GET with Authorization: Bearer abc.def", "GET with Authorization: Bearer ***"),
        ("fetching http://bob:hunter2@10.0.0.5/v1", "fetching http://***@10.0.0.5/v1"),
        ("the engine key is KNOWN-SECRET-1", "the engine key is ***"),
        # Ordinary engine lines stay as they are.
        ("Avg prompt throughput: 3.4 tokens/s, max_num_batched_tokens=2048", None),
        ("tokenizer='/models/q', skip_tokenizer_init=False", None),
    ],
)
def test_engine_log_lines_have_credentials_masked(line: str, masked: str | None) -> None:
    assert mask_secrets(line, ["KNOWN-SECRET-1"]) == (masked if masked is not None else line)


def secret_printing_python(directory: Path) -> Path:
    """An interpreter wrapper for the STAND-IN vLLM that first prints what a careless engine might: its own key
    (the per-start one gpufleet set), a token from its environment, a proxy URL with a password."""
    wrapper = directory / "python-wrapper"
    # Only the server start prints them (gpufleet also runs the interpreter to ask vLLM's version).
    wrapper.write_text(
        '#!/bin/sh\ncase "$*" in *vllm.entrypoints*)\n  echo "engine key: $VLLM_API_KEY"\n'
        '  echo "hub token $HF_TOKEN"\n  echo "proxy http://user:pw@proxy:3128";;\nesac\n'
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


@pytest.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The app in-process with admin and team keys, a STAND-IN vLLM (through a wrapper that prints credentials
    first), a remote model, and the FAKE NVML."""
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    wrapper = secret_printing_python(tmp_path)
    db = f"sqlite:///{tmp_path}/store.sqlite3"
    team = new_secret()
    store = open_store(db)
    store.add_key(KeyRecord.create(name="team", secret=team, limits=Limits()))
    store.close()
    config = parse_config(
        {
            "server": {"api_keys": [ADMIN], "database_url": db},
            "models": {
                "m": standin_model(python=str(wrapper), preload=True, aliases=["m-alias"], env={"HF_TOKEN": HF_TOKEN}),
                "far": {"engine": "remote", "url": "http://127.0.0.1:9/v1", "api_key": "remote-secret-key"},
            },
        }
    )
    app = build_app(config)
    app.state.host_monitor = HostMonitor(nvml_loader=lambda: FakeNvml(pids=(os.getpid(), 1)))
    transport = httpx.ASGITransport(app=app)
    async with running(app) as gateway, httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        await gateway.supervisor.ensure_ready("m", wait_s=60)
        yield http, team


ADMIN_VIEWS = ["/admin/host", "/admin/models/m/logs"]


@pytest.mark.parametrize("path", ADMIN_VIEWS)
async def test_admin_views_refuse_no_key_a_wrong_key_a_team_key_and_another_origin(
    served: tuple[httpx.AsyncClient, str], path: str
) -> None:
    http, team = served
    assert (await http.get(path)).status_code == 401
    assert (await http.get(path, headers={"Authorization": "Bearer nope"})).status_code == 401
    as_team = await http.get(path, headers={"Authorization": f"Bearer {team}"})
    assert as_team.status_code == 403
    assert as_team.json()["error"]["code"] == "admin_requires_admin_key"
    # A page on another site, even one holding the admin key (a browser would send it only if it were told to).
    cross = await http.get(path, headers={"Authorization": f"Bearer {ADMIN}", "Origin": "http://evil.example"})
    assert cross.status_code == 403
    assert cross.json()["error"]["code"] == "origin_not_allowed"
    rebound = await http.get(path, headers={"Authorization": f"Bearer {ADMIN}", "Host": "evil.example"})
    assert rebound.status_code == 403
    own = await http.get(path, headers={"Authorization": f"Bearer {ADMIN}", "Origin": "http://localhost"})
    assert own.status_code == 200


async def test_host_view_tags_gpu_processes_with_their_model(served: tuple[httpx.AsyncClient, str]) -> None:
    http, _ = served
    response = await http.get("/admin/host", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["nvml"] == "ok"
    assert body["cpu"]["cores"] == os.cpu_count() and 0 <= body["cpu"]["percent"] <= 100
    assert body["memory"]["total_bytes"] > body["memory"]["available_bytes"] > 0
    # The fake's first process is this test's pid: its process group is no engine's; pid 1 is init's.
    assert [p["model"] for p in body["gpus"][0]["processes"]] == [None, None]


async def test_engine_log_tail_is_masked_and_bounded(served: tuple[httpx.AsyncClient, str]) -> None:
    http, _ = served
    auth = {"Authorization": f"Bearer {ADMIN}"}
    body = (await http.get("/admin/models/m/logs?lines=200", headers=auth)).json()
    assert body["model"] == "m" and body["state"] == "ready" and body["pid"]
    text = "\n".join(body["lines"])
    assert "engine key: ***" in text and "hub token ***" in text and "http://***@proxy:3128" in text
    assert HF_TOKEN not in text and "user:pw" not in text
    assert any("Starting vLLM API server" in line or "non-default args" in line for line in body["lines"])
    last = (await http.get("/admin/models/m-alias/logs?lines=3", headers=auth)).json()  # an alias names it too
    assert last["model"] == "m" and last["lines"] == body["lines"][-3:]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/admin/models/m/logs?lines=0", 400, "invalid_lines"),
        ("/admin/models/m/logs?lines=201", 400, "invalid_lines"),
        ("/admin/models/m/logs?lines=ten", 400, "invalid_lines"),
        ("/admin/models/nope/logs", 404, "model_not_found"),
        ("/admin/models/far/logs", 404, "model_not_found"),
    ],
)
async def test_engine_log_bad_requests_say_what_is_wrong(
    served: tuple[httpx.AsyncClient, str], path: str, status: int, code: str
) -> None:
    http, _ = served
    response = await http.get(path, headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if path.endswith("far/logs"):
        assert "remote endpoint" in response.json()["error"]["message"]


def test_gpu_check_host_reading_step_reports_what_nvml_said() -> None:
    """scripts/gpu-check's host-reading step (run for real on a lent GPU): here, without a driver, it says so."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check_helpers.py"), "host-reading", str(os.getpgid(0))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    reading = json.loads(done.stdout)
    assert reading["memory"]["total_bytes"] > 0 and reading["cpu"]["cores"] == os.cpu_count()
    if reading["nvml"] == "ok":
        assert reading["ok"] is bool(reading["gpus"])
    else:
        assert reading["ok"] is False and reading["gpus"] == [] and reading["engine_gpu_bytes"] == 0
