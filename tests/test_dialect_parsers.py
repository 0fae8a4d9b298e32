"""The parser registries and the body formats, through their whole-text and streaming methods."""

from __future__ import annotations

import json

import pytest

from gpufleet.dialects import REASONING_PARSERS, TOOL_PARSERS, get_reasoning_parser, get_tool_parser
from gpufleet.dialects.textstream import partial_tag_len, releasable_len
from gpufleet.dialects.tool_calls import ToolCall


def test_registries_use_vllm_parser_names_plus_gpufleets_qwen2_5() -> None:
    assert set(TOOL_PARSERS) == {"hermes", "qwen3_json", "qwen3_xml", "qwen3_coder", "qwen2_5"}
    assert set(REASONING_PARSERS) == {"qwen3", "deepseek_r1"}
    assert get_tool_parser("qwen3_json") is get_tool_parser("hermes")
    assert get_tool_parser("qwen3_coder") is get_tool_parser("qwen3_xml")


@pytest.mark.parametrize(
    ("text", "n"), [("abc <tool_c", 7), ("abc <", 1), ("abc", 0), ("<tool_call", 10), ("<tool_call>", 0), ("", 0)]
)
def test_partial_tag_len(text: str, n: int) -> None:
    assert partial_tag_len(text, "<tool_call>") == n


def test_releasable_len_holds_trailing_whitespace_on_request() -> None:
    assert releasable_len("Hi there \n<tool", "<tool_call>") == 10
    assert releasable_len("Hi there \n<tool", "<tool_call>", hold_whitespace=True) == 8


def calls_of(parser: str, text: str, **kw: object) -> tuple[str | None, list[tuple[str, object]]]:
    split = get_tool_parser(parser).extract(text, **kw)  # type: ignore[arg-type]
    return split.content, [(c.name, json.loads(c.arguments)) for c in split.tool_calls]


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "f", "parameters": {"x": 1}}',  # some Qwen fine-tunes say "parameters"
        '{"name": "f", "arguments": "{\\"x\\": 1}"}',
    ],
)
def test_hermes_argument_spellings(body: str) -> None:
    assert calls_of("hermes", f"<tool_call>\n{body}\n</tool_call>") == (None, [("f", {"x": 1})])


def test_hermes_missing_arguments_mean_empty_object() -> None:
    assert calls_of("hermes", '<tool_call>{"name": "now"}</tool_call>') == (None, [("now", {})])


def test_two_json_objects_in_one_block_are_two_calls() -> None:
    text = '<tool_call>\n{"name": "a", "arguments": {}}\n{"name": "b", "arguments": {}}\n</tool_call>'
    assert calls_of("hermes", text) == (None, [("a", {}), ("b", {})])


@pytest.mark.parametrize(
    "body",
    [
        '["f"]',
        '{"arguments": {}}',
        '{"name": "", "arguments": {}}',
        '{"name": 3}',
        '{"name": "f", "arguments": "not json"}',
        '{"name": "f", "arguments": [1]}',
        "",
        "{",
        "<function=>",
    ],
)
def test_malformed_bodies_stay_content(body: str) -> None:
    text = f"<tool_call>{body}</tool_call>"
    assert calls_of("hermes", text) == (text, [])
    stream = get_tool_parser("hermes").stream()
    assert "".join(str(x) for x in [*stream.feed(text), *stream.finish()]) == text


def test_each_parser_also_reads_the_other_format() -> None:
    xml = "<tool_call>\n<function=f>\n<parameter=x>\n1\n</parameter>\n</function>\n</tool_call>"
    js = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    for parser in ("hermes", "qwen3_xml"):
        assert calls_of(parser, xml) == calls_of(parser, js) == (None, [("f", {"x": 1})])


def test_xml_values_follow_the_declared_parameter_types() -> None:
    text = (
        "<tool_call>\n<function=f>\n<parameter=zip>\n01234\n</parameter>\n"
        "<parameter=n>\n7\n</parameter>\n<parameter=flag>\ntrue\n</parameter>\n"
        "<parameter=note>\nhello world\n</parameter>\n</function>\n</tool_call>"
    )
    types = {"f": {"zip": "string", "n": "integer"}}
    assert calls_of("qwen3_xml", text, param_types=types) == (
        None,
        [("f", {"zip": "01234", "n": 7, "flag": True, "note": "hello world"})],
    )


def test_xml_parameter_without_closing_tag_ends_at_the_next_one() -> None:
    text = "<tool_call><function=f><parameter=a>1<parameter=b>two</function></tool_call>"
    assert calls_of("qwen3_coder", text) == (None, [("f", {"a": 1, "b": "two"})])


def test_tool_call_ids_are_unique_openai_style() -> None:
    a, b = ToolCall("f", "{}"), ToolCall("f", "{}")
    assert a.id != b.id and a.id.startswith("call_") and len(a.id) == 29
    assert a.to_openai() == {"id": a.id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("text", "starts", "reasoning", "content"),
    [
        ("<think>a</think>b", False, "a", "b"),
        ("  \n<think>\na\n</think>\n\nb", False, "a", "b"),
        ("a</think>b", True, "a", "b"),
        ("a</think>b", False, None, "a</think>b"),
        ("<think>a", False, "a", ""),
        ("", True, None, ""),
        ("<think></think>", False, None, ""),
        ("<thi", False, None, "<thi"),
    ],
)
def test_reasoning_whole_and_stream_agree(text: str, starts: bool, reasoning: str | None, content: str) -> None:
    parser = get_reasoning_parser("qwen3")
    assert parser.extract(text, starts_in_reasoning=starts) == (reasoning, content)
    for cut in range(len(text) + 1):
        stream = parser.stream(starts_in_reasoning=starts)
        segs = [*stream.feed(text[:cut]), *stream.feed(text[cut:]), *stream.finish()]
        got_r = "".join(s.text for s in segs if s.kind == "reasoning") or None
        assert (got_r, "".join(s.text for s in segs if s.kind == "content")) == (reasoning, content)


def test_deepseek_r1_parser_assumes_the_template_opened_think() -> None:
    assert get_reasoning_parser("deepseek_r1").assume_open
    assert not get_reasoning_parser("qwen3").assume_open
