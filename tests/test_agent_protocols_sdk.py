"""Anthropic Messages and OpenAI Responses through the gateway, driven by the official Python SDKs.

The upstream is the STAND-IN raw Qwen3 coder (tests/standin_qwen_coder.py): it speaks only chat and answers
with `<think>` and `<tool_call>` text, so every tool_use block / function_call item here was made by the
gateway's Qwen dialect and protocol translation, not by the upstream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anthropic
import httpx
import openai
import pytest

from gpufleet.config import parse_config
from gpufleet.gateway import build_app
from gpufleet.gateway.response_store import ResponseStore
from tests.gateway_harness import served_app
from tests.standin_qwen_coder import StandInQwenCoder

KEY = "sk-gateway-test"
# The tools as plain dicts (what a client sends), not the SDKs' TypedDicts.
BASH: Any = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}
EXEC: Any = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}


@pytest.fixture(scope="module")
def coder() -> Iterator[StandInQwenCoder]:
    server = StandInQwenCoder().start()
    yield server
    server.stop()


@pytest.fixture
def gateway_url(coder: StandInQwenCoder, tmp_path: Path) -> Iterator[str]:
    config = parse_config(
        {
            "server": {"api_keys": [KEY]},
            "models": {
                "coder": {
                    "engine": "remote",
                    "url": coder.url,
                    "upstream_model": "Qwen/Qwen3-8B",
                    "aliases": ["claude-sonnet-4-5", "gpt-5-codex"],
                },
                "down": {"engine": "remote", "url": "http://127.0.0.1:9/v1", "upstream_model": "Qwen/Qwen3-8B"},
            },
            "routes": {"flaky": {"targets": ["down"], "fallbacks": ["coder"]}},
        }
    )
    built = build_app(config)
    built.state.response_store = ResponseStore(tmp_path / "responses.sqlite3")
    with served_app(built) as url:  # real HTTP: the SDKs bring their own client
        yield url


def _http(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url)


@pytest.fixture
async def claude(gateway_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(api_key=KEY, base_url=gateway_url, max_retries=0) as client:
        yield client


@pytest.fixture
async def oai(gateway_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(api_key=KEY, base_url=gateway_url + "/v1", max_retries=0) as client:
        yield client


# --- Anthropic Messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "flaky"])
async def test_messages_tool_use_then_final_text(claude: anthropic.AsyncAnthropic, model: str) -> None:
    first = await claude.messages.create(
        model=model,
        max_tokens=512,
        tools=[BASH],
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "RUN: echo hi > a.txt"}],
    )
    assert first.model == model
    assert first.stop_reason == "tool_use"
    kinds = [block.type for block in first.content]
    assert kinds == ["thinking", "tool_use"]
    call = first.content[1]
    assert call.type == "tool_use" and call.name == "Bash" and call.input["command"] == "echo hi > a.txt"
    # The assistant turn goes back as the plain dicts the SDK's blocks dump to (what a client sends).
    history: Any = [
        {"role": "user", "content": "RUN: echo hi > a.txt"},
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok-42"}]},
    ]
    second = await claude.messages.create(model=model, max_tokens=512, tools=[BASH], messages=history)
    assert second.stop_reason == "end_turn"
    assert [block.type for block in second.content] == ["thinking", "text"]
    assert second.content[1].type == "text" and second.content[1].text == "DONE: ok-42"
    assert second.usage.input_tokens > 0 and second.usage.output_tokens > 0


async def test_messages_stream_with_tools_and_thinking(
    claude: anthropic.AsyncAnthropic, coder: StandInQwenCoder
) -> None:
    events: list[str] = []
    async with claude.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=512,
        tools=[BASH],
        system=[{"type": "text", "text": "You are a coder.", "cache_control": {"type": "ephemeral"}}],
        metadata={"user_id": "user_abc_account_x_session_1234"},
        messages=[{"role": "user", "content": "RUN: ls"}],
    ) as stream:
        async for event in stream:
            events.append(event.type)
        final = await stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["thinking", "tool_use"]
    assert final.content[0].type == "thinking" and "shell tool" in final.content[0].thinking
    assert final.content[1].type == "tool_use" and final.content[1].input == {
        "command": "ls",
        "description": "run the requested command",
    }
    sent = coder.received[-1]
    assert sent["messages"][0] == {"role": "system", "content": "You are a coder."}
    assert sent["user"] == "1234"  # Claude Code's session id feeds session affinity
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}


async def test_messages_raw_stream_event_sequence(gateway_url: str) -> None:
    async with _http(gateway_url) as http:
        response = await http.post(
            "/v1/messages?beta=true",
            headers={"x-api-key": KEY},
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "stream": True,
                "messages": [{"role": "user", "content": "hello"}],
            },
        )
    assert response.status_code == 200
    names = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    blocks = names[2:-2]
    assert blocks[0] == "content_block_start" and blocks.count("content_block_start") == 2
    assert blocks.count("content_block_stop") == 2
    assert '"signature_delta"' in response.text and '"thinking_delta"' in response.text


async def test_messages_errors_use_anthropic_shapes(claude: anthropic.AsyncAnthropic, gateway_url: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        await claude.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert not_found.value.body == {"type": "error", "error": {"type": "not_found_error", "message": ANY}}
    with pytest.raises(anthropic.BadRequestError) as bad:
        robot: Any = [{"role": "robot", "content": "x"}]  # a role the SDK's types refuse: the gateway must too
        await claude.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=robot)
    assert "messages[0].role" in str(bad.value)
    async with anthropic.AsyncAnthropic(api_key="nope", base_url=gateway_url, max_retries=0) as wrong_key:
        with pytest.raises(anthropic.AuthenticationError):
            await wrong_key.messages.create(
                model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )


async def test_messages_drop_server_tools_with_a_header(gateway_url: str, coder: StandInQwenCoder) -> None:
    async with _http(gateway_url) as http:
        response = await http.post(
            "/v1/messages",
            headers={"x-api-key": KEY},
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "context_management": {"edits": []},
                "tools": [BASH, {"type": "web_search_20250305", "name": "web_search"}],
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-gpufleet-dropped"] == "web_search"
    assert [tool["function"]["name"] for tool in coder.received[-1]["tools"]] == ["Bash"]


@pytest.mark.parametrize("names_stop", ["vllm", "llamacpp", None])
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_messages_stop_sequence_only_when_the_engine_names_the_match(
    claude: anthropic.AsyncAnthropic, coder: StandInQwenCoder, names_stop: str | None, stream: bool
) -> None:
    # The stand-in cuts "Hello from the stand-in." at "stand" as an engine would, and names the match as vLLM
    # does, as llama.cpp does when run verbose, or not at all (llama.cpp's OpenAI routes by default).
    coder.names_stop = names_stop
    try:
        request: dict[str, Any] = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "stop_sequences": ["stand", "never-seen"],
            "messages": [{"role": "user", "content": "hi"}],
        }
        if stream:
            async with claude.messages.stream(**request) as events:
                final = await events.get_final_message()
        else:
            final = await claude.messages.create(**request)
    finally:
        coder.names_stop = None
    assert coder.received[-1]["stop"] == ["stand", "never-seen"]
    text = "".join(block.text for block in final.content if block.type == "text")
    assert text == "Hello from the "
    if names_stop is None:
        assert (final.stop_reason, final.stop_sequence) == ("end_turn", None)
    else:
        assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "stand")


async def test_count_tokens_estimates_when_no_engine_tokenizer(claude: anthropic.AsyncAnthropic) -> None:
    counted = await claude.messages.with_raw_response.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hello there " * 40}]
    )
    assert counted.headers["x-gpufleet-token-count"] == "estimate"
    assert 100 <= (await counted.parse()).input_tokens <= 200


# --- OpenAI Responses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-5-codex", "flaky"])
async def test_responses_function_call_then_final_text(oai: openai.AsyncOpenAI, model: str) -> None:
    first = await oai.responses.create(
        model=model,
        input="RUN: touch b.txt",
        tools=[EXEC],
        reasoning={"effort": "medium", "summary": "auto"},
        store=False,
    )
    assert first.model == model and first.status == "completed"
    assert [item.type for item in first.output] == ["reasoning", "function_call"]
    call = first.output[1]
    assert call.type == "function_call" and call.name == "exec_command"
    assert json.loads(call.arguments) == {"cmd": "touch b.txt"}
    second = await oai.responses.create(
        model=model,
        tools=[EXEC],
        store=False,
        input=[
            {"role": "user", "content": "RUN: touch b.txt"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "exit 0"},
        ],
    )
    assert second.output_text == "DONE: exit 0"
    assert second.usage is not None and second.usage.input_tokens > 0


async def test_responses_stream_events(oai: openai.AsyncOpenAI, coder: StandInQwenCoder) -> None:
    stream = await oai.responses.create(
        model="gpt-5-codex",
        input="RUN: pwd",
        tools=[EXEC],
        stream=True,
        store=False,
        prompt_cache_key="codex-session-7",
        instructions="Be brief.",
    )
    events = [event async for event in stream]
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    for name in (
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ):
        assert name in types
    final = events[-1].response  # type: ignore[union-attr]
    assert [item.type for item in final.output] == ["reasoning", "function_call"]
    assert coder.received[-1]["user"] == "codex-session-7"
    assert coder.received[-1]["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_responses_store_previous_response_id_and_get(oai: openai.AsyncOpenAI) -> None:
    first = await oai.responses.create(model="gpt-5-codex", input="RUN: date", tools=[EXEC])
    fetched = await oai.responses.retrieve(first.id)
    assert fetched.id == first.id and fetched.output[-1].type == "function_call"
    call = first.output[-1]
    assert call.type == "function_call"
    second = await oai.responses.create(
        model="gpt-5-codex",
        previous_response_id=first.id,
        tools=[EXEC],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Tue"}],
    )
    assert second.output_text == "DONE: Tue"
    unstored = await oai.responses.create(model="gpt-5-codex", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(unstored.id)


async def test_responses_errors_and_dropped_tools(oai: openai.AsyncOpenAI, gateway_url: str) -> None:
    with pytest.raises(openai.NotFoundError):
        await oai.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.NotFoundError):
        await oai.responses.create(model="gpt-5-codex", input="x", previous_response_id="resp_unknown")
    with pytest.raises(openai.BadRequestError) as bad:
        bogus: Any = [{"type": "bogus"}]  # an input item the SDK's types refuse: the gateway must too
        await oai.responses.create(model="gpt-5-codex", input=bogus)
    assert "input[0].type" in str(bad.value)
    async with _http(gateway_url) as http:
        response = await http.post(
            "/v1/responses",
            headers={"authorization": f"Bearer {KEY}"},
            json={
                "model": "gpt-5-codex",
                "input": "hi",
                "store": False,
                "tools": [EXEC, {"type": "web_search"}, {"type": "namespace", "name": "mcp__x", "tools": []}],
            },
        )
        unauthenticated = await http.post("/v1/responses", json={"model": "gpt-5-codex", "input": "hi"})
    assert response.status_code == 200, response.text
    assert response.headers["x-gpufleet-dropped"] == "web_search,mcp__x"
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["type"] == "invalid_request_error"


async def test_responses_max_output_tokens_reports_incomplete(oai: openai.AsyncOpenAI, coder: StandInQwenCoder) -> None:
    answer = await oai.responses.create(model="gpt-5-codex", input="hi", max_output_tokens=16, store=False)
    assert coder.received[-1]["max_tokens"] == 16
    assert answer.status == "completed"  # the stand-in stops on its own: "incomplete" is only for finish "length"
