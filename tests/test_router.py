"""The router through the gateway: fallback chains, cooldown and recovery, replicas, affinity, defaults, personas.

The upstreams are STAND-IN servers (tests/standin_upstream.py) on loopback ports that inject faults on
demand: refuse connections (a port nobody listens on), hang, answer 500/429, die mid-stream. Replicas
served by real embedded engines are in test_router_engines.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gpufleet.config import parse_config
from gpufleet.engine_supervisor.ports import free_port
from gpufleet.errors import ModelNotFound
from gpufleet.router.table import ModelTable
from tests.gateway_harness import OpenGateway, chat
from tests.standin_upstream import StandInUpstream

NAMES = ("a", "b", "c")


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, StandInUpstream]]:
    servers = {name: StandInUpstream().start() for name in NAMES}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(autouse=True)
def reset(upstreams: dict[str, StandInUpstream]) -> None:
    for server in upstreams.values():
        server.behaviour, server.delay_s, server.models_status = "ok", 0.0, 200
        server.received.clear()
        server.headers.clear()


def remote(server: StandInUpstream, **extra: Any) -> dict[str, Any]:
    return {"engine": "remote", "url": server.url, **extra}


def base_config(upstreams: dict[str, StandInUpstream], **sections: Any) -> dict[str, Any]:
    models = {name: remote(server, upstream_model=f"upstream-{name}") for name, server in upstreams.items()}
    models["dead"] = {"engine": "remote", "url": f"http://127.0.0.1:{free_port()}/v1"}  # nobody listens there
    config: dict[str, Any] = {"models": models, "router": {"retry_backoff_s": 0, "cooldown_s": 30}}
    for key, value in sections.items():
        if key == "models":
            config["models"].update(value)
        elif key == "router":
            config["router"].update(value)
        else:
            config[key] = value
    return config


def sse_events(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


async def a_then_b(
    gw: OpenGateway, upstreams: dict[str, StandInUpstream], fault: str, **sections: Any
) -> httpx.AsyncClient:
    """A gateway whose route "qwen" tries a, then falls back to b; a's stand-in answers with `fault`."""
    upstreams["a"].behaviour = fault
    return await gw(base_config(upstreams, routes={"qwen": {"targets": ["a"], "fallbacks": ["b"]}}, **sections))


async def stream_chat(http: httpx.AsyncClient, model: str) -> tuple[httpx.Response, list[Any]]:
    """A streamed chat: once a stream has started it is answered 200 and ends with [DONE], whatever failed."""
    response = await http.post("/v1/chat/completions", json=chat(model, stream=True))
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    return response, events


# --- fallback chains -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["refuse", "500", "429"])
async def test_fallback_happens_before_any_byte(gw: Any, upstreams: dict[str, StandInUpstream], fault: str) -> None:
    first = "dead" if fault == "refuse" else "a"
    upstreams["a"].behaviour = fault if fault != "refuse" else "ok"
    http = await gw(base_config(upstreams, routes={"qwen": {"targets": [first], "fallbacks": ["b"]}}))
    response = await http.post("/v1/chat/completions", json=chat("qwen"))
    assert response.status_code == 200, response.text
    assert response.headers["x-gpufleet-model"] == "b"
    assert response.headers["x-gpufleet-route"] == "qwen"
    assert response.json()["model"] == "b"
    assert [r["model"] for r in upstreams["b"].received] == ["upstream-b"]  # the upstream's own name
    metrics = (await http.get("/metrics")).text
    assert f'gpufleet_fallbacks_total{{from_model="{first}"' in metrics
    assert 'gpufleet_route_requests_total{model="b",route="qwen"} 1.0' in metrics


async def test_streams_fall_back_too(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    http = await a_then_b(gw, upstreams, "500")
    response, events = await stream_chat(http, "qwen")
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"]) == (
        "tok0 tok1 tok2 tok3 tok4 "
    )
    assert response.headers["x-gpufleet-model"] == "b"


async def test_client_errors_do_not_fall_back(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    http = await a_then_b(gw, upstreams, "400")
    response = await http.post("/v1/chat/completions", json=chat("qwen"))
    assert response.status_code == 400
    assert "max_tokens is too large" in response.json()["error"]["message"]
    assert upstreams["b"].received == []


async def test_hang_before_the_answer_falls_back_after_the_target_timeout(
    gw: Any, upstreams: dict[str, StandInUpstream]
) -> None:
    upstreams["a"].behaviour = "hang"
    config = base_config(upstreams, routes={"qwen": {"targets": ["a"], "fallbacks": ["b"]}})
    config["models"]["a"]["timeout_s"] = 0.5
    http = await gw(config)
    response = await http.post("/v1/chat/completions", json=chat("qwen"))
    assert response.status_code == 200, response.text
    assert response.headers["x-gpufleet-model"] == "b"


async def test_stream_that_sends_nothing_falls_back_after_first_byte_timeout(
    gw: Any, upstreams: dict[str, StandInUpstream]
) -> None:
    http = await a_then_b(gw, upstreams, "hang-stream", router={"first_byte_timeout_s": 0.5})
    response, _ = await stream_chat(http, "qwen")
    assert response.headers["x-gpufleet-model"] == "b"


async def test_never_switches_after_the_first_streamed_byte(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    http = await a_then_b(gw, upstreams, "die-mid-stream")
    _, events = await stream_chat(http, "qwen")
    error = events[-2]["error"]
    assert error["code"] == "upstream_stream_error" and error["type"] == "server_error"
    assert any(e.get("choices") and e["choices"][0]["delta"].get("content") == "tok0 " for e in events[:-2])
    assert upstreams["b"].received == []  # nothing was silently re-sent elsewhere


async def test_when_every_target_fails_the_error_names_each(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    upstreams["a"].behaviour = "500"
    upstreams["b"].behaviour = "429"
    http = await gw(base_config(upstreams, routes={"qwen": {"targets": ["a"], "fallbacks": ["dead", "b"]}}))
    response = await http.post("/v1/chat/completions", json=chat("qwen"))
    assert response.status_code == 429  # the last target's status
    message = response.json()["error"]["message"]
    assert "every target of 'qwen' failed" in message
    for label in (upstreams["a"].url, upstreams["b"].url, "cannot connect"):
        assert label in message


async def test_attempts_are_bounded(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    upstreams["a"].behaviour = upstreams["b"].behaviour = "500"
    http = await gw(
        base_config(upstreams, routes={"qwen": {"targets": ["a"], "fallbacks": ["b", "c"]}}, router={"max_attempts": 2})
    )
    response = await http.post("/v1/chat/completions", json=chat("qwen"))
    assert response.status_code == 502
    assert upstreams["c"].received == []


async def test_model_level_fallbacks(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    config = base_config(upstreams)
    config["models"]["dead"]["fallbacks"] = ["c"]
    http = await gw(config)
    response = await http.post("/v1/chat/completions", json=chat("dead"))
    assert response.status_code == 200
    assert response.headers["x-gpufleet-model"] == "c"


# --- cooldown and recovery -------------------------------------------------------------------------------


async def test_failing_target_is_cooled_down_then_probed_back(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    upstreams["a"].models_status = 500  # the probe fails too while "down"
    http = await a_then_b(gw, upstreams, "500", router={"cooldown_s": 60, "probe_interval_s": 0.2})
    assert (await http.post("/v1/chat/completions", json=chat("qwen"))).headers["x-gpufleet-model"] == "b"
    assert len(upstreams["a"].received) == 1
    # In cooldown: the next requests go straight to the fallback, the failing target is not even tried.
    for _ in range(3):
        assert (await http.post("/v1/chat/completions", json=chat("qwen"))).headers["x-gpufleet-model"] == "b"
    assert len(upstreams["a"].received) == 1
    targets = {t["model"]: t for t in (await http.get("/status")).json()["targets"]}
    assert targets["a"]["healthy"] is False and targets["a"]["cooldown_until_s"] > 0
    assert "HTTP 500" in targets["a"]["last_error"]
    assert 'gpufleet_target_healthy{model="a"' in (await http.get("/metrics")).text
    # It recovers: the probe sees it answer and ends the cooldown long before the 60 s.
    upstreams["a"].behaviour, upstreams["a"].models_status = "ok", 200
    for _ in range(50):
        await asyncio.sleep(0.1)
        if (await http.get("/status")).json()["targets"][0]["healthy"]:
            break
    response = await http.post("/v1/chat/completions", json=chat("qwen"))
    assert response.headers["x-gpufleet-model"] == "a"


async def test_expired_cooldown_lets_the_target_try_again(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    http = await a_then_b(gw, upstreams, "500", router={"cooldown_s": 0.3})
    await http.post("/v1/chat/completions", json=chat("qwen"))
    upstreams["a"].behaviour = "ok"
    await asyncio.sleep(0.4)
    assert (await http.post("/v1/chat/completions", json=chat("qwen"))).headers["x-gpufleet-model"] == "a"


async def test_cooled_targets_are_still_tried_when_nothing_else_can_serve(
    gw: Any, upstreams: dict[str, StandInUpstream]
) -> None:
    upstreams["a"].behaviour = "500"
    http = await gw(base_config(upstreams, routes={"qwen": {"targets": ["a"]}}))
    assert (await http.post("/v1/chat/completions", json=chat("qwen"))).status_code == 502
    upstreams["a"].behaviour = "ok"
    assert (await http.post("/v1/chat/completions", json=chat("qwen"))).status_code == 200


# --- replicas ----------------------------------------------------------------------------------------------


async def test_replicas_are_balanced_by_in_flight_requests(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    for name in ("a", "b"):
        upstreams[name].delay_s = 0.3
    http = await gw(base_config(upstreams, routes={"qwen": {"targets": ["a", "b"], "affinity": False}}))
    responses = await asyncio.gather(*(http.post("/v1/chat/completions", json=chat("qwen")) for _ in range(10)))
    assert all(r.status_code == 200 for r in responses)
    served = [r.headers["x-gpufleet-model"] for r in responses]
    assert served.count("a") == 5 and served.count("b") == 5


async def test_session_affinity_keeps_a_user_on_one_replica(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    http = await gw(base_config(upstreams, routes={"qwen": {"targets": ["a", "b", "c"]}}))
    for user in ("alice", "bob", "carol", "dave"):
        served = {
            (await http.post("/v1/chat/completions", json=chat("qwen", user=user))).headers["x-gpufleet-model"]
            for _ in range(4)
        }
        assert len(served) == 1, (user, served)
    by_header = {
        (await http.post("/v1/chat/completions", json=chat("qwen"), headers={"x-gpufleet-session": "s1"})).headers[
            "x-gpufleet-model"
        ]
        for _ in range(4)
    }
    assert len(by_header) == 1
    users = [f"user{i}" for i in range(30)]
    spread = {
        (await http.post("/v1/chat/completions", json=chat("qwen", user=u))).headers["x-gpufleet-model"] for u in users
    }
    assert spread == {"a", "b", "c"}


async def test_a_pinned_session_moves_when_its_replica_fails(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    http = await gw(base_config(upstreams, routes={"qwen": {"targets": ["a", "b"]}}))
    home = (await http.post("/v1/chat/completions", json=chat("qwen", user="u"))).headers["x-gpufleet-model"]
    other = "b" if home == "a" else "a"
    upstreams[home].behaviour = "500"
    response = await http.post("/v1/chat/completions", json=chat("qwen", user="u"))
    assert response.status_code == 200 and response.headers["x-gpufleet-model"] == other


# --- names, defaults, personas ---------------------------------------------------------------------------


async def test_route_aliases_listing_and_hidden_replicas(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    config = base_config(
        upstreams, routes={"qwen3-32b": {"targets": ["a", "b"], "aliases": ["gpt-4o", "Qwen/Qwen3-32B-AWQ"]}}
    )
    config["models"]["a"]["listed"] = False
    http = await gw(config)
    for name in ("gpt-4o", "Qwen/Qwen3-32B-AWQ"):
        response = await http.post("/v1/chat/completions", json=chat(name))
        assert response.status_code == 200 and response.headers["x-gpufleet-route"] == "qwen3-32b"
    listing = {m["id"]: m for m in (await http.get("/v1/models")).json()["data"]}
    assert "a" not in listing and "qwen3-32b" in listing and listing["gpt-4o"]["alias_of"] == "qwen3-32b"
    missing = await http.post("/v1/chat/completions", json=chat("qwen3-33b"))
    assert missing.status_code == 404 and "qwen3-32b" in missing.json()["error"]["message"]


async def test_route_defaults_fill_in_and_cap(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    config = base_config(
        upstreams,
        routes={
            "careful": {
                "targets": ["a"],
                "defaults": {
                    "temperature": 0.2,
                    "max_tokens": 100,
                    "max_tokens_cap": 500,
                    "system_prompt": "Be brief.",
                },
            }
        },
    )
    config["models"]["a"]["defaults"] = {"top_p": 0.8, "temperature": 0.9}
    http = await gw(config)
    await http.post("/v1/chat/completions", json=chat("careful"))
    await http.post(
        "/v1/chat/completions",
        json={
            "model": "careful",
            "temperature": 1.0,
            "max_tokens": 4000,
            "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}],
        },
    )
    await http.post("/v1/chat/completions", json=chat("a"))
    plain, client_set, direct = upstreams["a"].received
    assert plain["temperature"] == 0.2 and plain["top_p"] == 0.8 and plain["max_tokens"] == 100
    assert plain["messages"][0] == {"role": "system", "content": "Be brief."}
    assert client_set["temperature"] == 1.0 and client_set["max_tokens"] == 500  # the client's, but capped
    assert client_set["messages"][0]["content"] == "Be brief.\n\nYou are terse."
    assert direct["temperature"] == 0.9 and "max_tokens" not in direct  # the model's own defaults only


async def test_persona_is_a_name_on_the_openai_endpoints(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    config = base_config(
        upstreams,
        routes={"qwen": {"targets": ["a"], "fallbacks": ["b"]}},
        personas={
            "archivist": {"route": "qwen", "system_prompt": "You file documents.", "defaults": {"temperature": 0.0}}
        },
    )
    http = await gw(config)
    upstreams["a"].behaviour = "500"
    response = await http.post("/v1/chat/completions", json=chat("archivist"))
    assert response.status_code == 200 and response.headers["x-gpufleet-model"] == "b"
    sent = upstreams["b"].received[0]
    assert sent["messages"][0] == {"role": "system", "content": "You file documents."}
    assert sent["temperature"] == 0.0
    listing = {m["id"]: m for m in (await http.get("/v1/models")).json()["data"]}
    assert listing["archivist"]["persona_of"] == "qwen"


async def test_target_header_names_the_remote(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    http = await gw(base_config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("c"))
    assert response.headers["x-gpufleet-target"] == f"remote:{upstreams['c'].url}"
    assert "x-gpufleet-route" not in response.headers


# --- POST /chat (personas) ---------------------------------------------------------------------------------


async def test_persona_chat_endpoint(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    config = base_config(upstreams, personas={"hero": {"route": "a", "system_prompt": "I am the hero."}})
    http = await gw(config)
    history = [{"role": "user", "content": "who are you?"}, {"role": "assistant", "content": "the hero"}]
    response = await http.post("/chat", json={"message": "and now?", "history": history, "max_tokens": 9})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["persona"] == "hero" and body["model"] == "a" and body["finish_reason"] == "stop"
    assert body["reply"].startswith("echo: ") and body["usage"]["total_tokens"] == 7
    sent = upstreams["a"].received[0]
    assert sent["messages"] == [
        {"role": "system", "content": "I am the hero."},
        *history,
        {"role": "user", "content": "and now?"},
    ]
    assert sent["max_tokens"] == 9 and sent["model"] == "upstream-a"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "message"),
        ({"message": "  "}, 400, "message"),
        ({"message": "hi", "persona": "villain"}, 404, "persona"),
        ({"message": "hi", "history": [{"role": "system", "content": "x"}]}, 400, "history[0]"),
        ({"message": "hi", "prompt": "x"}, 400, "prompt"),
    ],
)
async def test_persona_chat_rejects_bad_bodies_naming_the_field(
    gw: Any, upstreams: dict[str, StandInUpstream], body: dict[str, Any], status: int, param: str
) -> None:
    http = await gw(base_config(upstreams, personas={"hero": {"route": "a", "system_prompt": "I am the hero."}}))
    response = await http.post("/chat", json=body)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
    assert upstreams["a"].received == []


async def test_persona_chat_needs_a_persona_name_when_several(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    personas = {"hero": {"route": "a", "system_prompt": "h"}, "sage": {"route": "b", "system_prompt": "s"}}
    http = await gw(base_config(upstreams, personas=personas))
    missing = await http.post("/chat", json={"message": "hi"})
    assert missing.status_code == 400 and "hero, sage" in missing.json()["error"]["message"]
    response = await http.post("/chat", json={"message": "hi", "persona": "sage"})
    assert response.status_code == 200 and response.json()["model"] == "b"


# --- auto ----------------------------------------------------------------------------------------------------


async def test_auto_routes_by_tier_and_says_which(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    http = await gw(base_config(upstreams, router={"auto": {"routine": "a", "moderate": "b", "complex": "c"}}))
    easy = await http.post("/v1/chat/completions", json=chat("auto"))
    assert easy.headers["x-gpufleet-tier"] == "routine" and easy.headers["x-gpufleet-model"] == "a"
    hard_prompt = (
        "Prove that there are infinitely many primes, then implement a Python function that lists the "
        "first n primes efficiently, analyse its time complexity step by step, and compare it with the "
        "sieve of Eratosthenes."
    )
    hard = await http.post(
        "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": hard_prompt}]}
    )
    assert hard.headers["x-gpufleet-tier"] == "complex" and hard.headers["x-gpufleet-model"] == "c"
    assert upstreams["c"].received[0]["model"] == "upstream-c"
    metrics = (await http.get("/metrics")).text
    assert 'gpufleet_auto_tier_total{tier="routine"} 1.0' in metrics
    assert 'gpufleet_auto_tier_total{tier="complex"} 1.0' in metrics
    listing = {m["id"]: m for m in (await http.get("/v1/models")).json()["data"]}
    assert listing["auto"]["tiers"] == {"routine": "a", "moderate": "b", "complex": "c"}


async def test_auto_tier_falls_back_like_any_route(gw: Any, upstreams: dict[str, StandInUpstream]) -> None:
    upstreams["a"].behaviour = "500"
    config = base_config(
        upstreams,
        routes={"cheap": {"targets": ["a"], "fallbacks": ["b"]}},
        router={"auto": {"routine": "cheap", "moderate": "c", "complex": "c"}},
    )
    http = await gw(config)
    response = await http.post("/v1/chat/completions", json=chat("auto"))
    assert response.status_code == 200
    assert response.headers["x-gpufleet-tier"] == "routine" and response.headers["x-gpufleet-model"] == "b"


def test_auto_with_an_unknown_signal_weight_is_a_config_error(upstreams: dict[str, StandInUpstream]) -> None:
    from gpufleet.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(
            base_config(
                upstreams,
                router={"auto": {"routine": "a", "moderate": "b", "complex": "c", "weights": {"code": 3, "vibes": 1}}},
            ),
            file="f.yaml",
        )
    assert info.value.key_path == "router.auto.weights"
    assert "unknown signal 'vibes'; known signals: " in str(info.value)


# --- name resolution (pure: ModelTable, no upstream) -----------------------------------------------------


def _remote_at(**extra: Any) -> dict[str, Any]:
    return {"engine": "remote", "url": "http://127.0.0.1:9/v1", **extra}  # never called: resolution is pure


RESOLUTION_CONFIG: dict[str, Any] = {
    "models": {
        "a": _remote_at(aliases=["alpha"], fallbacks=["c"]),
        "b": _remote_at(),
        "c": _remote_at(fallbacks=["d"]),
        "d": _remote_at(),
    },
    "routes": {
        "pair": {
            "targets": ["a", "b"],
            "fallbacks": ["spare", "c"],
            "resume_fallbacks": ["spare"],
            "aliases": ["gpt-4o"],
        },
        "spare": {"targets": ["d"]},
    },
    "personas": {"helper": {"route": "gpt-4o", "system_prompt": "Be kind."}},
}

# requested name → (route name, candidate groups in try order, models a broken stream may resume on)
RESOLUTION_TABLE = [
    ("a", "a", (("a",), ("c",), ("d",)), set()),  # a model's fallbacks, and theirs, in order
    ("alpha", "a", (("a",), ("c",), ("d",)), set()),  # an alias is its model
    ("b", "b", (("b",),), set()),
    ("d", "d", (("d",),), set()),
    # a route: its targets are one group of replicas (their own fallbacks are not followed); a fallback route adds
    # its targets as a group; a model already tried (d, c's fallback) is not tried again
    ("pair", "pair", (("a", "b"), ("d",), ("c",)), {"d"}),
    ("gpt-4o", "pair", (("a", "b"), ("d",), ("c",)), {"d"}),
    ("helper", "helper", (("a", "b"), ("d",), ("c",)), {"d"}),  # a persona is its route under its own name
]


@pytest.mark.parametrize(("requested", "name", "groups", "resumable"), RESOLUTION_TABLE)
def test_a_requested_name_resolves_to_its_candidates_in_try_order(
    requested: str, name: str, groups: tuple[tuple[str, ...], ...], resumable: set[str]
) -> None:
    route = ModelTable(parse_config(RESOLUTION_CONFIG)).resolve(requested)
    assert route.name == name
    assert tuple(tuple(c.target.model for c in group) for group in route.groups) == groups
    assert route.resumable == resumable


def test_an_unknown_name_is_model_not_found_with_close_names_and_the_list() -> None:
    with pytest.raises(ModelNotFound) as info:
        ModelTable(parse_config(RESOLUTION_CONFIG)).resolve("pari")
    assert "'pari' does not exist. Did you mean: pair" in str(info.value)
    assert "Available models: a, b, c, d, pair, spare, alpha, gpt-4o, helper" in str(info.value)
