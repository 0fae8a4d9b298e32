"""Replica ranking: load = gpufleet's in-flight count + the engine's own waiting queue (vLLM's scrape)."""

from __future__ import annotations

import pytest

from gpufleet.config import RouteDefaults, RouterConfig, parse_config
from gpufleet.dialects import DialectDefaults
from gpufleet.engine_supervisor import EngineState
from gpufleet.engines.vllm_metrics import VllmMetrics
from gpufleet.gateway.state import Gateway
from gpufleet.router.health import HealthBoard
from gpufleet.router.select import TargetSelector
from gpufleet.router.table import Candidate, Route, Target

NAMES = ("a", "b", "c")


def route() -> Route:
    group = tuple(Candidate(Target(n, n), RouteDefaults(), DialectDefaults(), False) for n in NAMES)
    return Route("r", (group,), affinity=False)


@pytest.mark.parametrize(
    "in_flight, waiting, first",
    [
        ({"a": 0, "b": 0, "c": 0}, {"a": 5, "b": 0, "c": 9}, "b"),  # idle in gpufleet, but a and c have queues
        ({"a": 0, "b": 3, "c": 0}, {"a": 4, "b": 0, "c": 1}, "c"),  # 0+4, 3+0, 0+1: the sum decides
        ({"a": 2, "b": 0, "c": 0}, {"a": 0, "b": 2, "c": 1}, "c"),
        ({"a": 1, "b": 0, "c": 0}, {}, "b"),  # nothing scraped: in-flight alone (remotes, llama.cpp)
    ],
)
def test_least_loaded_replica_counts_the_engines_waiting_queue(
    in_flight: dict[str, int], waiting: dict[str, int], first: str
) -> None:
    board = HealthBoard({n: Target(n, n) for n in NAMES}, RouterConfig())
    for name, count in in_flight.items():
        board[name].in_flight = count
    selector = TargetSelector(board, load_of=lambda target: float(waiting.get(target.model, 0)))
    order = [c.target.model for c in selector.order(route(), session=None, max_attempts=3)]
    assert order[0] == first


def scraped(waiting: int) -> VllmMetrics:
    return VllmMetrics(
        model_names=("m",),
        requests_running=1,
        requests_waiting=waiting,
        kv_cache_usage=0.5,
        prompt_tokens_total=0,
        generation_tokens_total=0,
        ttft_seconds_sum=0,
        ttft_seconds_count=0,
        num_gpu_blocks=None,
        block_size=None,
        kv_cache_tokens=None,
        sleep_state=None,
    )


def test_the_gateway_ranks_vllm_replicas_by_their_scraped_waiting_queue() -> None:
    config = parse_config(
        {
            "models": {n: {"engine": "vllm", "model": f"/models/{n}", "listed": False} for n in ("a", "b")},
            "routes": {"r": {"targets": ["a", "b"], "affinity": False}},
        }
    )
    gateway = Gateway(config)
    for name, waiting in (("a", 7), ("b", 2)):
        slot = gateway.supervisor.slots[name]
        slot.state, slot.engine_metrics = EngineState.READY, scraped(waiting)  # as the scrape loop leaves them
    r = gateway.table.resolve("r")
    assert [c.target.model for c in gateway.selector.order(r, session=None, max_attempts=2)] == ["b", "a"]
    gateway.supervisor.slots["a"].engine_metrics = scraped(1)
    gateway.supervisor.slots["b"].engine_metrics = scraped(5)
    gateway.supervisor.slots["b"].state = EngineState.STOPPED  # a stale scrape of a stopped engine is ignored
    assert [c.target.model for c in gateway.selector.order(r, session=None, max_attempts=2)] == ["b", "a"]
