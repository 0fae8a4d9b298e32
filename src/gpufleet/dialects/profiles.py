"""What a Qwen model speaks: named dialects, and the rule that guesses one from a model id.

Only the model side is filled in; the caller adds what the engine does (`engine_handles_*`,
`engine_supports_json_schema`, `upstream_tool_choice`) with `dataclasses.replace`. A config names a dialect
with `dialect:` when the id says nothing (a vLLM started with `--served-model-name llm`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from gpufleet.dialects.plan import DialectDefaults

DIALECTS: Mapping[str, DialectDefaults] = MappingProxyType(
    {
        # Qwen3 hybrid thinking; off by default (seed 000).
        "qwen3": DialectDefaults(reasoning_parser="qwen3", tool_call_parser="hermes"),
        # Qwen3-*-Thinking-2507 always thinks; its template opens <think>.
        "qwen3_thinking": DialectDefaults(
            reasoning_parser="qwen3", tool_call_parser="hermes", thinking_default=True, think_open_in_template=True
        ),
        "qwen3_instruct": DialectDefaults(tool_call_parser="hermes"),  # Instruct-2507 never thinks
        "qwen3_coder": DialectDefaults(tool_call_parser="qwen3_coder"),  # no thinking mode; XML tool calls
        # QwQ's template opens <think> in every prompt.
        "qwq": DialectDefaults(
            reasoning_parser="qwen3", tool_call_parser="hermes", thinking_default=True, think_open_in_template=True
        ),
        # Qwen2 / Qwen2.5 (incl. Coder): hermes tool calls, or untagged ```json ones; no thinking.
        "qwen2_5": DialectDefaults(tool_call_parser="qwen2_5"),
        "none": DialectDefaults(),  # a model gpufleet must not parse for
    }
)

_QWEN_RE = re.compile(r"qwen|qwq")


def infer_dialect(model_id: str) -> str | None:
    """The dialect name a model id implies (`DIALECTS` key), or None when the id names no known family.

    >>> infer_dialect("Qwen/Qwen3-Coder-30B-A3B-Instruct")
    'qwen3_coder'
    """
    name = model_id.lower().rsplit("/", 1)[-1]
    if "qwen3" in name and "coder" in name:
        return "qwen3_coder"
    if "qwen3" in name and "thinking-2507" in name:
        return "qwen3_thinking"
    if "qwen3" in name and "instruct-2507" in name:
        return "qwen3_instruct"
    if "qwen3" in name:
        return "qwen3"
    if "qwq" in name:
        return "qwq"
    if "qwen2" in name:
        return "qwen2_5"
    return None


def first_inferred(model_ids: Iterable[str]) -> str | None:
    """The dialect of the first id (in order of trust) that implies one."""
    for model_id in model_ids:
        found = infer_dialect(model_id)
        if found is not None:
            return found
    return None


def looks_like_qwen(model_ids: Iterable[str]) -> bool:
    """True when any id mentions Qwen or QwQ (a model whose dialect should not be left to chance)."""
    return any(_QWEN_RE.search(model_id.lower()) for model_id in model_ids)


def model_dialect(model_id: str) -> DialectDefaults:
    """Dialect defaults for a model id such as "Qwen/Qwen3-32B-AWQ" (unknown models: no parsing).

    >>> model_dialect("Qwen/Qwen3-Coder-30B-A3B-Instruct").tool_call_parser
    'qwen3_coder'
    """
    return DIALECTS[infer_dialect(model_id) or "none"]
