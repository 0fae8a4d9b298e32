"""The optional embedding-kNN `auto` classifier: its vote (table), and for real through the gateway's own
/v1/embeddings with the embedded SmolLM2 engine on the labelled set (slow: ~150 embeddings on 2 cores).
"""

from __future__ import annotations

import httpx
import pytest

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from gpufleet.router.classifier import Tier
from gpufleet.router.knn_classifier import KnnTierClassifier, request_text
from tests.test_classifier import load_labelled

R, M, C = Tier.ROUTINE, Tier.MODERATE, Tier.COMPLEX


@pytest.mark.parametrize("query, k, want", [
    ([1.0, 0.1, 0.0], 1, R),
    ([0.0, 0.2, 1.0], 1, C),
    ([0.5, 0.5, 0.0], 3, R),  # two routine neighbours outvote one moderate
    ([0.0, 1.0, 0.0], 2, M),
])
def test_knn_votes_by_cosine_similarity(query: list[float], k: int, want: Tier) -> None:
    examples = [([1.0, 0.0, 0.0], R), ([0.9, 0.3, 0.0], R), ([0.0, 1.0, 0.0], M), ([0.0, 0.0, 1.0], C)]
    assert KnnTierClassifier(examples, k=k).classify_vector(query) is want


def test_knn_tie_goes_to_the_higher_tier() -> None:
    assert KnnTierClassifier([([1.0, 0.0], R), ([0.0, 1.0], C)], k=2).classify_vector([1.0, 1.0]) is C


def test_request_text_is_the_last_user_turn_bounded() -> None:
    body = {"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "first"},
                         {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": [{"type": "text", "text": "x" * 5000}]}]}
    assert request_text(body) == "x" * 600
    assert request_text({"prompt": "complete me"}) == "complete me"
    assert request_text({"messages": []}) == "(empty)"


@pytest.mark.slow
async def test_knn_over_gateway_embeddings_beats_the_majority_class_on_unseen_prompts() -> None:
    """Real embeddings (SmolLM2-135M, mean pooling) from the gateway itself; no stub.

    Trained on the `tune` split, judged on the never-tuned `holdout3` split. The full evaluation (all splits,
    leave-one-out) is benchmarks/classifier_knn.py; here the figure only has to beat always answering the
    most common tier, which shows the embeddings carry the signal the vote relies on.
    """
    items = load_labelled()
    train = [i for i in items if i["split"] == "tune"]
    test = [i for i in items if i["split"] == "holdout3"]
    embedder = {"engine": "llamacpp", "source": "package:smollm2-135m-instruct", "context": 2048, "parallel": 1,
                "threads": 2, "preload": True, "extra_args": {"embedding": True, "pooling_type": 1}}
    app = build_app(parse_config({"models": {"embedder": embedder}}))
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                               timeout=300) as http:
        vectors = []
        for start in range(0, len(train) + len(test), 8):
            batch = [request_text(i["request"]) for i in (train + test)[start:start + 8]]
            response = await http.post("/v1/embeddings", json={"model": "embedder", "input": batch})
            assert response.status_code == 200, response.text
            vectors += [d["embedding"] for d in sorted(response.json()["data"], key=lambda d: d["index"])]
    knn = KnnTierClassifier([(v, Tier(i["tier"])) for v, i in zip(vectors[:len(train)], train, strict=True)], k=5)
    got = [knn.classify_vector(v) for v in vectors[len(train):]]
    right = sum(g.value == i["tier"] for g, i in zip(got, test, strict=True))
    majority = max(sum(i["tier"] == t.value for i in test) for t in Tier)
    assert right > majority, f"kNN {right}/{len(test)}, majority class {majority}/{len(test)}"
