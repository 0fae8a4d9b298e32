"""Cost of the `auto` complexity classifier: µs per classify() call (target: well under 1 ms).

Times ComplexityClassifier.classify() over every labelled request (src/gpufleet/router/data/) and over synthetic
worst cases (100 KB prose, 100 KB code, 100 KB in list-of-parts content, a 200-message conversation), each call
timed on its own with time.perf_counter_ns, and prints p50 / p99 / max per case. Single-threaded, pure CPU.

With --compare FILE it also loads an older copy of src/gpufleet/router/classifier.py (saved with e.g.
`git show REV:src/gpufleet/router/classifier.py > /tmp/old_classifier.py`) and times both side by side: each
call of one is followed by the same call of the other (who goes first alternates every pass), so machine load
weighs on both columns alike. It first counts the requests on which the two decide differently.

Usage::

    .venv/bin/python benchmarks/classifier_cost.py              # ~10 s
    .venv/bin/python benchmarks/classifier_cost.py --repeat 50
    .venv/bin/python benchmarks/classifier_cost.py --compare /tmp/old_classifier.py
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.test_classifier's loader of the labelled set

from gpufleet.config import AutoTiers  # noqa: E402
from gpufleet.router.classifier import ComplexityClassifier  # noqa: E402
from gpufleet.tiers.labelled_set import load_labelled  # noqa: E402

PROSE = (
    "The council approved the increase after a long meeting; residents raised concerns about costs, and staff "
    "explained the schedule for replacing 4,000 lead service lines over six years. "
)
CODE = (
    "def handler(event, context):\n    total = sum(x['qty'] * x['price'] for x in event['items'])\n    return total\n"
)


def _sized(unit: str, size_bytes: int) -> str:
    return (unit * (size_bytes // len(unit) + 1))[:size_bytes]


def synthetic_cases() -> dict[str, list[dict[str, Any]]]:
    """Worst-case request bodies, 100 KB each."""
    kb100 = 100 * 1024
    conversation = [{"role": "user" if i % 2 == 0 else "assistant", "content": _sized(PROSE, 512)} for i in range(199)]
    return {
        "100 KB prose + ask": [
            {"messages": [{"role": "user", "content": "Summarize this report:\n\n" + _sized(PROSE, kb100)}]}
        ],
        "100 KB code + ask": [
            {"messages": [{"role": "user", "content": "Review this:\n```python\n" + _sized(CODE, kb100) + "```"}]}
        ],
        "100 KB list-of-parts": [
            {"messages": [{"role": "user", "content": [{"type": "text", "text": _sized(PROSE, 1024)}] * 100}]}
        ],
        "200 messages x 512 B": [{"messages": [*conversation, {"role": "user", "content": "And what next?"}]}],
        "100 KB one line, no spaces": [{"messages": [{"role": "user", "content": "x" * kb100}]}],
    }


def time_calls(clf: ComplexityClassifier, payloads: list[dict[str, Any]], repeat: int) -> list[float]:
    """Microseconds of each classify() call, every payload `repeat` times (after one warm-up pass)."""
    for payload in payloads:
        clf.classify(payload)
    samples: list[float] = []
    gc.disable()
    try:
        for _ in range(repeat):
            for payload in payloads:
                start = time.perf_counter_ns()
                clf.classify(payload)
                samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        gc.enable()
    return samples


def time_side_by_side(
    old: Any, new: ComplexityClassifier, payloads: list[dict[str, Any]], repeat: int
) -> tuple[list[float], list[float]]:
    """Microseconds of each call of `old` and of `new`, interleaved call by call (order alternating per pass)."""
    for payload in payloads:
        old.classify(payload)
        new.classify(payload)
    samples: dict[int, list[float]] = {id(old): [], id(new): []}
    gc.disable()
    try:
        for n in range(repeat):
            pair = (old, new) if n % 2 == 0 else (new, old)
            for payload in payloads:
                for clf in pair:
                    start = time.perf_counter_ns()
                    clf.classify(payload)
                    samples[id(clf)].append((time.perf_counter_ns() - start) / 1000)
    finally:
        gc.enable()
    return samples[id(old)], samples[id(new)]


def load_classifier_module(path: Path) -> Any:
    """An older classifier.py, imported from a file under its own module name."""
    spec = importlib.util.spec_from_file_location("old_classifier", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--compare: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200, help="passes over each case (default 200)")
    parser.add_argument("--compare", type=Path, metavar="FILE", help="an older classifier.py to time side by side")
    args = parser.parse_args()

    tiers = AutoTiers.model_validate({"routine": "r", "moderate": "m", "complex": "c"})
    clf = ComplexityClassifier(tiers.moderate_at, tiers.complex_at, tiers.weights)
    labelled = [item["request"] for item in load_labelled()]
    cases = {f"labelled set ({len(labelled)} requests)": labelled, **synthetic_cases()}

    print(f"python {platform.python_version()} on {platform.machine()}, {args.repeat} passes per case")
    if args.compare:
        compare(load_classifier_module(args.compare), clf, cases, args.repeat)
        return
    print(f"{'case':<34}{'calls':>8}{'p50 µs':>10}{'p99 µs':>10}{'max µs':>10}{'mean µs':>10}")
    for name, payloads in cases.items():
        samples = time_calls(clf, payloads, args.repeat)
        print(
            f"{name:<34}{len(samples):>8}{percentile(samples, 0.5):>10.1f}{percentile(samples, 0.99):>10.1f}"
            f"{max(samples):>10.1f}{statistics.fmean(samples):>10.1f}"
        )


def compare(module: Any, clf: ComplexityClassifier, cases: dict[str, list[dict[str, Any]]], repeat: int) -> None:
    """Print p50 / mean µs of the older module's classifier and of this one, timed side by side."""
    old = module.ComplexityClassifier(clf.moderate_at, clf.complex_at)  # its own default weights
    payloads = [payload for case in cases.values() for payload in case]
    differ = sum(
        (str(was.tier), was.score, was.signals) != (str(now.tier), now.score, now.signals)
        for was, now in ((old.classify(payload), clf.classify(payload)) for payload in payloads)
    )
    print(f"decisions: {len(payloads) - differ} of {len(payloads)} requests get the same tier, score and signals")
    print(f"{'case':<34}{'calls':>8}{'old p50':>10}{'new p50':>10}{'old mean':>10}{'new mean':>10}")
    for name, payloads in cases.items():
        before, after = time_side_by_side(old, clf, payloads, repeat)
        print(
            f"{name:<34}{len(after):>8}{percentile(before, 0.5):>10.1f}{percentile(after, 0.5):>10.1f}"
            f"{statistics.fmean(before):>10.1f}{statistics.fmean(after):>10.1f}"
        )


if __name__ == "__main__":
    main()
