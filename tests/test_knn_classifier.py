"""The optional embedding-kNN `auto` classifier: its vote (table), and for real as `router.auto.classifier`
with the embedded SmolLM2 engine embedding the labelled set (slow: ~90 embeddings on 2 cores).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import yaml

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from gpufleet.router.classifier import Tier
from gpufleet.router.knn_classifier import KnnTierClassifier, request_text
from gpufleet.tiers.labelled_set import SHIPPED, load_labelled
from tests.standin_upstream import StandInUpstream

R, M, C = Tier.ROUTINE, Tier.MODERATE, Tier.COMPLEX


@pytest.mark.parametrize(
    "query, k, want",
    [
        ([1.0, 0.1, 0.0], 1, R),
        ([0.0, 0.2, 1.0], 1, C),
        ([0.5, 0.5, 0.0], 3, R),  # two routine neighbours outvote one moderate
        ([0.0, 1.0, 0.0], 2, M),
    ],
)
def test_knn_votes_by_cosine_similarity(query: list[float], k: int, want: Tier) -> None:
    examples = [([1.0, 0.0, 0.0], R), ([0.9, 0.3, 0.0], R), ([0.0, 1.0, 0.0], M), ([0.0, 0.0, 1.0], C)]
    assert KnnTierClassifier(examples, k=k).classify_vector(query) is want


def test_knn_tie_goes_to_the_higher_tier() -> None:
    assert KnnTierClassifier([([1.0, 0.0], R), ([0.0, 1.0], C)], k=2).classify_vector([1.0, 1.0]) is C


def test_request_text_is_the_last_user_turn_bounded() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "x" * 5000}]},
        ]
    }
    assert request_text(body) == "x" * 600
    assert request_text({"prompt": "complete me"}) == "complete me"
    assert request_text({"messages": []}) == "(empty)"


@pytest.mark.slow
async def test_knn_auto_with_real_embeddings_beats_the_majority_class_on_unseen_prompts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`router.auto.classifier: {kind: knn}` end to end: real embeddings (SmolLM2-135M, mean pooling, the
    embedded engine), the gateway embedding its examples at startup and each `auto` request; no stub.

    Examples: the `tune` split; judged on the never-tuned `holdout3` split. The tier models are a stand-in (only
    the tier header is read). The full evaluation (all splits, leave-one-out) is benchmarks/classifier_knn.py;
    here the figure only has to beat always answering the most common tier, which shows the embeddings carry
    the signal the vote relies on.
    """
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))  # embed the examples for real, not from a cache
    data = yaml.safe_load(SHIPPED.read_text())
    examples = tmp_path / "tune.yaml"
    examples.write_text(
        yaml.safe_dump(
            {"documents": data["documents"], "prompts": [p for p in data["prompts"] if p["split"] == "tune"]}
        )
    )
    test = [i for i in load_labelled() if i["split"] == "holdout3"]
    embedder = {
        "engine": "llamacpp",
        "source": "package:smollm2-135m-instruct",
        "context": 2048,
        "parallel": 1,
        "threads": 2,
        "preload": True,
        "extra_args": {"embedding": True, "pooling_type": 1},
    }
    tiers = StandInUpstream().start()
    remote = {"engine": "remote", "url": tiers.url}
    config = {
        "models": {"embedder": embedder, "small": remote, "mid": remote, "big": remote},
        "router": {
            "auto": {
                "routine": "small",
                "moderate": "mid",
                "complex": "big",
                "classifier": {"kind": "knn", "model": "embedder", "examples": str(examples), "timeout_s": 120},
            }
        },
    }
    app = build_app(parse_config(config))
    try:
        async with (
            running(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=300) as http,
        ):
            for _ in range(3000):  # the engine starts, then 63 examples are embedded: ~1 min on 2 cores
                if (await http.get("/status")).json()["auto"]["state"] == "ready":
                    break
                await asyncio.sleep(0.1)
            got = []
            for item in test:
                response = await http.post("/v1/chat/completions", json={**item["request"], "model": "auto"})
                assert response.status_code == 200, response.text
                assert response.headers["x-gpufleet-tier-by"] == "knn", response.headers
                got.append(response.headers["x-gpufleet-tier"])
    finally:
        tiers.stop()
    right = sum(g == i["tier"] for g, i in zip(got, test, strict=True))
    majority = max(sum(i["tier"] == t.value for i in test) for t in Tier)
    assert right > majority, f"kNN {right}/{len(test)}, majority class {majority}/{len(test)}"
