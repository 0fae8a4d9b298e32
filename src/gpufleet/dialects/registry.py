"""Parser registries keyed by vLLM's `--reasoning-parser` and `--tool-call-parser` names.

Using vLLM's names means a route's config reads the same whether vLLM or gpufleet does the parsing.
`qwen2_5` is gpufleet's own: hermes plus the untagged ```json / bare JSON calls Qwen2.5 writes on llama.cpp.
"""

from __future__ import annotations

from gpufleet.dialects.reasoning import ThinkTagReasoningParser
from gpufleet.dialects.tool_calls import TaggedToolParser
from gpufleet.errors import ConfigError

_HERMES = TaggedToolParser("hermes", ("json", "xml"))
_QWEN3_XML = TaggedToolParser("qwen3_xml", ("xml", "json"))
_QWEN2_5 = TaggedToolParser("qwen2_5", ("json", "xml"), untagged=True)

TOOL_PARSERS: dict[str, TaggedToolParser] = {
    "hermes": _HERMES,
    "qwen3_json": _HERMES,  # Qwen3 emits the hermes JSON form
    "qwen3_xml": _QWEN3_XML,  # seed 004
    "qwen3_coder": _QWEN3_XML,  # same wire format as qwen3_xml
    "qwen2_5": _QWEN2_5,  # tests/data/qwen25_tool_outputs: Qwen2.5-Coder-1.5B fences its calls in ```json
}

REASONING_PARSERS: dict[str, ThinkTagReasoningParser] = {
    "qwen3": ThinkTagReasoningParser("qwen3"),
    # R1's template opens <think> itself, so output may start inside reasoning
    # (seeds 000/001 name this parser for Qwen3).
    "deepseek_r1": ThinkTagReasoningParser("deepseek_r1", assume_open=True),
}


def get_tool_parser(name: str) -> TaggedToolParser:
    """The tool-call parser registered as `name`; ConfigError lists the known names."""
    try:
        return TOOL_PARSERS[name]
    except KeyError:
        known = ", ".join(sorted(TOOL_PARSERS))
        raise ConfigError(f"unknown parser {name!r}; known: {known}", key_path="tool_call_parser") from None


def get_reasoning_parser(name: str) -> ThinkTagReasoningParser:
    """The reasoning parser registered as `name`; ConfigError lists the known names."""
    try:
        return REASONING_PARSERS[name]
    except KeyError:
        known = ", ".join(sorted(REASONING_PARSERS))
        raise ConfigError(f"unknown parser {name!r}; known: {known}", key_path="reasoning_parser") from None
