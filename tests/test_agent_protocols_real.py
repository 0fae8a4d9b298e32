"""Smoke: Anthropic Messages and OpenAI Responses through the real embedded Qwen model (llama.cpp).

One short prompt per endpoint, greedy and seeded; the assertions hold for any valid answer. Also: a system
message in the middle of the conversation (agents send them; the gateway folds them so the Qwen template
accepts them), and count_tokens through llama.cpp's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from typer.testing import CliRunner

from gpufleet.cli import app
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

pytestmark = [pytest.mark.qwen, pytest.mark.slow]
GREEDY_EXTRA = {"seed": 42, "cache_prompt": False}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    model = {
        "engine": "llamacpp",
        "source": "package:qwen2.5-coder-1.5b-instruct",
        "context": 8192,
        "parallel": 2,
        "threads": 2,
        "preload": True,
        "aliases": ["claude-sonnet-4-5"],
    }
    gateway = start_gateway({"models": {"qwen": model}}, tmp_path_factory.mktemp("qwen"), ready_timeout_s=300)
    yield gateway
    stop_gateway(gateway)


def test_messages_smoke_with_a_late_system_message(qwen: ServedGateway) -> None:
    with anthropic.Anthropic(base_url=qwen.url, api_key="x", max_retries=0, timeout=300) as client:
        reply = client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=40,
            system="Answer in one short sentence.",
            messages=[
                {"role": "user", "content": "Say hello."},
                {"role": "assistant", "content": "Hello!"},
                {"role": "system", "content": "The user prefers French."},
                {"role": "user", "content": "Say hello again."},
            ],
            extra_body={**GREEDY_EXTRA, "temperature": 0},
        )  # this SDK version has no temperature argument
    assert reply.model == "claude-sonnet-4-5"
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.content and reply.content[0].type == "text" and reply.content[0].text.strip()
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0


def test_responses_smoke_streamed(qwen: ServedGateway) -> None:
    with openai.OpenAI(base_url=f"{qwen.url}/v1", api_key="x", max_retries=0, timeout=300) as client:
        events = list(
            client.responses.create(
                model="qwen",
                input="Say hello.",
                instructions="Be brief.",
                max_output_tokens=40,
                temperature=0,
                stream=True,
                store=False,
                extra_body=GREEDY_EXTRA,
            )
        )
    final = events[-1]
    assert final.type in ("response.completed", "response.incomplete")
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text.strip() and final.response.output_text == text


def test_messages_stop_sequence_on_llamacpp_cuts_the_text_and_reports_what_the_engine_says(qwen: ServedGateway) -> None:
    # llama.cpp's OpenAI chat route answers finish_reason "stop" without naming the stop word, so the gateway
    # must not claim one: end_turn with stop_sequence null (a build that names it may say stop_sequence "5").
    with anthropic.Anthropic(base_url=qwen.url, api_key="x", max_retries=0, timeout=300) as client:
        reply = client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=60,
            stop_sequences=["5"],
            messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
            extra_body={**GREEDY_EXTRA, "temperature": 0},
        )
    text = "".join(block.text for block in reply.content if block.type == "text")
    assert "5" not in text
    assert (reply.stop_reason, reply.stop_sequence) in (
        ("end_turn", None),
        ("max_tokens", None),
        ("stop_sequence", "5"),
    )


def test_count_tokens_uses_the_engine_tokenizer(qwen: ServedGateway) -> None:
    body = {"model": "qwen", "messages": [{"role": "user", "content": "Count these tokens, please."}]}
    counted = httpx.post(f"{qwen.url}/v1/messages/count_tokens", json=body, timeout=60)
    assert counted.status_code == 200, counted.text
    assert counted.headers["x-gpufleet-token-count"] == "engine:llamacpp"
    assert 5 < counted.json()["input_tokens"] < 60  # the template's tokens plus the text's


def test_launch_tells_claude_code_the_engine_context_window(qwen: ServedGateway) -> None:
    result = CliRunner().invoke(app, ["launch", "claude", "--print", "--url", qwen.url, "--model", "qwen"])
    assert result.exit_code == 0, result.output
    # context 8192 shared by 2 llama.cpp slots: one request gets 4096
    assert "export CLAUDE_CODE_MAX_CONTEXT_TOKENS=4096" in result.output.splitlines()
