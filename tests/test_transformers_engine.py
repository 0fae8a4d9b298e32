"""The transformers engine (`transformers serve --continuous-batching`, a cold standby): its launch spec and
config, then the real engine from the env `gpufleet engines install transformers` makes, serving the SmolLM2
HF directory the vLLM tests convert, started on demand as the fallback of a model that is down."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpufleet.config import TransformersModel, parse_config
from gpufleet.engine_supervisor.ports import free_port
from gpufleet.engines import MANAGED_ENGINES
from gpufleet.engines.transformers_engine import CLI_MODULE, TransformersEngine, run_dir, serve_argv
from gpufleet.engines.vllm_install import is_installed, vllm_test_model_dir
from gpufleet.errors import ConfigError, EngineError
from tests.real_engines import require_vllm_cpu
from tests.served_gateway import ServedGateway, pid_alive, start_gateway, stop_gateway


def _model(path: Path | str, **overrides: object) -> TransformersModel:
    return TransformersModel.model_validate({"engine": "transformers", "model": str(path), **overrides})


def test_the_transformers_kind_is_a_managed_engine() -> None:
    assert isinstance(MANAGED_ENGINES["transformers"], TransformersEngine)


def test_serve_argv_pins_the_model_by_its_gpufleet_name_with_continuous_batching() -> None:
    argv = serve_argv(Path("/env/bin/python"), "tiny", _model("/m", extra_args=["--cb-block-size", "32"]), 9000)
    assert argv[:5] == ["/env/bin/python", "-m", CLI_MODULE, "serve", "tiny"]
    assert argv[argv.index("--port") + 1] == "9000" and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--device") + 1] == "cpu" and "--continuous-batching" in argv
    assert argv[-2:] == ["--cb-block-size", "32"]
    assert "--continuous-batching" not in serve_argv(Path("p"), "t", _model("/m", continuous_batching=False), 1)


def test_serve_argv_bounds_the_kv_cache_unless_told_not_to() -> None:
    # Left to itself transformers sizes the cache from free host RAM on the CPU (13.8 GB for SmolLM2-135M).
    argv = serve_argv(Path("p"), "t", _model("/m"), 1)
    assert argv[argv.index("--cb-num-blocks") + 1] == "256"
    assert argv[argv.index("--cb-max-batch-tokens") + 1] == "1024"
    unbounded = serve_argv(Path("p"), "t", _model("/m", cb_num_blocks=None, cb_max_batch_tokens=None), 1)
    assert "--cb-num-blocks" not in unbounded and "--cb-max-batch-tokens" not in unbounded


def test_launch_spec_links_the_name_to_the_model_dir_and_runs_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    python = tmp_path / "cache" / "engines" / "transformers-5.23.0" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    model_dir = tmp_path / "hf"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    engine = TransformersEngine()
    resolved = engine.resolve("tiny", _model(model_dir))  # once; a restart only builds the spec again
    spec = engine.launch_spec("tiny", _model(model_dir), resolved, 9100)
    assert spec.argv[0] == str(python) and spec.cwd == str(run_dir("tiny"))
    assert (run_dir("tiny") / "tiny").resolve() == model_dir.resolve()
    assert spec.health_url == "http://127.0.0.1:9100/health" and spec.base_url == "http://127.0.0.1:9100/v1"
    assert spec.env["HF_HUB_OFFLINE"] == "1"
    # A second launch (a restart) reuses the link.
    assert engine.launch_spec("tiny", _model(model_dir), resolved, 9101).cwd == spec.cwd


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no-dir", "is not a Hugging Face model directory"),
        ("no-engine", "run 'gpufleet engines install transformers'"),
    ],
)
def test_launch_spec_errors_name_the_fix(
    setup: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "hf"
    if setup != "no-dir":
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}")
    with pytest.raises(EngineError, match=message):
        TransformersEngine().resolve("tiny", _model(model_dir))


def test_config_accepts_the_transformers_engine_and_lists_it_for_unknown_engines() -> None:
    config = parse_config(
        {"models": {"standby": {"engine": "transformers", "model": "/m", "idle_ttl_s": 60}}}, file="t.yaml"
    )
    assert isinstance(config.models["standby"], TransformersModel)
    with pytest.raises(ConfigError, match="llamacpp, vllm, transformers, remote"):
        parse_config({"models": {"x": {"engine": "tgi"}}}, file="t.yaml")


@pytest.fixture(scope="module")
def standby_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    require_vllm_cpu()  # it converts the SmolLM2 HF directory this engine serves
    if not is_installed("transformers"):
        pytest.fail(
            "the transformers engine is not installed; run 'gpufleet engines install transformers' (make test does)"
        )
    config = {
        "models": {
            # Nothing listens on this port: the primary fails before the first byte and the standby takes over.
            "primary": {
                "engine": "remote",
                "url": f"http://127.0.0.1:{free_port()}/v1",
                "fallbacks": ["standby"],
                "timeout_s": 5,
            },
            "standby": {
                "engine": "transformers",
                "model": str(vllm_test_model_dir()),
                "idle_ttl_s": 3,
                "ready_timeout_s": 300,
            },
        },
        "server": {"queue_timeout_s": 300},
    }
    gateway = start_gateway(config, tmp_path_factory.mktemp("transformers-gw"))
    yield gateway
    stop_gateway(gateway)


def _chat(gateway: ServedGateway, model: str) -> dict[str, object]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "What is 2+2? Answer briefly."}],
        "max_tokens": 8,
        "temperature": 0,
        "seed": 7,
    }
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=400)
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


def _wait_state(gateway: ServedGateway, name: str, state: str, timeout_s: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = gateway.status(name)
        if status["state"] == state:
            return status
        time.sleep(0.5)
    raise AssertionError(f"{name} never reached {state}: {gateway.status(name)}")


@pytest.mark.slow
@pytest.mark.vllm
def test_real_transformers_serve_starts_on_demand_as_a_fallback_then_idles_out(standby_gateway: ServedGateway) -> None:
    assert standby_gateway.status("standby")["state"] == "stopped"  # cold standby: nothing loaded yet
    answer = _chat(standby_gateway, "primary")
    choice = answer["choices"][0]  # type: ignore[index]
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = answer["usage"]
    assert isinstance(usage, dict) and 0 < usage["completion_tokens"] <= 8
    ready = standby_gateway.status("standby")
    assert ready["state"] == "ready" and isinstance(ready["pid"], int)
    # Idle TTL: the standby unloads, its process ends, and the next request starts it again.
    pid = ready["pid"]
    _wait_state(standby_gateway, "standby", "stopped")
    assert not pid_alive(pid)
    again = _chat(standby_gateway, "standby")
    assert again["choices"][0]["message"]["content"]  # type: ignore[index]
    assert standby_gateway.status("standby")["pid"] != pid


@pytest.mark.slow
@pytest.mark.vllm
def test_real_transformers_engine_is_restarted_after_a_crash(standby_gateway: ServedGateway) -> None:
    import os
    import signal

    _chat(standby_gateway, "standby")
    pid = standby_gateway.status("standby")["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    # Until the supervisor has seen the exit, a request gets 503 + Retry-After (engine_not_ready), not a wait.
    while standby_gateway.status("standby")["pid"] == pid and time.monotonic() < deadline:
        time.sleep(0.2)
    answer = _chat(standby_gateway, "standby")  # the supervisor brings it back for this request
    assert answer["choices"][0]["message"]["content"]  # type: ignore[index]
    status = standby_gateway.status("standby")
    assert status["pid"] != pid and status["state"] == "ready"


def test_the_docs_standby_example_is_a_valid_config() -> None:
    import re

    import yaml

    text = (Path(__file__).resolve().parent.parent / "docs" / "bench.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        config = parse_config(yaml.safe_load(block), file="docs/bench.md")
        assert isinstance(config.models["qwen-standby"], TransformersModel)
        assert config.models["qwen"].fallbacks == ["qwen-standby"]


def test_the_engine_env_pins_every_package_and_torch_to_the_local_cpu_build() -> None:
    from gpufleet.engines.vllm_install import engine_spec

    spec = engine_spec("transformers")
    assert "torch==2.13.0+cpu" in spec.requirements  # never an unpinned torch: that is a CUDA download
    assert all("==" in requirement for requirement in (*spec.requirements, *spec.extras))
    assert "torchvision" in spec.remove
    assert spec.dirname == "transformers-5.23.0"


@pytest.mark.parametrize(("kind", "needs"), [("vLLM", "vLLM"), ("transformers", "transformers[serving]")])
def test_a_missing_engine_python_names_the_fix(
    kind: str, needs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpufleet.engines.base import engine_python
    from gpufleet.errors import EngineError

    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path))
    with pytest.raises(EngineError, match=r"'nope' is not installed; run 'gpufleet engines install nope'") as caught:
        engine_python("nope", kind=kind, needs=needs)
    assert f"an environment with {needs}" in str(caught.value)
    with pytest.raises(EngineError, match=rf"{re.escape(kind)} python {tmp_path}/none/bin/python does not exist"):
        engine_python(str(tmp_path / "none/bin/python"), kind=kind, needs=needs)
    (tmp_path / "engines" / "nope-1.0" / "bin").mkdir(parents=True)
    (tmp_path / "engines" / "nope-1.0" / "bin" / "python").touch()
    assert engine_python("nope", kind=kind, needs=needs) == tmp_path / "engines" / "nope-1.0" / "bin" / "python"


@pytest.fixture(scope="module")
def short_queue_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    """Issue 21: the documented `queue_timeout_s: 2` in front of a cold standby that takes longer to load."""
    require_vllm_cpu()
    if not is_installed("transformers"):
        pytest.fail("the transformers engine is not installed; run 'gpufleet engines install transformers'")
    config = {
        "models": {
            "primary": {"engine": "remote", "url": f"http://127.0.0.1:{free_port()}/v1", "timeout_s": 5},
            "standby": {"engine": "transformers", "model": str(vllm_test_model_dir()), "ready_timeout_s": 300},
        },
        "routes": {"r": {"targets": ["primary"], "fallbacks": ["standby"]}},
        "server": {"queue_timeout_s": 2},
    }
    gateway = start_gateway(config, tmp_path_factory.mktemp("transformers-short-queue"))
    yield gateway
    stop_gateway(gateway)


@pytest.mark.slow
@pytest.mark.vllm
def test_real_cold_standby_serves_a_dead_primary_route_despite_a_short_queue_timeout(
    short_queue_gateway: ServedGateway,
) -> None:
    gateway = short_queue_gateway
    assert gateway.status("standby")["state"] == "stopped"
    # The standby is the last target left: the request waits for its start (ready_timeout_s), not 2 s.
    first = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        timeout=400,
        json={
            "model": "r",
            "messages": [{"role": "user", "content": "What is 2+2?"}],
            "max_tokens": 8,
            "temperature": 0,
            "seed": 7,
        },
    )
    assert first.status_code == 200, first.text
    assert first.headers["x-gpufleet-model"] == "standby"
    targets = {t["model"]: t for t in httpx.get(f"{gateway.url}/status", timeout=10).json()["targets"]}
    assert targets["standby"]["healthy"] and targets["standby"]["failures"] == 0  # never cooled down
    for _ in range(3):  # and the next ones, with the standby up: no 503
        assert _chat(gateway, "r")["model"] == "standby"
