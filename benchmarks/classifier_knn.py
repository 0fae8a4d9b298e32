"""Accuracy and cost of the optional embedding-kNN `auto` classifier, next to the rules, on the labelled set.

Starts an in-process gateway with an embedded model serving embeddings (default: SmolLM2-135M, mean pooling),
embeds every prompt of the labelled set (src/gpufleet/router/data/) through the gateway's own `/v1/embeddings`,
then reports:
- holdout3 (never tuned on): kNN trained on every other split, and the rules;
- leave-one-out over the whole set for kNN, and the rules on the whole set;
- confusion matrices, and latency per prompt (one `/v1/embeddings` call for one prompt + the vote).

Usage::

    .venv/bin/python benchmarks/classifier_knn.py          # ~1 min on 2 cores (engine start + 174 embeddings)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for the labelled set's loader in tests/

from gpufleet.config import parse_config  # noqa: E402
from gpufleet.gateway import build_app, running  # noqa: E402
from gpufleet.router.classifier import Tier  # noqa: E402
from gpufleet.router.knn_classifier import KnnTierClassifier, request_text  # noqa: E402
from gpufleet.tiers.labelled_set import load_labelled  # noqa: E402
from tests.conftest import smollm2_model  # noqa: E402
from tests.test_classifier import CLF, format_confusion  # noqa: E402

POOLING = {"mean": 1, "cls": 2, "last": 3}  # llama.cpp's pooling_type values


def embedder(source: str, pooling: str) -> dict[str, Any]:
    """The embedding model: one ubatch (512 tokens) must hold a whole input (EMBED_CHARS is at most ~310
    tokens). One slot: on 2 shared cores more slots only made each call slower."""
    return smollm2_model(
        source=f"package:{source}",
        extra_args={"embedding": True, "pooling_type": POOLING[pooling]},
        parallel=1,
        context=2048,
    )


async def embed_all(http: httpx.AsyncClient, texts: list[str], batch: int = 8) -> list[list[float]]:
    """Embeddings of `texts` through the gateway's /v1/embeddings, in batches."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch):
        response = await http.post("/v1/embeddings", json={"model": "embedder", "input": texts[start : start + batch]})
        response.raise_for_status()
        vectors += [item["embedding"] for item in sorted(response.json()["data"], key=lambda d: d["index"])]
    return vectors


def knn_results(items: list[dict[str, Any]], vectors: list[list[float]], k: int) -> dict[str, list[tuple[str, str]]]:
    """(want, got) pairs: holdout3 with kNN trained on the other splits, and leave-one-out over everything."""
    tiers = [Tier(item["tier"]) for item in items]
    train = [(v, t) for v, t, item in zip(vectors, tiers, items, strict=True) if item["split"] != "holdout3"]
    knn = KnnTierClassifier(train, k=k)
    holdout = [
        (item["tier"], knn.classify_vector(v).value)
        for v, item in zip(vectors, items, strict=True)
        if item["split"] == "holdout3"
    ]
    loo = []
    for i, item in enumerate(items):
        rest = [(v, t) for j, (v, t) in enumerate(zip(vectors, tiers, strict=True)) if j != i]
        loo.append((item["tier"], KnnTierClassifier(rest, k=k).classify_vector(vectors[i]).value))
    return {"holdout3": holdout, "all (leave-one-out)": loo}


def rules_results(items: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    pairs = [(item["tier"], CLF.classify(item["request"]).tier.value) for item in items]
    return {"holdout3": [p for p, item in zip(pairs, items, strict=True) if item["split"] == "holdout3"], "all": pairs}


def report(name: str, pairs: list[tuple[str, str]]) -> float:
    right = sum(want == got for want, got in pairs)
    print(f"{name}: {right}/{len(pairs)} = {right / len(pairs):.1%}")
    print(format_confusion(Counter(pairs)))
    return right / len(pairs)


def hybrid_results(
    items: list[dict[str, Any]], vectors: list[list[float]], k: int, margin: float
) -> dict[str, list[tuple[str, str]]]:
    """The rules decide, except when their score is within `margin` of a threshold: then kNN does."""
    knn_pairs = knn_results(items, vectors, k)
    knn_holdout = iter(knn_pairs["holdout3"])
    holdout, everything = [], []
    for item, (_, knn_all) in zip(items, knn_pairs["all (leave-one-out)"], strict=True):
        decision = CLF.classify(item["request"])
        near = min(abs(decision.score - CLF.moderate_at), abs(decision.score - CLF.complex_at)) < margin
        everything.append((item["tier"], knn_all if near else decision.tier.value))
        if item["split"] == "holdout3":
            holdout.append((item["tier"], next(knn_holdout)[1] if near else decision.tier.value))
    return {"holdout3": holdout, "all (leave-one-out)": everything}


async def main(k: int, source: str, pooling: str, margins: list[float]) -> None:
    items = load_labelled()
    texts = [request_text(item["request"]) for item in items]
    print(f"embedding model: {source}, {pooling} pooling; k={k}")
    app = build_app(parse_config({"models": {"embedder": embedder(source, pooling)}}))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=300) as http,
    ):
        print(f"embedding {len(texts)} prompts through the gateway", flush=True)
        vectors = await embed_all(http, texts)
        train = [(v, Tier(item["tier"])) for v, item in zip(vectors, items, strict=True)]
        knn = KnnTierClassifier(train, k=k)
        embed_ms, vote_ms = [], []
        for text in texts[:30]:  # one request at a time, as the router would classify it
            start = time.perf_counter()
            [vector] = await embed_all(http, [text])
            mid = time.perf_counter()
            knn.classify_vector(vector)
            embed_ms.append((mid - start) * 1000)
            vote_ms.append((time.perf_counter() - mid) * 1000)
    for split, pairs in knn_results(items, vectors, k).items():
        report(f"kNN k={k} {split}", pairs)
    for split, pairs in rules_results(items).items():
        report(f"rules {split}", pairs)
    for margin in margins:
        for split, pairs in hybrid_results(items, vectors, k, margin).items():
            report(f"hybrid (kNN within {margin:g} of a threshold) {split}", pairs)
    print(
        f"kNN cost per prompt: embedding via the gateway p50 {statistics.median(embed_ms):.1f} ms"
        f" (max {max(embed_ms):.1f}), vote over {len(train)} examples p50 {statistics.median(vote_ms):.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument(
        "--source", default="smollm2-135m-instruct", help="packaged model id (see 'gpufleet models packaged')"
    )
    parser.add_argument("--pooling", choices=list(POOLING), default="mean")
    parser.add_argument(
        "--margin",
        type=float,
        action="append",
        default=[],
        help="also report the hybrid: kNN only when the rules' score is this close to a threshold",
    )
    args = parser.parse_args()
    asyncio.run(main(args.k, args.source, args.pooling, args.margin))
