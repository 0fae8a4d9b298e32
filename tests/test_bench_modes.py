"""gpufleet bench's load shapes and report metadata, without real engines: the open loop (seeded Poisson
arrivals), fixed output lengths (and an engine that refuses them), an unknown name, host / engine / gpufleet
metadata, and the plot's paired colours and rows. The server here is a STAND-IN (`LengthStandIn`, below): it
streams `max_tokens` chunks when asked to ignore EOS, two otherwise, like an engine that stops early."""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from typer.testing import CliRunner

from gpufleet.bench.host import cpu_model, gpufleet_build, host_info
from gpufleet.bench.open_loop import arrival_times, run_rate
from gpufleet.bench.plot import PLOT_SIZE_PX, plot_report, plot_size_px, series_styles
from gpufleet.bench.targets import BenchTarget, parse_rates
from gpufleet.cli import app
from gpufleet.errors import ConfigError
from tests.gateway_harness import served_app
from tests.test_doctor import FakeNvml

NATURAL_LENGTH = 2  # chunks the stand-in streams when it may stop at its EOS


@dataclass
class LengthStandIn:
    """A STAND-IN OpenAI server (not an engine) whose answer length depends on `ignore_eos`."""

    refuse_fixed: bool = False  # answer 422 to ignore_eos/min_tokens, as a server that forbids unknown fields
    received: list[dict[str, Any]] = field(default_factory=list)

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(body)
        if body["model"] != "m":
            return JSONResponse(
                {
                    "error": {
                        "message": f"The model {body['model']!r} does not exist.",
                        "type": "NotFoundError",
                        "code": "model_not_found",
                    }
                },
                status_code=404,
            )
        if self.refuse_fixed and ({"ignore_eos", "min_tokens"} & set(body)):
            return JSONResponse(
                {"error": {"message": "extra fields not permitted: ignore_eos, min_tokens", "type": "BadRequestError"}},
                status_code=422,
            )
        count = body["max_tokens"] if body.get("ignore_eos") else min(NATURAL_LENGTH, body["max_tokens"])
        return StreamingResponse(self._stream(count), media_type="text/event-stream")

    async def _stream(self, count: int) -> Any:
        for index in range(count):
            chunk = {"choices": [{"index": 0, "delta": {"content": f"t{index} "}, "finish_reason": None}]}
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": count}}
        yield b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n"

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "vllm"}]})

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": "0.0.0-standin"})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models),
                Route("/version", self.version),
            ]
        )


@pytest.fixture
def standin() -> Iterator[tuple[LengthStandIn, str]]:
    server = LengthStandIn()
    with served_app(server.app()) as url:
        yield server, url


def _bench(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Any]]:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["bench", *args, "--json", str(out), "--no-latest"])
    return result, (json.loads(out.read_text()) if out.exists() else {})


def test_arrival_times_are_a_seeded_poisson_schedule() -> None:
    times = arrival_times(4.0, 2000, seed=7)
    assert times == arrival_times(4.0, 2000, seed=7) and times != arrival_times(4.0, 2000, seed=8)
    assert times[0] == 0.0 and times == sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Exponential gaps: mean 1/rate and a standard deviation equal to it (fixed seed, so no flake).
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.1)
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.15)
    with pytest.raises(ValueError, match="positive"):
        arrival_times(0, 3, seed=0)


@pytest.mark.parametrize(("text", "rates"), [("1,2,4", [1.0, 2.0, 4.0]), ("0.5, 2,0.5", [0.5, 2.0])])
def test_parse_rates(text: str, rates: list[float]) -> None:
    assert parse_rates(text) == rates


@pytest.mark.parametrize("text", ["0", "x", "-1", "", "inf", "nan"])
def test_parse_rates_rejects_what_is_not_a_positive_rate(text: str) -> None:
    with pytest.raises(ConfigError, match="--rate"):
        parse_rates(text)


async def test_run_rate_sends_every_request_and_reports_its_delivery(standin: tuple[LengthStandIn, str]) -> None:
    server, url = standin
    target = BenchTarget("s", f"{url}/v1", "m", via_gateway=False)
    level = await run_rate(target, ["a", "b"], rate=50.0, requests=6, max_tokens=3, seed=1, fixed_output=True)
    assert len(level.samples) == 6 and all(sample.ok for sample in level.samples)
    assert level.sent_per_s > 0 and level.max_in_flight >= 1 and level.wall_s > 0
    assert sorted(body["seed"] for body in server.received) == [1, 2, 3, 4, 5, 6]


def test_fixed_output_is_sent_recorded_and_both_sweeps_are_reported(
    standin: tuple[LengthStandIn, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = standin
    png = tmp_path / "bench.png"
    result, report = _bench(
        [
            f"s={url}/v1#m",
            "--concurrency",
            "1,2",
            "--rate",
            "20,40",
            "--requests",
            "3",
            "--max-tokens",
            "5",
            "--plot",
            str(png),
        ],
        tmp_path,
        monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert all(body["ignore_eos"] is True and body["min_tokens"] == body["max_tokens"] for body in server.received)
    settings = report["settings"]
    assert (settings["concurrency"], settings["rates"], settings["fixed_output"]) == ([1, 2], [20.0, 40.0], True)
    assert report["targets"][0]["output_length"] == {
        "fixed": True,
        "params": ["ignore_eos", "min_tokens"],
        "note": None,
    }
    assert [(run["mode"], run["concurrency"], run["rate"]) for run in report["runs"]] == [
        ("closed", 1, None),
        ("closed", 2, None),
        ("open", None, 20.0),
        ("open", None, 40.0),
    ]
    for run in report["runs"]:
        assert run["output_tokens_per_request"] == {"min": 5, "max": 5}  # every answer max_tokens long
    for run in report["runs"][2:]:
        assert run["succeeded"] == 3 and run["sent_per_s"] > 0 and run["max_in_flight"] >= 1
        assert run["ttft_s"]["p50"] <= run["ttft_s"]["p95"] <= run["ttft_s"]["p99"]
    assert "20/s" in result.stdout and "open loop" in result.stdout
    assert report["targets"][0]["engine"] == {
        "name": "vllm",
        "version": "0.0.0-standin",
        "source": "/v1/models owned_by, /version",
    }
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == plot_size_px(report) and image.size[1] > PLOT_SIZE_PX[1]  # two rows


def test_natural_output_sends_no_fixed_fields(
    standin: tuple[LengthStandIn, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = standin
    result, report = _bench(
        [f"{url}#m", "--concurrency", "1", "--requests", "2", "--max-tokens", "5", "--natural-output"],
        tmp_path,
        monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert not any("ignore_eos" in body or "min_tokens" in body for body in server.received)
    assert report["settings"]["fixed_output"] is False
    assert report["runs"][0]["output_tokens_per_request"] == {"min": NATURAL_LENGTH, "max": NATURAL_LENGTH}


def test_an_engine_that_refuses_the_fixed_fields_runs_without_them_and_says_so(
    standin: tuple[LengthStandIn, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = standin
    server.refuse_fixed = True
    result, report = _bench(
        [f"{url}#m", "--concurrency", "1", "--requests", "2", "--max-tokens", "5"], tmp_path, monkeypatch
    )
    assert result.exit_code == 0, result.output
    length = report["targets"][0]["output_length"]
    assert length["fixed"] is False and "refused ignore_eos/min_tokens" in length["note"]
    assert report["runs"][0]["succeeded"] == 2 and report["runs"][0]["errors"] == {}
    assert "refused ignore_eos" in result.output


def test_an_unknown_model_stops_the_bench_with_the_servers_message(
    standin: tuple[LengthStandIn, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _server, url = standin
    result, report = _bench([f"{url}#qwen"], tmp_path, monkeypatch)
    assert result.exit_code == 2 and report == {}
    assert "does not serve 'qwen'" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_report_records_host_and_gpufleet_build(
    standin: tuple[LengthStandIn, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _server, url = standin
    result, report = _bench([f"{url}#m", "--concurrency", "1", "--requests", "1"], tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    host = report["host"]
    assert isinstance(host["cpu_cores"], int) and host["cpu_cores"] >= 1
    assert host["ram_bytes"] > 0 and len(host["loadavg"]) == 3 and isinstance(host["gpus"], list)
    assert report["gpufleet"]["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", report["gpufleet"]["commit"])


def test_gpufleet_build_names_the_checkouts_commit() -> None:
    build = gpufleet_build(Path(__file__).parent)  # the tests run from a git checkout
    assert re.fullmatch(r"[0-9a-f]{40}", build["commit"] or "") and isinstance(build["dirty"], bool)


def test_host_gpus_come_from_nvml_and_a_host_without_it_has_none() -> None:
    fake = FakeNvml(
        {
            "driver_version": "570.86",
            "cuda_driver_version": 12080,
            "gpus": [
                {"name": "NVIDIA H100 80GB HBM3", "total": 80 << 30, "free": 79 << 30, "compute_capability": (9, 0)}
            ],
        }
    )
    host = host_info(nvml=fake)
    assert host["gpus"] == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 << 30, "compute_capability": "9.0"}
    ]
    assert host["nvidia_driver"] == "570.86" and fake.shut_down

    class NoLibrary:
        def nvmlInit(self) -> None:
            raise OSError("NVML Shared Library Not Found")

    assert host_info(nvml=NoLibrary())["gpus"] == []


@pytest.mark.parametrize(
    ("cpuinfo", "model"),
    [
        ("processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\n", "AMD EPYC 9654 96-Core Processor"),
        (
            "processor\t: 0\nBogoMIPS\t: 50.00\nModel\t: Raspberry Pi 5 Model B Rev 1.0\n",
            "Raspberry Pi 5 Model B Rev 1.0",
        ),
    ],
)
def test_cpu_model_from_proc_cpuinfo(cpuinfo: str, model: str) -> None:
    assert cpu_model(cpuinfo) == model


def test_gateway_and_direct_runs_of_one_model_share_a_hue_and_six_series_differ() -> None:
    targets = [{"label": name, "direct_of": None} for name in ("a", "b", "c")]
    targets += [{"label": f"{name} (direct)", "direct_of": name} for name in ("a", "b", "c")]
    styles = series_styles(targets)
    import matplotlib

    palette = matplotlib.colormaps["tab20"]
    for name in ("a", "b", "c"):
        dark, light = styles[name]["color"], styles[f"{name} (direct)"]["color"]
        index = [palette(i) for i in range(20)].index(dark)
        assert index % 2 == 0 and palette(index + 1) == light  # tab20: one hue, dark then light
        assert (styles[name]["linestyle"], styles[f"{name} (direct)"]["linestyle"]) == ("-", "--")
    assert len({style["color"] for style in styles.values()}) == 6


def _run(label: str, **level: Any) -> dict[str, Any]:
    dist = {"count": 2, "mean": 0.2, "p50": 0.2, "p95": 0.3, "p99": 0.3}
    return {
        "target": label,
        "mode": "open" if "rate" in level else "closed",
        "concurrency": level.get("concurrency"),
        "rate": level.get("rate"),
        "req_per_s": 1.0,
        "output_tok_per_s": 10.0,
        "ttft_s": dist,
        "itl_s": dist,
        "latency_s": dist,
        "samples": {"ttft_s": [0.1, 0.3], "itl_s": [0.01, 0.05], "latency_s": [0.5, 1.0]},
    }


@pytest.mark.parametrize(
    ("levels", "rows"),
    [
        ([{"concurrency": 1}, {"concurrency": 4}], 1),
        ([{"rate": 1.0}, {"rate": 2.0}], 1),
        ([{"concurrency": 1}, {"rate": 2.0}], 2),
    ],
)
def test_plot_has_a_row_per_kind_of_sweep_and_six_series_fit(
    tmp_path: Path, levels: list[dict[str, Any]], rows: int
) -> None:
    labels = ["llamacpp", "vllm", "transformers"]
    targets: list[dict[str, Any]] = [{"label": n, "direct_of": None} for n in labels] + [
        {"label": f"{n} (direct)", "direct_of": n} for n in labels
    ]
    report = {"targets": targets, "runs": [_run(t["label"], **level) for t in targets for level in levels]}
    path = plot_report(report, tmp_path / "p.png")
    from PIL import Image

    with Image.open(path) as image:
        assert image.size == plot_size_px(report)
    assert plot_size_px(report) == (PLOT_SIZE_PX if rows == 1 else (PLOT_SIZE_PX[0], plot_size_px(report)[1]))
    assert (plot_size_px(report)[1] > PLOT_SIZE_PX[1]) is (rows == 2)
