"""deploy/prometheus/gpufleet-alerts.yml: well-formed rules that only use metrics a real gateway exposes.

The metric names are checked against a real /metrics scrape of an in-process gateway that serves the STAND-IN vLLM
(tests/standin_vllm, not vLLM) and a dead remote, after a plain, a streamed and a failed request, so every family
the rules use has samples.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from gpufleet.metrics import ENGINE_STATES, _EngineCollector
from tests.standin_vllm import standin_model

RULES_PATH = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "gpufleet-alerts.yml"

_DURATION = re.compile(r"^\d+[smhd]$")
# Series Prometheus makes itself, not found in any scrape.
_SYNTHETIC = {"up", "scrape_duration_seconds"}
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def load_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES_PATH.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, ranges, grouping clauses and calls dropped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(word)
    return names


def test_metric_name_extraction_handles_grouping_and_functions() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (model, le) (rate(a_bucket{x="y"}[5m]))) > 5 '
        'and on (model) b > 0 or c_total{status=~"5.."} / ignoring(code) d'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c_total", "d"}


def test_rules_are_well_formed() -> None:
    data = yaml.safe_load(RULES_PATH.read_text())
    assert set(data) == {"groups"}
    seen: set[str] = set()
    for group in data["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
            name = rule["alert"]
            assert re.fullmatch(r"Gpufleet[A-Z][A-Za-z]+", name) and name not in seen
            seen.add(name)
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert rule["expr"].count("(") == rule["expr"].count(")"), name
            assert _DURATION.match(rule["for"]), name
            assert rule["labels"]["severity"] in {"warning", "critical"}, name
            assert set(rule["annotations"]) == {"summary", "description"}, name


def test_the_rules_cover_what_operators_asked_for() -> None:
    rules = {rule["alert"]: rule for rule in load_rules()}
    kv = rules["GpufleetKvCacheNearlyFull"]
    # Seed 003: KV cache usage above 85% (for 5 minutes).
    assert kv["expr"] == "gpufleet_engine_kv_cache_usage_ratio > 0.85" and kv["for"] == "5m"
    exprs = " ".join(rule["expr"] for rule in rules.values())
    for needle in (
        'gpufleet_engine_state{state="failed"}',
        "gpufleet_engine_restarts",
        "gpufleet_engine_up",
        "gpufleet_engine_requests_waiting",
        'gpufleet_requests_total{status=~"5.."}',
        "gpufleet_time_to_first_token_seconds_bucket",
    ):
        assert needle in exprs


@pytest.fixture(scope="module")
async def scrape(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GPUFLEET_CACHE", str(tmp_path_factory.mktemp("alert-rules-cache")))  # engine logs
        async for text in _scrape_gateway():
            yield text


async def _scrape_gateway() -> AsyncIterator[str]:
    config = parse_config(
        {
            "models": {
                "qwen3-8b": standin_model(env={"STANDIN_VLLM_KV_USAGE": "0.5"}),
                "offline": {"engine": "remote", "url": "http://127.0.0.1:9/v1"},
            }
        }
    )
    app = build_app(config)
    async with (
        running(app) as gateway,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        for model, stream in (("qwen3-8b", False), ("qwen3-8b", True), ("offline", False)):
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
            await http.post("/v1/chat/completions", json=body, timeout=60)
        await gateway.supervisor.scrape("qwen3-8b")
        yield (await http.get("/metrics")).text


def _scraped_names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_every_metric_in_the_rules_is_in_a_real_scrape(scrape: str) -> None:
    exposed = _scraped_names(scrape)
    for rule in load_rules():
        missing = metric_names(rule["expr"]) - exposed - _SYNTHETIC
        assert not missing, f"{rule['alert']} uses {sorted(missing)}, which /metrics does not expose"


async def test_engine_state_is_one_hot_per_model(scrape: str) -> None:
    states = {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "gpufleet_engine_state" and sample.labels["model"] == "qwen3-8b"
    }
    assert set(states) == set(ENGINE_STATES)
    assert states["ready"] == 1.0 and sum(states.values()) == 1.0


def test_expected_up_is_only_for_preloaded_models_that_nothing_takes_down_on_purpose() -> None:
    base = {"state": "stopped", "in_flight": 0, "restarts": 0, "idle_ttl_s": 0, "swap_group": None}
    items = [
        {**base, "name": "always", "preload": True},
        {**base, "name": "with-ttl", "preload": True, "idle_ttl_s": 600},  # the reaper unloads it when idle
        {**base, "name": "in-group", "preload": True, "swap_group": "gpu0"},  # swapped out by its group
        {**base, "name": "on-demand", "preload": False},
    ]
    expected = {
        sample.labels["model"]: sample.value
        for family in _EngineCollector(lambda: items).collect()
        for sample in family.samples
        if sample.name == "gpufleet_engine_expected_up"
    }
    assert expected == {"always": 1.0, "with-ttl": 0.0, "in-group": 0.0, "on-demand": 0.0}
