"""`router.auto.classifier: {kind: knn}`: a model picks the `auto` tier through the gateway, the rules stand in.

The embedding model here is the STAND-IN upstream (tests/standin_upstream.py), whose vectors are a bag of three
words, so which example is nearest is known; the real embedding model (SmolLM2 through the embedded engine)
is exercised in tests/test_knn_classifier.py. The labelled examples below are chosen to DISAGREE with the
rules ("hello" is labelled complex), so a response shows who decided.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gpufleet.config import parse_config
from gpufleet.errors import ConfigError
from gpufleet.gateway import auto_classifier, build_app
from gpufleet.tiers.labelled_set import SHIPPED, load_labelled
from tests.gateway_harness import OpenGateway, served_app
from tests.standin_upstream import StandInUpstream

EXAMPLES = {
    "prompts": [
        {"tier": "complex", "request": {"messages": [{"role": "user", "content": "hello there"}]}},
        {"tier": "routine", "request": {"messages": [{"role": "user", "content": "write a function"}]}},
        {"tier": "moderate", "request": {"prompt": "prove it"}},
    ]
}


@pytest.fixture
def examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))  # the example vectors are cached here
    path = tmp_path / "examples.yaml"
    path.write_text(yaml.safe_dump(EXAMPLES))
    return path


@pytest.fixture
def upstreams() -> Iterator[tuple[StandInUpstream, StandInUpstream]]:
    """(embedder, tier models): separate, so a hanging embedder does not hang the answers."""
    embedder, tiers = StandInUpstream().start(), StandInUpstream().start()
    yield embedder, tiers
    embedder.stop()
    tiers.stop()


def auto_config(embedder: StandInUpstream, tiers: StandInUpstream, examples: Path, **classifier: Any) -> dict[str, Any]:
    remote = {"engine": "remote", "url": tiers.url}
    return {
        "models": {
            "small": remote,
            "mid": remote,
            "big": remote,
            "embedder": {"engine": "remote", "url": embedder.url},
        },
        "router": {
            "retry_backoff_s": 0,
            "auto": {
                "routine": "small",
                "moderate": "mid",
                "complex": "big",
                "classifier": {"kind": "knn", "model": "embedder", "examples": str(examples), "k": 1, **classifier},
            },
        },
    }


async def wait_ready(http: httpx.AsyncClient) -> dict[str, Any]:
    for _ in range(500):
        auto: dict[str, Any] = (await http.get("/status")).json()["auto"]
        if auto["state"] == "ready":
            return auto
        await asyncio.sleep(0.01)
    raise AssertionError(f"the kNN classifier never became ready: {auto}")


async def ask_auto(http: httpx.AsyncClient, text: str) -> tuple[str, str, str]:
    """(tier, who decided, model that answered) for an `auto` request."""
    response = await http.post(
        "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": text}]}
    )
    assert response.status_code == 200, response.text
    return (
        response.headers["x-gpufleet-tier"],
        response.headers["x-gpufleet-tier-by"],
        response.headers["x-gpufleet-model"],
    )


async def test_knn_decides_the_tier_from_the_nearest_labelled_example(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
    examples: Path,
) -> None:
    embedder, tiers = upstreams
    http = await gw(auto_config(embedder, tiers, examples))
    status = await wait_ready(http)
    assert status | {"last_error": None} == {
        "classifier": "knn",
        "model": "embedder",
        "state": "ready",
        "k": 1,
        "examples": str(examples),
        "timeout_s": 10,
        "last_error": None,
        "skipped_for_s": 0,
    }
    assert await ask_auto(http, "hello, how are you?") == ("complex", "knn", "big")  # the rules say routine
    assert await ask_auto(http, "Write a Python function that reverses a list") == ("routine", "knn", "small")
    assert await ask_auto(http, "Can you prove it?") == ("moderate", "knn", "mid")
    # The classifier's request went through the gateway: the upstream got the upstream name and the turn's text.
    assert embedder.received[-1] == {"model": "embedder", "input": ["Can you prove it?"]}
    listed = {m["id"]: m for m in (await http.get("/v1/models")).json()["data"]}
    assert listed["auto"]["classifier"] == "knn"
    metrics = (await http.get("/metrics")).text
    assert 'gpufleet_auto_classifier_total{classifier="knn",outcome="decided"} 3.0' in metrics
    assert 'gpufleet_auto_classifier_seconds_count{classifier="knn"} 3.0' in metrics


async def test_the_rules_decide_while_the_examples_are_being_embedded(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
    examples: Path,
) -> None:
    embedder, tiers = upstreams
    embedder.embed_gate = threading.Event()  # the warm-up's embeddings wait for it
    http = await gw(auto_config(embedder, tiers, examples))
    assert await ask_auto(http, "hello there") == ("routine", "rules (knn warming)", "small")
    assert (await http.get("/status")).json()["auto"]["state"] == "warming"
    embedder.embed_gate.set()
    await wait_ready(http)
    assert await ask_auto(http, "hello there") == ("complex", "knn", "big")


@pytest.mark.parametrize("fault, by", [("hang", "rules (knn timed out)"), ("500", "rules (knn error)")])
async def test_a_failing_classifier_model_leaves_the_decision_to_the_rules(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
    examples: Path,
    fault: str,
    by: str,
) -> None:
    embedder, tiers = upstreams
    config = auto_config(embedder, tiers, examples, timeout_s=0.3)
    config["router"]["cooldown_s"] = 0.5
    http = await gw(config)
    await wait_ready(http)
    embedder.behaviour = fault
    assert await ask_auto(http, "hello there") == ("routine", by, "small")  # answered, by the rules' tier
    status = (await http.get("/status")).json()["auto"]
    assert status["state"] == "ready" and status["last_error"] and status["skipped_for_s"] > 0
    outcome = "timeout" if fault == "hang" else "error"
    assert (
        f'gpufleet_auto_classifier_total{{classifier="knn",outcome="{outcome}"}} 1.0'
        in (await http.get("/metrics")).text
    )
    # Within the cooldown the model is not asked again: no request waits out another timeout.
    asked = len(embedder.received)
    assert await ask_auto(http, "hello there") == ("routine", "rules (knn cooling down)", "small")
    assert len(embedder.received) == asked
    embedder.behaviour = "ok"
    await asyncio.sleep(0.6)
    assert await ask_auto(http, "hello there") == ("complex", "knn", "big")


async def test_a_failed_warm_up_is_retried_and_the_rules_decide_meanwhile(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
    examples: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auto_classifier, "RETRY_WARMUP_S", 0.05)
    embedder, tiers = upstreams
    embedder.behaviour = "500"
    http = await gw(auto_config(embedder, tiers, examples))
    for _ in range(500):
        status = (await http.get("/status")).json()["auto"]
        if status["state"] == "retrying":
            break
        await asyncio.sleep(0.01)
    assert status["state"] == "retrying" and "embedding the examples" in status["last_error"]
    assert (await ask_auto(http, "hello there"))[1] == "rules (knn unavailable)"
    embedder.behaviour = "ok"
    await wait_ready(http)
    assert (await ask_auto(http, "hello there"))[1] == "knn"


async def test_example_vectors_are_cached_so_a_restart_embeds_only_requests(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
    examples: Path,
) -> None:
    embedder, tiers = upstreams
    await wait_ready(await gw(auto_config(embedder, tiers, examples)))
    assert [len(body["input"]) for body in embedder.received] == [3]  # the three examples, one batch
    http = await gw(auto_config(embedder, tiers, examples))  # a second gateway: same model, same examples
    await wait_ready(http)
    assert len(embedder.received) == 1
    examples.write_text(yaml.safe_dump({"prompts": EXAMPLES["prompts"][:2]}))  # edited examples: embedded again
    await wait_ready(await gw(auto_config(embedder, tiers, examples)))
    assert [len(body["input"]) for body in embedder.received] == [3, 2]


async def test_asking_for_thinking_never_lands_on_the_small_model(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
    examples: Path,
) -> None:
    embedder, tiers = upstreams
    http = await gw(auto_config(embedder, tiers, examples))
    await wait_ready(http)
    assert await ask_auto(http, "/think write a function") == ("moderate", "knn", "mid")  # kNN said routine


async def test_the_rules_mark_their_decisions_too(
    gw: OpenGateway, upstreams: tuple[StandInUpstream, StandInUpstream], examples: Path
) -> None:
    embedder, tiers = upstreams
    config = auto_config(embedder, tiers, examples)
    del config["router"]["auto"]["classifier"]
    http = await gw(config)
    assert await ask_auto(http, "hello there") == ("routine", "rules", "small")
    assert (await http.get("/status")).json()["auto"] == {"classifier": "rules", "state": "ready"}
    assert embedder.received == []


def judge_config(judge: StandInUpstream, tiers: StandInUpstream, **classifier: Any) -> dict[str, Any]:
    remote = {"engine": "remote", "url": tiers.url}
    return {
        "models": {"small": remote, "mid": remote, "big": remote, "judge": {"engine": "remote", "url": judge.url}},
        "router": {
            "auto": {
                "routine": "small",
                "moderate": "mid",
                "complex": "big",
                "classifier": {"kind": "judge", "model": "judge", **classifier},
            }
        },
    }


async def test_an_llm_judge_names_the_tier_through_the_gateway(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
) -> None:
    judge, tiers = upstreams
    judge.reply = '"complex"'  # what a constrained judge answers (response_format: a string enum)
    http = await gw(judge_config(judge, tiers))
    assert (await http.get("/status")).json()["auto"]["state"] == "ready"  # nothing to warm up
    assert await ask_auto(http, "hello there") == ("complex", "judge", "big")  # the rules say routine
    asked = judge.received[-1]
    assert asked["model"] == "judge" and asked["temperature"] == 0
    assert "hello there" in asked["messages"][-1]["content"]
    judge.reply = '"routine"'
    response = await http.post(
        "/v1/chat/completions",
        json={"model": "auto", "reasoning_effort": "high", "messages": [{"role": "user", "content": "hello there"}]},
    )
    assert response.headers["x-gpufleet-tier"] == "moderate"  # asked for thinking: never the small model


@pytest.mark.parametrize(
    "reply, by, why",
    [
        # Off the schema: the gateway's response_format check (an engine without a grammar) refuses it.
        ("I think this is a hard one", "rules (judge error)", "does not match response_format"),
        ('"huge"', "rules (judge error)", "does not match response_format"),
    ],
)
async def test_an_unreadable_verdict_leaves_the_decision_to_the_rules(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
    reply: str,
    by: str,
    why: str,
) -> None:
    judge, tiers = upstreams
    judge.reply = reply
    http = await gw(judge_config(judge, tiers))
    assert await ask_auto(http, "hello there") == ("routine", by, "small")
    assert why in (await http.get("/status")).json()["auto"]["last_error"]
    assert 'gpufleet_auto_classifier_total{classifier="judge",outcome="error"} 1.0' in (await http.get("/metrics")).text


@pytest.mark.parametrize(
    "classifier, key, reason",
    [
        ("knn", "router.auto.classifier", "'knn' needs a model: write {kind: knn, model: NAME}"),
        ("smart", "router.auto.classifier", "'smart' is not a classifier"),
        ({"kind": "knn"}, "router.auto.classifier.model", "Field required"),
        ({"kind": "knn", "model": "nope"}, "router.auto.classifier.model", "unknown model or route 'nope'"),
        ({"kind": "svm", "model": "embedder"}, "router.auto.classifier.kind", "Input should be 'knn' or 'judge'"),
        ({"kind": "judge", "model": "embedder", "k": 3}, "router.auto.classifier", "'k' is only used with kind: knn"),
        ("judge", "router.auto.classifier", "'judge' needs a model: write {kind: judge, model: NAME}"),
        ({"kind": "knn", "model": "embedder", "k": 0}, "router.auto.classifier.k", "greater than or equal to 1"),
        (
            {"kind": "knn", "model": "embedder", "examples": "/no/such.yaml"},
            "router.auto.classifier.examples",
            "/no/such.yaml: file not found",
        ),
        (
            {"kind": "knn", "model": "embedder", "examples": "{bad}"},
            "router.auto.classifier.examples",
            "prompts[1].tier: 'huge' is not one of routine, moderate, complex",
        ),
    ],
)
def test_classifier_config_errors_name_the_key(tmp_path: Path, classifier: Any, key: str, reason: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"prompts": [EXAMPLES["prompts"][0], {"tier": "huge", "request": {"prompt": "x"}}]}))
    if isinstance(classifier, dict) and classifier.get("examples") == "{bad}":
        classifier = {**classifier, "examples": str(bad)}
    config = {
        "models": {
            "small": {"engine": "remote", "url": "http://127.0.0.1:9/v1"},
            "embedder": {"engine": "remote", "url": "http://127.0.0.1:9/v1"},
        },
        "router": {"auto": {"routine": "small", "moderate": "small", "complex": "small", "classifier": classifier}},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(config, file="gpufleet.yaml")
    assert err.value.file == "gpufleet.yaml" and err.value.key_path == key
    assert reason in err.value.reason


def test_the_shipped_labelled_set_is_the_default_examples() -> None:
    config = parse_config(
        {
            "models": {"m": {"engine": "remote", "url": "http://127.0.0.1:9/v1"}},
            "router": {
                "auto": {"routine": "m", "moderate": "m", "complex": "m", "classifier": {"kind": "knn", "model": "m"}}
            },
        }
    )
    classifier = build_app(config).state.gateway.auto_model
    assert classifier.examples == SHIPPED and len(load_labelled(classifier.examples)) >= 150


@pytest.mark.parametrize(
    "vectors, problem",
    [
        ([[0.1, 1.0], [0.2, 0.0]], None),
        ([[0.1, 1.0]], "expected 2 vectors, got 1"),
        ({"data": []}, "expected 2 vectors, got dict"),
        ([[0.1, 1.0], []], "vector 1 is not a non-empty list of numbers"),
        ([[0.1, 1.0], [0.2, "x"]], "vector 1 is not a non-empty list of numbers"),
        ([[0.1, 1.0], [True, False]], "vector 1 is not a non-empty list of numbers"),
        ([[0.1, 1.0], [0.2, 0.0, 0.5]], "vectors of different lengths: [2, 3]"),
    ],
)
def test_example_vectors_are_checked_before_they_are_used_or_cached(vectors: Any, problem: str | None) -> None:
    assert auto_classifier.vectors_problem(vectors, 2) == problem


async def test_a_corrupt_vector_cache_is_embedded_again(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
    examples: Path,
) -> None:
    embedder, tiers = upstreams
    await wait_ready(await gw(auto_config(embedder, tiers, examples)))
    [cached] = (examples.parent / "cache" / "auto-knn").glob("*.json")
    cached.write_text('[[1.0], "half a file"]')
    http = await gw(auto_config(embedder, tiers, examples))
    await wait_ready(http)
    assert [len(body["input"]) for body in embedder.received] == [3, 3]  # embedded again, not voted on garbage
    assert await ask_auto(http, "hello there") == ("complex", "knn", "big")


# --- issue 21: the classifier is tied to its clients ----------------------------------------------------------


async def test_a_burst_asks_the_model_a_bounded_number_of_times_and_does_not_switch_it_off(
    gw: OpenGateway,
    upstreams: tuple[StandInUpstream, StandInUpstream],
    examples: Path,
) -> None:
    embedder, tiers = upstreams
    http = await gw(auto_config(embedder, tiers, examples, timeout_s=0.3))
    await wait_ready(http)
    embedder.behaviour = "hang"  # overloaded: no answer within timeout_s
    asked = len(embedder.received)
    burst = await asyncio.gather(*(ask_auto(http, "hello there") for _ in range(30)))
    # Every request was answered (by the rules' tier), and at most MAX_CONCURRENT_CALLS asked the model.
    assert {tier for tier, _, _ in burst} == {"routine"}
    assert {by for _, by, _ in burst} <= {"rules (knn timed out)", "rules (knn busy)"}
    assert len(embedder.received) - asked <= auto_classifier.MAX_CONCURRENT_CALLS
    assert 'gpufleet_auto_classifier_total{classifier="knn",outcome="busy"}' in (await http.get("/metrics")).text
    # The burst did not switch the model off for everyone: the next request asks it again.
    assert (await http.get("/status")).json()["auto"]["skipped_for_s"] == 0
    embedder.behaviour = "ok"
    assert await ask_auto(http, "hello there") == ("complex", "knn", "big")


def test_a_client_that_leaves_cancels_the_classifier_call(
    upstreams: tuple[StandInUpstream, StandInUpstream],
    examples: Path,
) -> None:
    embedder, tiers = upstreams
    app = build_app(parse_config(auto_config(embedder, tiers, examples, timeout_s=60)))
    with served_app(app) as url:
        for _ in range(500):
            if httpx.get(f"{url}/status").json()["auto"]["state"] == "ready":
                break
            time.sleep(0.01)
        embedder.behaviour = "hang"
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{url}/v1/chat/completions",
                timeout=0.5,
                json={"model": "auto", "messages": [{"role": "user", "content": "hello there"}]},
            )

        def embedder_in_flight() -> int:
            targets = httpx.get(f"{url}/status").json()["targets"]
            return int(next(t["in_flight"] for t in targets if t["model"] == "embedder"))

        deadline = time.monotonic() + 20  # a safety net, far below the classifier's timeout_s (60 s)
        while embedder_in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert embedder_in_flight() == 0, "the classifier's call outlived its client"
