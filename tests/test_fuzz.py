"""Fuzz the gateway's POST endpoints (the ones /openapi.json lists) with hypothesis: no 5xx, no hang.

Over 2,000 bodies: garbage bytes, arbitrary JSON, and near-valid requests whose every field may have the wrong
type, shape or depth. The gateway runs in-process (the real app, router, dialects and relay); the upstream is
the STAND-IN from standin_upstream.py, answering valid requests with valid JSON (`{}`), so any 5xx is the
gateway's own failure. Derandomized: every CI run sends the same bodies.

`response_format` is fuzzed in shape but not with arbitrary schemas: a stand-in answer that does not match
a random schema gets a documented 502 (structured_output_invalid), which is the upstream's failure.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from tests.standin_upstream import StandInUpstream

EXAMPLES = 2100
HANG_S = 10.0


class JsonAnswerUpstream(StandInUpstream):
    """The STAND-IN upstream; non-stream chats are answered with the JSON object `{}` as content."""

    async def _chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("stream"):
            return await self._chat_from(body)
        answer = {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "model": "meaningless",
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "{}"}, "text": "{}"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _chat_from(self, body: dict[str, Any]) -> Response:
        return StreamingResponse(self._stream(body), media_type="text/event-stream")


@pytest.fixture(scope="module")
def upstream() -> Iterator[JsonAnswerUpstream]:
    server = JsonAnswerUpstream().start()
    yield server
    server.stop()


# --- strategies -----------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
any_json = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


weird = st.one_of(any_json, st.sampled_from([deep(70), deep(300), "x" * 5000, -1, 0, 2**64, 1e308]))


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a plausible value, now and then anything at all (a body has a dozen fields: most stay valid)."""
    return st.sampled_from(range(12)).flatmap(lambda i: weird if i == 11 else value)


roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot"])
parts = st.fixed_dictionaries(
    {"type": maybe(st.sampled_from(["text", "image_url", "input_audio"]))},
    optional={
        "text": maybe(st.text(max_size=30)),
        "image_url": maybe(st.fixed_dictionaries({"url": st.text(max_size=20)})),
    },
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "function": maybe(
                st.fixed_dictionaries({"name": maybe(st.text(max_size=10)), "arguments": maybe(st.text(max_size=20))})
            )
        },
        optional={"id": maybe(st.text(max_size=8)), "type": maybe(st.just("function"))},
    ),
    max_size=2,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": maybe(roles)},
        optional={
            "content": maybe(st.one_of(st.text(max_size=40), st.lists(parts, max_size=3), st.none())),
            "tool_calls": maybe(tool_calls),
            "tool_call_id": maybe(st.text(max_size=8)),
            "name": maybe(st.text(max_size=8)),
        },
    ),
    max_size=4,
)
tools = st.lists(
    st.fixed_dictionaries(
        {"type": maybe(st.just("function"))},
        optional={
            "function": maybe(
                st.fixed_dictionaries(
                    {"name": maybe(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))},
                    optional={
                        "description": maybe(st.text(max_size=20)),
                        "parameters": maybe(st.just({"type": "object", "properties": {"x": {"type": "string"}}})),
                    },
                )
            )
        },
    ),
    max_size=3,
)
response_formats = st.one_of(
    st.sampled_from(
        [
            {"type": "text"},
            {"type": "json_object"},
            {"type": "xml"},
            {"type": "json_schema"},
            {"type": "json_schema", "json_schema": 5},
        ]
    ),
    weird,
)
models = st.sampled_from(["echo", "gpt-4o", "clerk", "echo", "nope"])
sampling = {
    "stream": maybe(st.booleans()),
    "max_tokens": maybe(st.integers(-5, 5000)),
    "n_predict": maybe(st.integers(-2, 9)),
    "max_completion_tokens": maybe(st.integers(-5, 50)),
    "temperature": maybe(st.floats(-1, 3)),
    "top_p": maybe(st.floats(0, 1)),
    "n": maybe(st.integers(0, 3)),
    "seed": maybe(st.integers()),
    "stop": maybe(st.lists(st.text(max_size=4), max_size=3)),
    "stream_options": maybe(st.fixed_dictionaries({"include_usage": maybe(st.booleans())})),
    "chat_template_kwargs": maybe(st.fixed_dictionaries({"enable_thinking": maybe(st.booleans())})),
    "thinking": maybe(st.booleans()),
    "reasoning_effort": maybe(st.sampled_from(["low", "high"])),
    "user": maybe(st.text(max_size=8)),
    "extra": weird,
}
chat_bodies = st.fixed_dictionaries(
    {"model": maybe(models), "messages": maybe(messages)},
    optional={
        **sampling,
        "tools": maybe(tools),
        "tool_choice": maybe(
            st.sampled_from(["auto", "none", "required", "maybe", {"type": "function", "function": {"name": "f"}}])
        ),
        "response_format": response_formats,
    },
)
completion_bodies = st.fixed_dictionaries(
    {"model": maybe(models), "prompt": maybe(st.one_of(st.text(max_size=40), st.lists(st.integers(0, 100))))},
    optional=sampling,
)
embedding_bodies = st.fixed_dictionaries(
    {"model": maybe(models), "input": maybe(st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10))))}
)
persona_bodies = st.fixed_dictionaries(
    {"message": maybe(st.text(max_size=40))},
    optional={
        "persona": maybe(st.sampled_from(["clerk", "nobody"])),
        "history": maybe(
            st.lists(st.fixed_dictionaries({"role": maybe(roles), "content": maybe(st.text(max_size=20))}), max_size=3)
        ),
        "max_tokens": maybe(st.integers(-1, 50)),
        "temperature": maybe(st.floats(0, 2)),
        "thinking": maybe(st.booleans()),
        "user": maybe(st.text(max_size=5)),
        "bogus": weird,
    },
)
key_bodies = st.fixed_dictionaries(  # POST /admin/keys (the gateway under test has no keys: admin is open)
    {"name": maybe(st.text(max_size=10))},
    optional={
        "models": maybe(st.lists(st.text(max_size=6), max_size=3)),
        "rpm": maybe(st.integers(-1, 9)),
        "tpm": maybe(st.integers(-1, 9)),
        "expires": maybe(st.sampled_from(["30d", "0d", "1y", ""])),
        "bogus": weird,
    },
)
blocks = st.lists(
    st.fixed_dictionaries(
        {
            "type": maybe(
                st.sampled_from(
                    [
                        "text",
                        "image",
                        "tool_use",
                        "tool_result",
                        "thinking",
                        "redacted_thinking",
                        "document",
                        "server_tool_use",
                        "bogus",
                    ]
                )
            )
        },
        optional={
            "text": maybe(st.text(max_size=20)),
            "id": maybe(st.text(max_size=6)),
            "name": maybe(st.text(max_size=6)),
            "input": weird,
            "tool_use_id": maybe(st.text(max_size=6)),
            "is_error": maybe(st.booleans()),
            "content": maybe(st.one_of(st.text(max_size=10), st.lists(any_json, max_size=2))),
            "thinking": maybe(st.text(max_size=10)),
            "source": weird,
        },
    ),
    max_size=3,
)
anthropic_tools = st.lists(
    st.fixed_dictionaries(
        {"name": maybe(st.from_regex(r"[A-Za-z_]{1,12}", fullmatch=True))},
        optional={
            "type": maybe(st.sampled_from(["custom", "web_search_20250305"])),
            "description": weird,
            "input_schema": maybe(st.just({"type": "object", "properties": {"x": {"type": "string"}}})),
        },
    ),
    max_size=3,
)
messages_bodies = st.fixed_dictionaries(
    {
        "model": maybe(models),
        "max_tokens": maybe(st.integers(-2, 50)),
        "messages": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"role": maybe(roles), "content": maybe(st.one_of(st.text(max_size=20), blocks))}
                ),
                max_size=4,
            )
        ),
    },
    optional={
        "system": maybe(st.one_of(st.text(max_size=20), blocks)),
        "stream": maybe(st.booleans()),
        "tools": maybe(anthropic_tools),
        "tool_choice": weird,
        "thinking": maybe(
            st.sampled_from([{"type": "enabled", "budget_tokens": 100}, {"type": "disabled"}, {"type": "adaptive"}])
        ),
        "stop_sequences": weird,
        "top_k": weird,
        "metadata": weird,
        "context_management": weird,
    },
)
items = st.lists(
    st.fixed_dictionaries(
        {
            "type": maybe(
                st.sampled_from(
                    ["message", "function_call", "function_call_output", "reasoning", "web_search_call", "bogus"]
                )
            )
        },
        optional={
            "role": maybe(roles),
            "content": maybe(
                st.one_of(
                    st.text(max_size=10),
                    st.lists(
                        st.fixed_dictionaries(
                            {
                                "type": maybe(
                                    st.sampled_from(["input_text", "output_text", "input_image", "input_file"])
                                )
                            },
                            optional={"text": weird, "image_url": weird, "filename": weird, "file_data": weird},
                        ),
                        max_size=2,
                    ),
                )
            ),
            "call_id": maybe(st.text(max_size=5)),
            "name": maybe(st.text(max_size=5)),
            "arguments": weird,
            "output": weird,
            "summary": weird,
        },
    ),
    max_size=4,
)
responses_bodies = st.fixed_dictionaries(
    {"model": maybe(models), "input": maybe(st.one_of(st.text(max_size=20), items))},
    optional={
        "instructions": weird,
        "stream": maybe(st.booleans()),
        "store": maybe(st.booleans()),
        "previous_response_id": weird,
        "max_output_tokens": maybe(st.integers(-2, 50)),
        "tools": maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"type": maybe(st.sampled_from(["function", "web_search", "namespace"]))},
                    optional={"name": maybe(st.text(max_size=6)), "parameters": weird},
                ),
                max_size=2,
            )
        ),
        "tool_choice": weird,
        "reasoning": weird,
        "text": weird,
        "prompt_cache_key": weird,
    },
)
BODIES = {
    "/v1/chat/completions": chat_bodies,
    "/v1/completions": completion_bodies,
    "/v1/embeddings": embedding_bodies,
    "/chat": persona_bodies,
    "/v1/messages": messages_bodies,
    "/v1/messages/count_tokens": messages_bodies,
    "/v1/responses": responses_bodies,
    "/admin/keys": key_bodies,
}


def encoded(body: Any) -> bytes:
    import json
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)  # the 300-deep values (orjson writes at most 254 levels)
    try:
        return json.dumps(body).encode()
    finally:
        sys.setrecursionlimit(limit)


def payloads(path: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        BODIES[path].map(encoded),
        BODIES[path].map(encoded),
        BODIES[path].map(encoded),
        any_json.map(encoded),
        st.binary(max_size=64),
    )


def test_openapi_lists_every_endpoint_with_a_schema_for_each_post(upstream: JsonAnswerUpstream) -> None:
    async def fetch() -> dict[str, Any]:
        app = build_app(gateway_config(upstream))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
            return dict((await http.get("/openapi.json")).json())

    document = asyncio.run(fetch())
    assert document["openapi"].startswith("3.1")
    posts = {path for path, ops in document["paths"].items() if "post" in ops and "{" not in path}
    assert posts == set(BODIES)
    schemas = document["components"]["schemas"]
    for path in posts:
        ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[1] in schemas
    assert "tools" in schemas["ChatCompletionRequest"]["properties"]


def gateway_config(upstream: JsonAnswerUpstream) -> Any:
    store = Path(tempfile.mkdtemp(prefix="gpufleet-fuzz-")) / "store.sqlite3"  # keys it makes stay there
    return parse_config(
        {
            "server": {"max_body_bytes": 256 * 1024, "database_url": f"sqlite:///{store}"},
            "models": {
                "echo": {
                    "engine": "remote",
                    "url": upstream.url,
                    "aliases": ["gpt-4o"],
                    "defaults": {"max_tokens_cap": 16},
                }
            },
            "personas": {"clerk": {"route": "echo", "system_prompt": "You file things."}},
            "router": {"cooldown_s": 0, "retry_backoff_s": 0},
        }
    )


# A fuzzed POST /admin/keys that succeeds makes a team key, and from then on the gateway refuses requests without
# one (docs/keys.md): the key endpoint is fuzzed on a gateway of its own, so the rest still reach the engine path.
_KEYS = "/admin/keys"


@pytest.mark.fuzz
@pytest.mark.parametrize(
    ("paths", "examples"), [(sorted(set(BODIES) - {_KEYS}), EXAMPLES), ([_KEYS], 300)], ids=["endpoints", "admin-keys"]
)
def test_fuzzed_bodies_never_get_a_5xx_or_hang(upstream: JsonAnswerUpstream, paths: list[str], examples: int) -> None:
    loop = asyncio.new_event_loop()
    app = build_app(gateway_config(upstream))
    gateway = running(app)
    loop.run_until_complete(gateway.__aenter__())
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    seen: Counter[int] = Counter()
    codes: Counter[str] = Counter()

    async def send(path: str, body: bytes) -> httpx.Response:
        return await asyncio.wait_for(
            http.post(path, content=body, headers={"content-type": "application/json"}), HANG_S
        )

    @settings(
        max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=st.sampled_from(paths).flatmap(lambda path: st.tuples(st.just(path), payloads(path))))
    def one(case: tuple[str, bytes]) -> None:
        path, body = case
        try:
            response = loop.run_until_complete(send(path, body))
        except TimeoutError:
            raise AssertionError(f"POST {path} hung for {HANG_S} s: {body[:300]!r}") from None
        seen[response.status_code] += 1
        assert response.status_code < 500, f"POST {path} {body[:300]!r} → {response.status_code} {response.text}"
        if response.status_code >= 400 and path.startswith("/v1/messages"):  # Anthropic's error shape
            answer = response.json()
            assert answer["type"] == "error" and isinstance(answer["error"]["message"], str)
            codes[f"{path} {answer['error']['type']}"] += 1
        elif response.status_code >= 400:
            error = response.json()["error"]
            assert isinstance(error["message"], str) and isinstance(error["code"], str)
            codes[f"{path} {error['code']} {error['param']}"] += 1

    try:
        one()
    finally:
        loop.run_until_complete(http.aclose())
        loop.run_until_complete(gateway.__aexit__(None, None, None))
        loop.close()
    assert sum(seen.values()) >= examples * 0.95
    if paths == [_KEYS]:  # a key was made, bad bodies were refused by name, then admin closed (no admin keys)
        assert seen[201] >= 1 and seen[400] >= 5 and seen[403] > 100, (seen, codes.most_common(30))
        return
    # The fuzz reached the engine path and the validators.
    assert seen[200] > 100 and seen[400] > 100, (seen, codes.most_common(30))
