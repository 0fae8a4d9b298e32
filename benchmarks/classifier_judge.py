"""Accuracy and cost of the optional LLM-judge `auto` classifier, next to the rules, on the labelled set.

Starts an in-process gateway with the embedded judge models (Qwen2.5-Coder-1.5B-Instruct and SmolLM2-135M, both
Q4 GGUF on llama.cpp), sends every prompt of tests/data/tier_prompts.yaml through the gateway's own
`/v1/chat/completions` with `judge_body` (one request at a time, as the router would), then reports per judge:
- accuracy on holdout3 (never tuned on: the prompt was written against `tune`/`tune3` only) and on the whole set,
  counting an unreadable answer as a miss, and with the rules as the fallback for those (what a router would do);
- confusion matrices, the share of unreadable answers, and latency per request (p50 / p95 / max, with the
  prompt tokens the engine read).

Usage::

    .venv/bin/python benchmarks/classifier_judge.py                        # all 174 prompts, both judges:
    #   on 2 shared cores ~5 min for Qwen when quiet (~1.1 s a call), 12+ min under load; 1.5 min for SmolLM2
    .venv/bin/python benchmarks/classifier_judge.py --split tune3 --limit 10 --judge qwen --misses
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for the labelled set's loader in tests/

from gpufleet.config import parse_config  # noqa: E402
from gpufleet.gateway import build_app, running  # noqa: E402
from gpufleet.router.judge_classifier import judge_body, parse_judgement  # noqa: E402
from gpufleet.router.knn_classifier import request_text  # noqa: E402
from tests.conftest import smollm2_model  # noqa: E402
from tests.test_classifier import CLF, format_confusion, load_labelled  # noqa: E402

# One slot: requests go one at a time, and the slot keeps the judge prompt cached (llama.cpp reuses the common
# prefix), so each call reads only the request's own tokens.
JUDGES: dict[str, dict[str, object]] = {
    "qwen": smollm2_model(source="package:qwen2.5-coder-1.5b-instruct", parallel=1, context=4096),
    "smollm2": smollm2_model(parallel=1, context=4096),
}
HONEST = "holdout3"


@dataclass
class Judged:
    item: dict[str, Any]
    got: str | None  # the judge's tier; None when unreadable or the call failed
    ms: float
    prompt_tokens: int
    status: int


async def judge_one(http: httpx.AsyncClient, model: str, item: dict[str, Any]) -> Judged:
    start = time.perf_counter()
    response = await http.post("/v1/chat/completions", json=judge_body(item["request"], model))
    ms = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        return Judged(item, None, ms, 0, response.status_code)
    body = response.json()
    tier = parse_judgement(body["choices"][0]["message"].get("content") or "")
    return Judged(item, tier.value if tier else None, ms, body.get("usage", {}).get("prompt_tokens", 0), 200)


def report(name: str, pairs: list[tuple[str, str]]) -> None:
    right = sum(want == got for want, got in pairs)
    print(f"{name}: {right}/{len(pairs)} = {right / len(pairs):.1%}")
    print(format_confusion(Counter(pairs)))


def rules_tier(item: dict[str, Any]) -> str:
    return CLF.classify(item["request"]).tier.value


def report_judge(name: str, judged: list[Judged], show_misses: bool) -> None:
    honest = [j for j in judged if j.item["split"] == HONEST]
    for split, part in ((HONEST, honest), ("all", judged if len(judged) > len(honest) else [])):
        if not part:
            continue
        unreadable = sum(j.got is None for j in part)
        report(f"{name} {split} (unreadable = miss)", [(j.item["tier"], j.got or "unreadable") for j in part])
        print(f"unreadable or failed: {unreadable}/{len(part)}")
        if unreadable:
            report(
                f"{name} {split} (rules when unreadable)", [(j.item["tier"], j.got or rules_tier(j.item)) for j in part]
            )
    per_split = Counter(j.item["split"] for j in judged)
    right = Counter(j.item["split"] for j in judged if j.got == j.item["tier"])
    print("per split: " + ", ".join(f"{s} {right[s]}/{n}" for s, n in per_split.items()))
    ms = sorted(j.ms for j in judged)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    tokens = [j.prompt_tokens for j in judged if j.prompt_tokens]
    print(
        f"{name} cost per request: p50 {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms;"
        f" prompt tokens mean {statistics.mean(tokens) if tokens else 0:.0f}, max {max(tokens, default=0)};"
        f" HTTP errors {sum(j.status != 200 for j in judged)}"
    )
    if show_misses:  # never holdout3: the prompt is tuned on the other splits only
        for j in judged:
            if j.got != j.item["tier"] and j.item["split"] != HONEST:
                print(
                    f"  miss {j.item['split']}/{j.item['id']}: want {j.item['tier']}, got {j.got}:"
                    f" {request_text(j.item['request'], 90)!r}"
                )


async def run_judge(name: str, items: list[dict[str, Any]]) -> list[Judged]:
    app = build_app(parse_config({"models": {name: JUDGES[name]}, "server": {"queue_timeout_s": 600}}))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=600) as http,
    ):
        await judge_one(http, name, {"request": {"messages": [{"role": "user", "content": "hi"}]}})  # warm-up
        judged = []
        for n, item in enumerate(items, 1):
            judged.append(await judge_one(http, name, item))
            if n % 20 == 0:
                print(f"  {name}: {n}/{len(items)}", flush=True)
    return judged


async def main(judges: list[str], splits: list[str] | None, limit: int | None, show_misses: bool) -> None:
    items = [i for i in load_labelled() if splits is None or i["split"] in splits][:limit]
    print(f"{len(items)} prompts, splits {sorted({i['split'] for i in items})}", flush=True)
    for name in judges:
        started = time.perf_counter()
        judged = await run_judge(name, items)
        print(f"\n== judge {name} ({time.perf_counter() - started:.0f} s including the engine start)")
        report_judge(name, judged, show_misses)
    print("\n== rules")
    honest_items = [i for i in items if i["split"] == HONEST]
    for split, part in ((HONEST, honest_items), ("all", items if len(items) > len(honest_items) else [])):
        if part:
            report(f"rules {split}", [(i["tier"], rules_tier(i)) for i in part])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", action="append", choices=list(JUDGES), help="default: every judge")
    parser.add_argument("--split", action="append", help="only these splits of the labelled set (default: all)")
    parser.add_argument("--limit", type=int, help="only the first N prompts (after --split)")
    parser.add_argument("--misses", action="store_true", help="list the misses outside holdout3 (for tuning)")
    args = parser.parse_args()
    asyncio.run(main(args.judge or list(JUDGES), args.split, args.limit, args.misses))
