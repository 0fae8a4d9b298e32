"""Swap groups: models sharing one GPU take turns (engine_supervisor/swap.py has the policy).

- `plan_swap` (pure) is tested with tables.
- The queue and the stop/start path run real processes: a tiny STAND-IN engine (stdlib http.server, inline below;
  not an engine, it serves /health and an echo) injected through the supervisor's `engines` argument.
- The sleep/wake path runs against the STAND-IN vLLM in tests/standin_vllm (not vLLM: it implements vLLM 0.32's
  dev-mode /sleep, /wake_up and /is_sleeping). Real vLLM sleep mode needs CUDA and is not run here.
- The slow tests serve two real embedded SmolLM2 engines in one group through a real `gpufleet serve`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app as cli_app
from gpufleet.config import LlamaCppModel, SwapGroupConfig, VllmModel, parse_config
from gpufleet.engine_supervisor import EngineState, Supervisor
from gpufleet.engine_supervisor.ports import free_port
from gpufleet.engine_supervisor.sleep import host_available_mib, sleep_refusal
from gpufleet.engine_supervisor.swap import Member, Occupancy, SwapPlan, plan_swap
from gpufleet.engines.base import LaunchSpec, local_urls
from gpufleet.errors import EngineError, EngineNotReady, ModelSourceError, RequestError
from gpufleet.gateway import build_app, running
from tests.gateway_harness import served_app
from tests.real_engines import smollm2_model
from tests.repo_paths import REPO
from tests.served_gateway import ServedGateway, pid_alive, start_gateway, stop_gateway
from tests.standin_kit import STANDIN_ENGINE_PROCESS

STANDIN_VLLM = Path(__file__).resolve().parent / "standin_vllm"


class StandInEngine:
    """An Engine that launches tests/standin_engine_process.py for any model."""

    kind = "llamacpp"

    def resolve(self, name: str, model: object) -> None:
        if name.startswith("broken"):
            raise ModelSourceError(f"{name}: no such model file (stand-in failure)")

    def launch_spec(self, name: str, model: object, resolved: None, port: int) -> LaunchSpec:
        urls = local_urls(port, metrics_path=None)
        return LaunchSpec(
            argv=[sys.executable, str(STANDIN_ENGINE_PROCESS), str(port)],
            env={},
            port=port,
            base_url=urls["base_url"],
            health_url=urls["health_url"],
        )


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))  # engine logs stay out of the shared cache
    yield


def state(sup: Supervisor, name: str) -> EngineState:
    return sup.slots[name].state  # a call, so mypy does not narrow the state across awaits


def pid_of(sup: Supervisor, name: str) -> int:
    process = sup.slots[name].process
    assert process is not None and process.pid is not None
    return process.pid


def member(name: str, occupancy: str = "up", share: int = 1, in_flight: int = 0, last_used: float = 0) -> Member:
    return Member(name, Occupancy(occupancy), share, in_flight, last_used)


# ---- the pure policy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "members", "budget", "expected"),
    [
        # exclusive group: the idle resident is freed
        ("b", [member("a"), member("b", "off")], 1, SwapPlan(victims=("a",))),
        # a busy resident is never freed: wait for it to drain
        ("b", [member("a", in_flight=1), member("b", "off")], 1, SwapPlan(wait=True)),
        # the target is already up: nothing to do
        ("a", [member("a"), member("b", "off")], 1, SwapPlan()),
        # a sleeping (off) member takes no room
        ("b", [member("a", "off"), member("b", "off")], 1, SwapPlan()),
        # a member on its way out still holds its room: wait
        ("b", [member("a", "leaving"), member("b", "off")], 1, SwapPlan(wait=True)),
        # the target itself is on its way out: wait, then start it again
        ("a", [member("a", "leaving")], 1, SwapPlan(wait=True)),
        # budget: both fit, nothing freed
        ("b", [member("a", share=40), member("b", "off", share=40)], 100, SwapPlan()),
        # budget: least recently used idle member goes first, and only as many as needed
        (
            "c",
            [member("a", share=40, last_used=2), member("b", share=40, last_used=1), member("c", "off", share=60)],
            100,
            SwapPlan(victims=("b",)),
        ),
        # budget: the busy one is skipped, the idle one is enough
        (
            "c",
            [
                member("a", share=40, last_used=1, in_flight=3),
                member("b", share=40, last_used=2),
                member("c", "off", share=60),
            ],
            100,
            SwapPlan(victims=("b",)),
        ),
        # budget: two victims needed
        (
            "c",
            [member("a", share=50, last_used=1), member("b", share=50, last_used=2), member("c", "off", share=100)],
            100,
            SwapPlan(victims=("a", "b")),
        ),
        # budget: not enough idle room yet → free nothing, wait
        (
            "c",
            [member("a", share=50, in_flight=1), member("b", share=50), member("c", "off", share=100)],
            100,
            SwapPlan(wait=True),
        ),
    ],
)
def test_plan_swap_frees_idle_members_least_recently_used_first(
    target: str, members: list[Member], budget: int, expected: SwapPlan
) -> None:
    assert plan_swap(target, members, budget) == expected


def test_sleep_needs_declared_memory_and_enough_host_ram(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20480000 kB\n")
    assert host_available_mib(meminfo) == 20000
    assert host_available_mib(tmp_path / "missing") is None
    assert sleep_refusal(8000, 20000, 2048) is None
    assert "host RAM is short" in (sleep_refusal(19000, 20000, 2048) or "")
    assert "memory_mib is not declared" in (sleep_refusal(None, 20000, 2048) or "")


# ---- the queue and the stop/start path, with stand-in processes ---------------------------------------------


def standin_models(*names: str, group: str = "gpu0", **extra: Any) -> dict[str, LlamaCppModel]:
    config = parse_config(
        {
            "models": {
                n: {
                    "engine": "llamacpp",
                    "source": "/nonexistent.gguf",
                    "swap_group": group,
                    "stop_grace_s": 2,
                    **extra.get(n, {}),
                }
                for n in names
            }
        }
    )
    return {n: m for n, m in config.models.items() if isinstance(m, LlamaCppModel)}


Make = Callable[..., Awaitable[Supervisor]]


@pytest.fixture
async def started() -> AsyncIterator[Make]:
    """`Supervisor(models, **kwargs)`, started; every one a test starts is closed when it ends."""
    made: list[Supervisor] = []

    async def start(models: dict[str, Any], **kwargs: Any) -> Supervisor:
        sup = Supervisor(models, **kwargs)
        await sup.start()
        made.append(sup)
        return sup

    yield start
    for sup in made:
        await sup.close()


@pytest.fixture
def supervised(started: Make) -> Make:
    """Supervisors whose llama.cpp models run as the inline stand-in process."""

    async def make(
        models: dict[str, Any], groups: dict[str, SwapGroupConfig] | None = None, **kwargs: Any
    ) -> Supervisor:
        return await started(
            models, health_interval_s=0.02, swap_groups=groups, engines={"llamacpp": StandInEngine()}, **kwargs
        )

    return make


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Poll until `predicate` holds (a safety net for a hang, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def group_cfg(**kw: Any) -> SwapGroupConfig:
    return SwapGroupConfig.model_validate(kw)


async def keep_busy(sup: Supervisor, name: str) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """Start a request that holds a lease on `name` until the returned event is set; returns once `name` is ready.

    Await the returned task after setting the event: it ends when the lease is given back.
    """
    release = asyncio.Event()

    async def hold() -> None:
        async with sup.lease(name):
            await release.wait()

    holder = asyncio.create_task(hold())
    await until(lambda: state(sup, name) == EngineState.READY, f"{name} ready")
    return release, holder


async def test_exclusive_group_stops_the_idle_member_before_starting_the_other(supervised: Make) -> None:
    sup = await supervised(standin_models("a", "b"))
    await sup.ensure_ready("a")
    pid_a = pid_of(sup, "a")
    assert pid_alive(pid_a)
    await sup.ensure_ready("b")
    assert state(sup, "a") == EngineState.STOPPED and not pid_alive(pid_a)
    assert state(sup, "b") == EngineState.READY
    status = {item["name"]: item for item in sup.status()}
    assert status["a"]["swap_group"] == "gpu0" and status["b"]["swap_ins"] == 1
    assert sup.swap_groups_status()["gpu0"]["swaps"] == 1
    assert sup.swap_groups_status()["gpu0"]["last_freed"] == [{"model": "a", "how": "stopped"}]


async def test_a_failed_member_in_its_retry_delay_does_not_evict_the_one_that_serves(supervised: Make) -> None:
    sup = await supervised(standin_models("a", "broken"))
    with pytest.raises(EngineError, match="stand-in failure"):
        await sup.ensure_ready("broken")
    assert state(sup, "broken") == EngineState.FAILED
    await sup.ensure_ready("a")
    pid_a = pid_of(sup, "a")
    with pytest.raises(EngineNotReady, match="failed to start") as caught:
        await sup.ensure_ready("broken")
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s >= 1
    # "a" was never freed for a model that could not have started anyway.
    assert state(sup, "a") == EngineState.READY and pid_of(sup, "a") == pid_a
    assert sup.swap_groups_status()["gpu0"]["swaps"] == 0 and not sup.groups["gpu0"].queue


async def test_a_busy_member_keeps_the_gpu_until_its_requests_finish(supervised: Make) -> None:
    sup = await supervised(standin_models("a", "b"))
    release_a, holder = await keep_busy(sup, "a")
    wanting_b = asyncio.create_task(sup.ensure_ready("b"))
    await until(lambda: sup.groups["gpu0"].queued_for("b") == 1, "b queued")
    assert state(sup, "a") == EngineState.READY and state(sup, "b") == EngineState.STOPPED
    release_a.set()
    await holder
    await wanting_b
    assert state(sup, "b") == EngineState.READY and state(sup, "a") == EngineState.STOPPED


async def test_queued_requests_are_served_in_batches_without_thrashing(supervised: Make) -> None:
    sup = await supervised(standin_models("a", "b"), {"gpu0": group_cfg(max_queue=16)})
    served: list[str] = []

    async def request(name: str, tag: str) -> None:
        async with sup.lease(name):
            served.append(tag)
            await asyncio.sleep(0)

    release_a, holder = await keep_busy(sup, "a")
    arrivals = ["b1", "a2", "b3", "a4", "b5", "a6"]
    tasks = []
    queue = sup.groups["gpu0"].queue
    for tag in arrivals:
        tasks.append(asyncio.create_task(request(tag[0], tag)))
        await until(lambda: len(queue) == len(tasks), f"{tag} queued")
    # a2 queues behind b1 although a is up: a waiting model is not starved by a busy resident.
    assert sup.slots["a"].in_flight == 1
    swaps_before = sup.groups["gpu0"].swaps
    release_a.set()
    await asyncio.gather(holder, *tasks)
    # Six alternating arrivals, two batches: every queued b, then every queued a. Two swaps, not six.
    assert sup.groups["gpu0"].swaps - swaps_before == 2
    assert served == ["b1", "b3", "b5", "a2", "a4", "a6"]


async def test_a_full_queue_answers_503_with_retry_after(supervised: Make) -> None:
    sup = await supervised(standin_models("a", "b"), {"gpu0": group_cfg(max_queue=2)})
    release_a, holder = await keep_busy(sup, "a")
    waiting = [asyncio.create_task(sup.ensure_ready("b")) for _ in range(2)]
    await until(lambda: len(sup.groups["gpu0"].queue) == 2, "two queued")
    with pytest.raises(EngineNotReady, match="max_queue 2") as caught:
        await sup.ensure_ready("b")
    assert caught.value.retry_after_s and caught.value.status_code == 503
    release_a.set()
    await asyncio.gather(holder, *waiting)


async def test_a_request_that_waits_too_long_leaves_the_queue(supervised: Make) -> None:
    sup = await supervised(standin_models("a", "b"))
    release_a, holder = await keep_busy(sup, "a")
    with pytest.raises(EngineNotReady, match="busy: a"):
        await sup.ensure_ready("b", wait_s=0.2)
    assert not sup.groups["gpu0"].queue and state(sup, "b") == EngineState.STOPPED
    release_a.set()
    await holder


async def test_a_budget_lets_members_share_and_frees_the_least_recently_used(supervised: Make) -> None:
    models = standin_models("a", "b", "c", a={"memory_mib": 40}, b={"memory_mib": 40}, c={"memory_mib": 60})
    sup = await supervised(models, {"gpu0": group_cfg(memory_mib=100)})
    await sup.ensure_ready("b")
    await sup.ensure_ready("a")  # a is used after b: b is the least recently used
    assert {s.name for s in sup.slots.values() if s.state == EngineState.READY} == {"a", "b"}
    assert sup.swap_groups_status()["gpu0"]["used_mib"] == 80
    await sup.ensure_ready("c")
    assert state(sup, "b") == EngineState.STOPPED
    assert {s.name for s in sup.slots.values() if s.state == EngineState.READY} == {"a", "c"}


async def test_preload_fills_the_group_and_skips_what_does_not_fit(supervised: Make) -> None:
    events: list[str] = []
    models = standin_models("a", "b", a={"preload": True}, b={"preload": True})
    sup = await supervised(models, on_event=lambda name, msg: events.append(f"{name}: {msg}"))
    await until(lambda: state(sup, "a") == EngineState.READY, "a ready")
    assert state(sup, "b") == EngineState.STOPPED
    assert any("b: not preloaded" in e for e in events)


async def test_swap_to_names_what_it_freed_and_refuses_a_model_in_no_group(supervised: Make) -> None:
    models = {**standin_models("a", "b"), **standin_models("solo", group="x")}
    solo = models["solo"].model_copy(update={"swap_group": None})
    sup = await supervised({**models, "solo": solo})
    await sup.ensure_ready("a")
    result = await sup.swap_to("b")
    assert result.group == "gpu0" and [(f.model, f.how) for f in result.freed] == [("a", "stopped")]
    again = await sup.swap_to("b")
    assert again.freed == []
    with pytest.raises(RequestError, match="in no swap group"):
        await sup.swap_to("solo")


# ---- sleep / wake against the stand-in vLLM ----------------------------------------------------------------


def standin_vllm_models(meminfo_mib: dict[str, int | None] | None = None, **extra: Any) -> dict[str, VllmModel]:
    """Two `vllm` models launched as the STAND-IN vLLM (real argv, PYTHONPATH → tests/standin_vllm)."""

    def one(name: str) -> dict[str, Any]:
        model: dict[str, Any] = {
            "engine": "vllm",
            "model": f"/models/{name}",
            "python": sys.executable,
            "device": "cuda",
            "max_model_len": 2048,
            "ready_timeout_s": 60,
            "stop_grace_s": 5,
            "swap_group": "gpu0",
            "enable_sleep_mode": True,
            "memory_mib": 4000,
            "env": {"PYTHONPATH": str(STANDIN_VLLM), "STANDIN_VLLM_PHASE_DELAY_S": "0.01"},
        }
        model.update(extra.get(name, {}))
        return model

    config = parse_config({"models": {"ml": one("ml"), "r1": one("r1")}})
    return {n: m for n, m in config.models.items() if isinstance(m, VllmModel)}


def meminfo_file(tmp_path: Path, available_mib: int) -> Path:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal: 64000000 kB\nMemAvailable: {available_mib * 1024} kB\n")
    return path


@pytest.fixture
def sleepy(started: Make) -> Make:
    """Supervisors of stand-in vLLM models that read host RAM from the given meminfo file."""

    async def make(models: dict[str, Any], meminfo: Path, **kwargs: Any) -> Supervisor:
        return await started(models, health_interval_s=0.05, meminfo_path=meminfo, **kwargs)

    return make


async def is_sleeping(sup: Supervisor, name: str) -> bool:
    spec = sup.slots[name].spec
    assert spec is not None
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{spec.port}/is_sleeping")
    return bool(reply.json()["is_sleeping"])


@pytest.mark.processes
async def test_a_sleep_mode_member_sleeps_and_wakes_instead_of_restarting(sleepy: Make, tmp_path: Path) -> None:
    sup = await sleepy(standin_vllm_models(), meminfo_file(tmp_path, 64000))
    await sup.ensure_ready("ml")
    ml_pid = pid_of(sup, "ml")
    result = await sup.swap_to("r1")
    assert [(f.model, f.how) for f in result.freed] == [("ml", "slept")]
    assert state(sup, "ml") == EngineState.SLEEPING and pid_alive(ml_pid)
    assert await is_sleeping(sup, "ml")
    r1_pid = pid_of(sup, "r1")
    back = await sup.swap_to("ml")
    assert [(f.model, f.how) for f in back.freed] == [("r1", "slept")]
    ml = sup.slots["ml"]
    assert ml.state == EngineState.READY and ml.process is not None and ml.process.pid == ml_pid
    assert ml.wakes == 1 and not await is_sleeping(sup, "ml")
    assert state(sup, "r1") == EngineState.SLEEPING and pid_alive(r1_pid)
    status = {item["name"]: item for item in sup.status()}
    assert status["r1"]["state"] == "sleeping" and status["r1"]["swap_group"] == "gpu0"


@pytest.mark.processes
async def test_short_host_ram_stops_instead_of_sleeping(sleepy: Make, tmp_path: Path) -> None:
    events: list[str] = []
    sup = await sleepy(
        standin_vllm_models(), meminfo_file(tmp_path, 5000), on_event=lambda name, msg: events.append(f"{name}: {msg}")
    )
    await sup.ensure_ready("ml")
    ml_pid = pid_of(sup, "ml")
    result = await sup.swap_to("r1")
    assert [(f.model, f.how) for f in result.freed] == [("ml", "stopped")]
    assert state(sup, "ml") == EngineState.STOPPED and not pid_alive(ml_pid)
    assert any("host RAM is short" in e for e in events)


@pytest.mark.processes
async def test_a_member_without_sleep_mode_is_stopped(sleepy: Make, tmp_path: Path) -> None:
    models = standin_vllm_models(ml={"enable_sleep_mode": False})
    sup = await sleepy(models, meminfo_file(tmp_path, 64000))
    await sup.ensure_ready("ml")
    result = await sup.swap_to("r1")
    assert [(f.model, f.how) for f in result.freed] == [("ml", "stopped")]


@pytest.mark.processes
async def test_a_sleeper_that_dies_is_cold_started_next_time(sleepy: Make, tmp_path: Path) -> None:
    sup = await sleepy(standin_vllm_models(), meminfo_file(tmp_path, 64000))
    await sup.ensure_ready("ml")
    await sup.swap_to("r1")
    process = sup.slots["ml"].process
    assert process is not None and state(sup, "ml") == EngineState.SLEEPING
    os.killpg(pid_of(sup, "ml"), signal.SIGKILL)
    await until(lambda: state(sup, "ml") == EngineState.STOPPED, "the dead sleeper marked stopped")
    assert "while asleep" in sup.slots["ml"].last_error
    await sup.swap_to("ml")
    assert state(sup, "ml") == EngineState.READY and sup.slots["ml"].wakes == 0


# ---- the HTTP admin endpoint and the CLI -------------------------------------------------------------------


def gateway_config() -> dict[str, Any]:
    models = {name: model.model_dump(exclude_unset=True) for name, model in standin_vllm_models().items()}
    for model in models.values():
        model["engine"] = "vllm"
    models["r1"]["aliases"] = ["deepseek-r1"]
    return {"models": models, "swap_groups": {"gpu0": {"max_queue": 8}}}


@pytest.mark.processes
async def test_admin_swap_endpoint_and_status_show_the_group() -> None:
    app = build_app(parse_config(gateway_config()))
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=60) as client:
            first = await client.post("/admin/models/ml/swap")
            assert first.status_code == 200 and first.json()["freed"] == []
            second = await client.post("/admin/models/deepseek-r1/swap")
            assert second.status_code == 200
            assert second.json()["model"] == "r1" and second.json()["swap_group"] == "gpu0"
            # Sleep or stop depends on the host RAM free at the moment of the swap, which another
            # process on the machine can change between the swap and this check: the answer and /status must agree.
            [freed] = second.json()["freed"]
            assert freed["model"] == "ml" and freed["how"] in {"stopped", "slept"}
            status = (await client.get("/status")).json()
            states = {m["name"]: (m["state"], m["swap_group"]) for m in status["models"]}
            assert states["r1"] == ("ready", "gpu0")
            assert states["ml"] == ({"stopped": "stopped", "slept": "sleeping"}[freed["how"]], "gpu0")
            assert status["swap_groups"]["gpu0"]["up"] == ["r1"]
            missing = await client.post("/admin/models/nope/swap")
            assert missing.status_code == 404


@pytest.mark.processes
def test_cli_swap_switches_models_like_the_seeds_gpu_mode() -> None:
    runner = CliRunner()
    # The gateway under uvicorn (the CLI talks HTTP).
    with served_app(build_app(parse_config(gateway_config())), lifespan="on") as url:
        first = runner.invoke(cli_app, ["swap", "ml", "--url", url])
        assert first.exit_code == 0, first.output
        assert "ml: ready at http://127.0.0.1:" in first.output and "freed: nothing" in first.output
        second = runner.invoke(cli_app, ["swap", "r1", "--url", url + "/v1"])
        assert second.exit_code == 0, second.output
        assert "r1: ready" in second.output and "freed: ml (" in second.output
        unknown = runner.invoke(cli_app, ["swap", "nope", "--url", url])
        assert unknown.exit_code == 1 and "HTTP 404" in unknown.output
    unreachable = runner.invoke(cli_app, ["swap", "ml", "--url", f"http://127.0.0.1:{free_port()}"])
    assert unreachable.exit_code == 1 and "cannot reach the gpufleet gateway" in unreachable.output


# ---- slow: two real embedded SmolLM2 engines sharing one budget ------------------------------------------------


@pytest.fixture(scope="module")
def smol_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    tmp = tmp_path_factory.mktemp("swap-pair")
    # 8192 tokens per sequence: room for one long generation that keeps a model busy while requests queue.
    pair = {"swap_group": "cpu0", "memory_mib": 600, "preload": False, "parallel": 2, "context": 16384}
    config = {
        "models": {"smol-a": smollm2_model(**pair), "smol-b": smollm2_model(**pair)},
        "swap_groups": {"cpu0": {"memory_mib": 1000, "max_queue": 8}},  # fits one of the two
        "server": {"queue_timeout_s": 120},
    }
    gateway = start_gateway(config, tmp)
    assert httpx.get(f"{gateway.url}/status", timeout=10).json()["swap_groups"]["cpu0"]["budget_mib"] == 1000
    yield gateway
    stop_gateway(gateway)


def ask(gw: ServedGateway, model: str) -> str:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=120)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
    return reply.model


def group_status(gw: ServedGateway) -> dict[str, Any]:
    return dict(httpx.get(f"{gw.url}/status", timeout=10).json()["swap_groups"]["cpu0"])


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_alternating_requests_run_one_engine_at_a_time(smol_pair: ServedGateway) -> None:
    seen_pids: dict[str, set[int]] = {"smol-a": set(), "smol-b": set()}
    for model in ["smol-a", "smol-b", "smol-a", "smol-b"]:
        assert ask(smol_pair, model) == model
        other = "smol-b" if model == "smol-a" else "smol-a"
        mine, theirs = smol_pair.status(model), smol_pair.status(other)
        assert mine["state"] == "ready" and theirs["state"] == "stopped"
        assert isinstance(mine["pid"], int) and pid_alive(mine["pid"])
        if isinstance(theirs["pid"], int):
            assert not pid_alive(theirs["pid"])
        seen_pids[model].add(mine["pid"])
    assert all(len(pids) == 2 for pids in seen_pids.values())  # stop + cold start each time (no sleep on llama.cpp)


@pytest.mark.slow
def test_concurrent_requests_for_both_models_are_batched_and_the_queue_is_bounded(smol_pair: ServedGateway) -> None:
    ask(smol_pair, "smol-a")  # a is resident
    long_story = {
        "model": "smol-a",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 8000,
        "ignore_eos": True,
        "stream": True,
    }
    arrivals = ["smol-b", "smol-a"] * 4  # eight alternating requests: exactly max_queue

    async def main() -> tuple[list[int], httpx.Response, int]:
        async with httpx.AsyncClient(base_url=smol_pair.url, timeout=180) as client:

            async def queued() -> int:
                return int((await client.get("/status")).json()["swap_groups"]["cpu0"]["queued"])

            async def one(model: str) -> int:
                reply = await client.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
                )
                return reply.status_code

            # A long stream keeps a busy, so every request below queues behind it, in arrival order.
            async with client.stream("POST", "/v1/chat/completions", json=long_story) as stream:
                lines = stream.aiter_lines()  # keep a reference: a collected iterator closes the stream
                first = await anext(lines)
                assert stream.status_code == 200 and first.startswith("data: {"), first
                swaps_before = int((await client.get("/status")).json()["swap_groups"]["cpu0"]["swaps"])
                tasks = []
                for i, model in enumerate(arrivals, start=1):  # one at a time: arrival order is the list's order
                    tasks.append(asyncio.create_task(one(model)))
                    deadline = time.monotonic() + 60
                    while await queued() < i:
                        assert not any(t.done() for t in tasks), "a request was served instead of queued"
                        assert time.monotonic() < deadline, "timed out waiting for the request to queue"
                        await asyncio.sleep(0.05)
                refused = await client.post(
                    "/v1/chat/completions",
                    json={"model": "smol-b", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
                )
            # The stream is closed: a drains, then b's batch runs, then a's batch.
            return list(await asyncio.gather(*tasks)), refused, swaps_before

    statuses, refused, swaps_before = asyncio.run(main())
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert "max_queue 8" in refused.json()["error"]["message"]
    assert statuses == [200] * 8
    # Eight alternating arrivals, two batches (every b, then every a): two swaps, not eight.
    assert group_status(smol_pair)["swaps"] - swaps_before == 2


def test_the_docs_config_example_is_valid() -> None:
    text = (REPO / "docs" / "swap-groups.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config(yaml.safe_load(block), file="docs/swap-groups.md")
    sup = Supervisor(
        {n: m for n, m in config.models.items() if isinstance(m, VllmModel)}, swap_groups=config.swap_groups
    )
    group = sup.groups["rtx3060"]
    assert group.member_names == ["ml", "r1"] and group.budget == 12288
