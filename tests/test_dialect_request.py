"""prepare_request: thinking control, sampling defaults, tools and structured output on the way up."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gpufleet.dialects import (
    DOCUMENT_CLASSIFICATION_SCHEMA,
    NON_THINKING_SAMPLING,
    THINKING_SAMPLING,
    DialectDefaults,
    document_classification_format,
    model_dialect,
    prepare_request,
)
from gpufleet.errors import ConfigError, RequestError

QWEN3 = DialectDefaults(reasoning_parser="qwen3", tool_call_parser="hermes")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "days": {"type": ["integer", "null"]}},
        },
    },
}


def chat(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "qwen3-8b", "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(
    ("body", "default", "enabled"),
    [
        (chat(), False, False),  # seed 000: non-thinking unless asked
        (chat(), True, True),
        (chat(chat_template_kwargs={"enable_thinking": True}), False, True),
        (chat(chat_template_kwargs={"enable_thinking": False}), True, False),
        (chat(reasoning_effort="none"), True, False),
        (chat(reasoning_effort="high"), False, True),
        (chat(thinking=True), False, True),
        (chat(thinking={"type": "disabled"}), True, False),
        (chat(thinking={"type": "enabled", "budget_tokens": 100}), False, True),
        (chat("solve this /think"), False, True),
        (chat("just answer /no_think"), True, False),
        # Qwen obeys a soft switch only while enable_thinking is true; an explicit "off" wins.
        (chat("/think please", chat_template_kwargs={"enable_thinking": False}), True, False),
        (chat("quick one /no_think", chat_template_kwargs={"enable_thinking": True}), True, False),
        (chat("quick one /no_think", reasoning_effort="high"), True, False),
        # paths and words that merely contain the switch are not switches
        (chat("see /usr/think/notes and /thinking"), False, False),
    ],
)
def test_thinking_mode_resolution_sets_enable_thinking(body: dict[str, Any], default: bool, enabled: bool) -> None:
    defaults = DialectDefaults(reasoning_parser="qwen3", thinking_default=default)
    prepared = prepare_request(body, kind="chat", defaults=defaults)
    assert prepared.body["chat_template_kwargs"]["enable_thinking"] is enabled
    assert prepared.plan.thinking is enabled
    assert "thinking" not in prepared.body and "reasoning_effort" not in prepared.body


def test_latest_soft_switch_in_multi_turn_wins() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are terse. /no_think"},
            {"role": "user", "content": "Explain monads /think"},
            {"role": "assistant", "content": "A monad is... /no_think"},  # assistant turns do not count
            {"role": "user", "content": [{"type": "text", "text": "And functors?"}]},
        ]
    }
    assert prepare_request(body, kind="chat", defaults=QWEN3).plan.thinking is True
    body["messages"].append({"role": "user", "content": [{"type": "text", "text": "Short please /no_think"}]})
    assert prepare_request(body, kind="chat", defaults=QWEN3).plan.thinking is False


def test_other_chat_template_kwargs_survive() -> None:
    body = chat(chat_template_kwargs={"custom_flag": 1})
    prepared = prepare_request(body, kind="chat", defaults=QWEN3)
    assert prepared.body["chat_template_kwargs"] == {"custom_flag": 1, "enable_thinking": False}


def test_caller_body_is_not_modified() -> None:
    body = chat("hi /think", tools=[WEATHER_TOOL], thinking=True, response_format=document_classification_format())
    before = copy.deepcopy(body)
    prepare_request(body, kind="chat", defaults=QWEN3)
    assert body == before


@pytest.mark.parametrize(("text", "expected"), [("hi", NON_THINKING_SAMPLING), ("hi /think", THINKING_SAMPLING)])
def test_qwen_sampling_filled_per_mode(text: str, expected: dict[str, Any]) -> None:
    body = prepare_request(chat(text), kind="chat", defaults=QWEN3).body
    assert {k: body[k] for k in expected} == dict(expected)


def test_client_sampling_is_never_overridden() -> None:
    body = prepare_request(chat("x /think", temperature=0.0, top_k=5), kind="chat", defaults=QWEN3).body
    assert body["temperature"] == 0.0 and body["top_k"] == 5 and body["top_p"] == 0.95


def test_sampling_by_mode_can_be_turned_off() -> None:
    defaults = DialectDefaults(reasoning_parser="qwen3", sampling_by_mode=False)
    body = prepare_request(chat(), kind="chat", defaults=defaults).body
    assert "temperature" not in body and "top_k" not in body


def test_model_without_thinking_switch_gets_no_template_kwargs_or_extra_sampling() -> None:
    # e.g. Qwen2.5-Coder or a remote OpenAI server that would reject unknown fields
    body = prepare_request(
        chat(reasoning_effort="low", thinking=True), kind="chat", defaults=DialectDefaults(tool_call_parser="hermes")
    ).body
    assert "chat_template_kwargs" not in body and "top_k" not in body and "thinking" not in body
    assert body["reasoning_effort"] == "low"


def test_engine_that_splits_reasoning_gets_switch_but_no_parsing() -> None:
    defaults = DialectDefaults(reasoning_parser="qwen3", engine_handles_reasoning=True)
    prepared = prepare_request(chat("x /think"), kind="chat", defaults=defaults)
    assert prepared.body["chat_template_kwargs"]["enable_thinking"] is True
    assert prepared.plan.reasoning_parser is None


@pytest.mark.parametrize(
    ("defaults", "when_on", "when_off"),
    [
        # with thinking off the answer is never taken for reasoning (vLLM #17349) ...
        (DialectDefaults(reasoning_parser="qwen3"), False, False),
        (DialectDefaults(reasoning_parser="deepseek_r1"), True, False),
        # ... unless the template opens <think> whatever the switch says (Thinking-2507 always thinks)
        (DialectDefaults(reasoning_parser="qwen3", think_open_in_template=True), True, True),
        (
            DialectDefaults(reasoning_parser="qwen3", think_open_in_template=True, engine_handles_reasoning=True),
            False,
            False,
        ),
    ],
)
def test_output_starts_inside_thinking_only_when_template_opens_it(
    defaults: DialectDefaults, when_on: bool, when_off: bool
) -> None:
    on = prepare_request(chat("q /think"), kind="chat", defaults=defaults).plan
    off = prepare_request(chat("q /no_think"), kind="chat", defaults=defaults).plan
    assert (on.starts_in_reasoning, off.starts_in_reasoning) == (when_on, when_off)


def test_reasoning_cap_is_the_smaller_of_route_and_request_budget() -> None:
    defaults = DialectDefaults(reasoning_parser="qwen3", max_reasoning_tokens=1000)
    assert prepare_request(chat(), kind="chat", defaults=defaults).plan.max_reasoning_chars == 4000
    body = chat(thinking={"type": "enabled", "budget_tokens": 200})
    plan = prepare_request(body, kind="chat", defaults=defaults).plan
    assert plan.max_reasoning_chars == 800 and plan.max_reasoning_tokens == 200


def test_tools_are_parsed_by_gpufleet_and_tool_choice_left_alone_by_default() -> None:
    prepared = prepare_request(chat(tools=[WEATHER_TOOL], tool_choice="auto"), kind="chat", defaults=QWEN3)
    assert prepared.plan.tool_parser == "hermes" and prepared.body["tool_choice"] == "auto"


@pytest.mark.parametrize("extra", [{}, {"tool_choice": "auto"}])
def test_auto_tool_choice_rewritten_for_vllm_without_its_tool_parser(extra: dict[str, Any]) -> None:
    # vLLM answers 400 to "auto" unless started with --enable-auto-tool-choice; "none" keeps the tools
    defaults = DialectDefaults(reasoning_parser="qwen3", tool_call_parser="hermes", upstream_tool_choice="none")
    prepared = prepare_request(chat(tools=[WEATHER_TOOL], **extra), kind="chat", defaults=defaults)
    assert prepared.plan.tool_parser == "hermes"
    assert prepared.body["tool_choice"] == "none"
    assert prepared.body["tools"] == [WEATHER_TOOL]
    types = {"get_current_weather": {"location": "string", "days": "integer"}}
    assert prepared.plan.tool_param_types == types


@pytest.mark.parametrize(
    ("extra", "defaults"),
    [
        ({}, QWEN3),  # no tools
        ({"tools": [WEATHER_TOOL], "tool_choice": "none"}, QWEN3),
        ({"tools": [WEATHER_TOOL]}, DialectDefaults(tool_call_parser="hermes", engine_handles_tools=True)),
        ({"tools": [WEATHER_TOOL]}, DialectDefaults()),  # no parser configured for the route
    ],
)
def test_tool_calls_not_parsed_when_not_needed(extra: dict[str, Any], defaults: DialectDefaults) -> None:
    prepared = prepare_request(chat(**extra), kind="chat", defaults=defaults)
    assert prepared.plan.tool_parser is None
    assert prepared.body.get("tool_choice") == extra.get("tool_choice")


def test_parser_aliases_resolve_to_registered_parsers() -> None:
    for alias, name in [("qwen3_json", "hermes"), ("qwen3_coder", "qwen3_xml"), ("qwen3_xml", "qwen3_xml")]:
        plan = prepare_request(
            chat(tools=[WEATHER_TOOL]), kind="chat", defaults=DialectDefaults(tool_call_parser=alias)
        ).plan
        assert plan.tool_parser == name


def test_unknown_parser_name_is_a_config_error_listing_known_names() -> None:
    with pytest.raises(ConfigError, match="qwen3_xml"):
        prepare_request(chat(tools=[WEATHER_TOOL]), kind="chat", defaults=DialectDefaults(tool_call_parser="qwen9"))
    with pytest.raises(ConfigError, match="deepseek_r1"):
        prepare_request(chat(), kind="chat", defaults=DialectDefaults(reasoning_parser="nope"))


def test_json_schema_forwarded_to_engines_with_guided_decoding() -> None:
    rf = document_classification_format()
    prepared = prepare_request(
        chat(response_format=rf), kind="chat", defaults=DialectDefaults(engine_supports_json_schema=True)
    )
    assert prepared.body["response_format"] == rf
    assert prepared.body["messages"] == chat()["messages"]
    assert prepared.plan.json_schema == DOCUMENT_CLASSIFICATION_SCHEMA
    assert prepared.plan.structured_by_gateway is False


def test_json_schema_becomes_system_instruction_for_other_engines() -> None:
    body = chat(response_format=document_classification_format())
    body["messages"].insert(0, {"role": "system", "content": "You file documents."})
    prepared = prepare_request(body, kind="chat", defaults=DialectDefaults())
    assert "response_format" not in prepared.body
    system = prepared.body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You file documents.\n\n")
    assert '"correspondent"' in system["content"] and len(prepared.body["messages"]) == 2
    assert prepared.plan.structured_by_gateway is True


def test_json_object_adds_a_leading_system_message_when_there_is_none() -> None:
    body = chat(response_format={"type": "json_object"})
    prepared = prepare_request(body, kind="chat", defaults=DialectDefaults())
    assert prepared.body["messages"][0]["role"] == "system"
    assert "JSON object" in prepared.body["messages"][0]["content"]
    assert prepared.plan.response_format == {"type": "json_object"} and prepared.plan.json_schema is None


def test_text_response_format_is_not_structured() -> None:
    body = chat(response_format={"type": "text"})
    prepared = prepare_request(body, kind="chat", defaults=DialectDefaults())
    assert prepared.plan.response_format is None and prepared.body["response_format"] == {"type": "text"}


def test_completion_requests_get_sampling_but_no_chat_fields() -> None:
    body = {"model": "qwen3-8b", "prompt": "def f(): /think", "thinking": True, "tools": [WEATHER_TOOL]}
    prepared = prepare_request(body, kind="completion", defaults=QWEN3)
    assert "chat_template_kwargs" not in prepared.body and "thinking" not in prepared.body
    assert prepared.body["temperature"] == THINKING_SAMPLING["temperature"]
    assert prepared.plan.kind == "completion" and prepared.plan.passthrough


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(chat_template_kwargs="yes"), "chat_template_kwargs"),
        (chat(chat_template_kwargs={"enable_thinking": "yes"}), "chat_template_kwargs.enable_thinking"),
        (chat(thinking="maybe"), "thinking"),
        (chat(thinking={"type": "enabled", "budget_tokens": -1}), "thinking.budget_tokens"),
        (chat(reasoning_effort=3), "reasoning_effort"),
        (chat(tools={"name": "x"}), "tools"),
        (chat(response_format={"type": "xml"}), "response_format"),
        (
            chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
            "response_format.json_schema.schema",
        ),
        (
            chat(response_format={"type": "json_schema", "json_schema": {"schema": {"type": 5}}}),
            "response_format.json_schema.schema",
        ),
        ({"messages": "hello", "response_format": {"type": "json_object"}}, "messages"),
    ],
)
def test_malformed_dialect_fields_are_400_errors_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as err:
        prepare_request(body, kind="chat", defaults=QWEN3)
    assert err.value.status_code == 400 and err.value.param == param


def test_non_object_body_is_a_request_error() -> None:
    with pytest.raises(RequestError):
        prepare_request([1, 2], kind="chat", defaults=QWEN3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model_id", "reasoning", "tools", "opens"),
    [
        ("Qwen/Qwen3-32B-AWQ", "qwen3", "hermes", False),
        ("Qwen/Qwen3-235B-A22B-Instruct-2507-AWQ", None, "hermes", False),
        ("Qwen/Qwen3-30B-A3B-Thinking-2507", "qwen3", "hermes", True),
        ("Qwen/Qwen3-Coder-30B-A3B-Instruct", None, "qwen3_coder", False),
        ("qwen2.5-coder-1.5b-instruct", None, "qwen2_5", False),
        ("Qwen/QwQ-32B", "qwen3", "hermes", True),
        ("meta-llama/Llama-3.1-8B-Instruct", None, None, False),
    ],
)
def test_model_dialect_guesses_parsers_from_the_model_id(
    model_id: str, reasoning: str | None, tools: str | None, opens: bool
) -> None:
    d = model_dialect(model_id)
    assert (d.reasoning_parser, d.tool_call_parser, d.think_open_in_template) == (reasoning, tools, opens)
