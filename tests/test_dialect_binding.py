"""Which dialect a configured model gets: `dialect:` / parser keys on every engine kind, the inference rule,
and the warning for a Qwen-looking model with none — through the real gateway with replayed Qwen3 output.

The upstream is the STAND-IN in standin_replay.py, playing a vLLM started with `--served-model-name llm` and no
parsers: it streams a recorded Qwen3-8B answer (thinking, then a hermes tool call) as raw text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gpufleet.config import parse_config
from gpufleet.errors import ConfigError
from gpufleet.gateway import build_app, running
from gpufleet.gateway.dialect_binding import dialect_for, dialect_name, dialect_warning
from tests.standin_replay import StandInReplayUpstream

RECORDED = json.loads((Path(__file__).parent / "data" / "qwen" / "thinking_then_call.json").read_text())
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
            },
        },
    }
]


def model(**fields: Any) -> Any:
    engine = fields.pop("engine", "remote")
    base: dict[str, Any] = {
        "remote": {"url": "http://127.0.0.1:9/v1"},
        "vllm": {"model": "/models/m"},
        "llamacpp": {"source": "/models/m.gguf"},
    }[engine]
    name = fields.pop("name", "m")
    config = parse_config({"models": {name: {"engine": engine, **base, **fields}}})
    return name, config.models[name]


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"upstream_model": "Qwen/Qwen3-32B-AWQ"}, "qwen3"),
        ({"upstream_model": "llm", "name": "qwen3-rig"}, "qwen3"),  # the id says nothing: the configured name
        ({"upstream_model": "llm", "aliases": ["Qwen/Qwen2.5-7B-Instruct"]}, "qwen2_5"),  # … then the aliases
        ({"upstream_model": "Qwen/Qwen3-30B-A3B-Thinking-2507", "name": "qwen2.5"}, "qwen3_thinking"),  # id first
        ({"upstream_model": "llm", "dialect": "qwen3_coder"}, "qwen3_coder"),
        ({"upstream_model": "Qwen/Qwen3-8B", "dialect": "none"}, "none"),  # explicit beats inferred
        ({"engine": "vllm", "model": "/srv/weights", "dialect": "qwq"}, "qwq"),
        ({"engine": "vllm", "model": "Qwen/Qwen3-Coder-30B-A3B-Instruct"}, "qwen3_coder"),
        ({"engine": "llamacpp", "source": "/models/Qwen3-8B-Q4_K_M.gguf"}, "qwen3"),
        ({"engine": "llamacpp", "source": "/models/model.gguf", "dialect": "qwen2_5"}, "qwen2_5"),
        ({"upstream_model": "llama-3.1-8b"}, None),
    ],
)
def test_dialect_is_the_configured_one_else_the_first_id_that_implies_one(
    fields: dict[str, Any], expected: str | None
) -> None:
    assert dialect_name(*model(**fields)) == expected


def test_parser_keys_on_remote_and_llamacpp_override_the_dialect() -> None:
    d = dialect_for(*model(upstream_model="llm", reasoning_parser="deepseek_r1", tool_call_parser="qwen3_xml"))
    assert (d.reasoning_parser, d.tool_call_parser) == ("deepseek_r1", "qwen3_xml")
    d = dialect_for(*model(engine="llamacpp", dialect="qwen3", tool_call_parser="qwen3_xml"))
    assert (d.reasoning_parser, d.tool_call_parser) == ("qwen3", "qwen3_xml")


def test_vllm_parser_keys_mean_the_engine_parses() -> None:
    d = dialect_for(*model(engine="vllm", dialect="qwen3", reasoning_parser="qwen3"))
    assert d.reasoning_parser == "qwen3" and d.engine_handles_reasoning and not d.engine_handles_tools


@pytest.mark.parametrize(
    "fields, where",
    [
        ({"dialect": "qwen4"}, "models.m.dialect: unknown dialect 'qwen4'; known: qwen3,"),
        ({"tool_call_parser": "mistral"}, "models.m.tool_call_parser: unknown parser 'mistral'; known:"),
        ({"engine": "llamacpp", "reasoning_parser": "r1"}, "models.m.reasoning_parser: unknown parser 'r1'"),
    ],
)
def test_unknown_dialect_or_parser_is_a_config_error_naming_the_key(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match=where.replace(".", r"\.").replace("(", r"\(")):
        model(**fields)


@pytest.mark.parametrize(
    "fields, warns",
    [
        ({"name": "qwen-prod", "upstream_model": "llm"}, True),  # Qwen-looking, no version to infer from
        ({"name": "rig", "upstream_model": "my-qwen-finetune"}, True),
        ({"name": "qwen-prod", "upstream_model": "llm", "dialect": "qwen3"}, False),
        ({"name": "qwen-prod", "upstream_model": "llm", "dialect": "none"}, False),  # "none" on purpose: no warning
        ({"name": "qwen-prod", "upstream_model": "llm", "tool_call_parser": "hermes"}, False),
        ({"name": "qwen3-prod", "upstream_model": "llm"}, False),  # inferred from the name
        ({"name": "llama", "upstream_model": "llm"}, False),
    ],
)
def test_a_qwen_looking_model_without_a_dialect_is_warned_about(fields: dict[str, Any], warns: bool) -> None:
    warning = dialect_warning(*model(**fields))
    assert (warning is not None) == warns
    if warning:
        assert "set `dialect:`" in warning and "qwen3" in warning


# ------------------------------------------------------------------------- through the gateway


@pytest.fixture
async def vllm_as_llm() -> AsyncIterator[StandInReplayUpstream]:
    upstream = await StandInReplayUpstream(RECORDED["output"], chunk_chars=7, pause_before="").start()
    yield upstream
    await upstream.stop()


async def ask(
    upstream: StandInReplayUpstream,
    entry: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    config = parse_config({"models": {"qwen-rig": {"engine": "remote", "url": upstream.url, **entry}}})
    app = build_app(config)
    transport = httpx.ASGITransport(app=app)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        response = await http.post(
            "/v1/chat/completions",
            json={
                "model": "qwen-rig",
                "messages": [{"role": "user", "content": "Weather in Berlin?"}],
                "tools": TOOLS,
                "stream": True,
                "chat_template_kwargs": {"enable_thinking": True},
            },
        )
        status = (await http.get("/status")).json()
    assert response.status_code == 200, response.text
    blocks = [b.removeprefix("data: ") for b in response.text.strip().split("\n\n")]
    assert blocks[-1] == "[DONE]"
    entry_status = next(m for m in status["models"] if m["name"] == "qwen-rig")
    return [orjson.loads(b) for b in blocks[:-1]], entry_status


def deltas(chunks: list[dict[str, Any]], key: str) -> list[Any]:
    return [c["choices"][0]["delta"][key] for c in chunks if c.get("choices") and c["choices"][0]["delta"].get(key)]


async def test_remote_served_as_llm_with_dialect_qwen3_gets_think_and_tool_parsing(
    vllm_as_llm: StandInReplayUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gpufleet.gateway"):
        chunks, status = await ask(vllm_as_llm, {"upstream_model": "llm", "dialect": "qwen3"})
    assert vllm_as_llm.received[0]["model"] == "llm"
    assert "".join(deltas(chunks, "reasoning_content")) == RECORDED["expected"]["reasoning"]
    calls = [call for group in deltas(chunks, "tool_calls") for call in group]
    assert calls[0]["function"]["name"] == "get_current_weather"
    assert json.loads(calls[1]["function"]["arguments"]) == RECORDED["expected"]["tool_calls"][0]["arguments"]
    assert deltas(chunks, "content") == []
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "warnings" not in status and not caplog.records


async def test_remote_served_as_llm_without_dialect_is_relayed_raw_and_warned_about(
    vllm_as_llm: StandInReplayUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gpufleet.gateway"):
        chunks, status = await ask(vllm_as_llm, {"upstream_model": "llm"})
    assert "".join(deltas(chunks, "content")) == RECORDED["output"]  # <think> and <tool_call> as plain text
    [warning] = status["warnings"]
    assert "'qwen-rig' looks like Qwen" in warning and "set `dialect:`" in warning
    assert [r.getMessage() for r in caplog.records] == [warning]
