"""What a Qwen model speaks, guessed from its model id: parsers and thinking behaviour.

Only the model side is filled in; the caller adds what the engine does (`engine_handles_*`,
`engine_supports_json_schema`, `upstream_tool_choice`) with `dataclasses.replace`.
"""

from __future__ import annotations

from gpufleet.dialects.plan import DialectDefaults


def model_dialect(model_id: str) -> DialectDefaults:
    """Dialect defaults for a model id such as "Qwen/Qwen3-32B-AWQ" (unknown models: no parsing).

    >>> model_dialect("Qwen/Qwen3-Coder-30B-A3B-Instruct").tool_call_parser
    'qwen3_coder'
    """
    name = model_id.lower().rsplit("/", 1)[-1]
    if "qwen3" in name and "coder" in name:  # no thinking mode; XML tool calls
        return DialectDefaults(tool_call_parser="qwen3_coder")
    if "qwen3" in name and "thinking-2507" in name:  # always thinks; template opens <think>
        return DialectDefaults(reasoning_parser="qwen3", tool_call_parser="hermes", thinking_default=True,
                               think_open_in_template=True)
    if "qwen3" in name and "instruct-2507" in name:  # never thinks (no enable_thinking switch)
        return DialectDefaults(tool_call_parser="hermes")
    if "qwen3" in name:  # hybrid thinking; off by default (seed 000)
        return DialectDefaults(reasoning_parser="qwen3", tool_call_parser="hermes")
    if "qwq" in name:  # QwQ's template opens <think> in every prompt
        return DialectDefaults(reasoning_parser="qwen3", tool_call_parser="hermes", thinking_default=True,
                               think_open_in_template=True)
    if "qwen2" in name:  # Qwen2 / Qwen2.5 (incl. Coder): hermes tool calls, or untagged ```json ones; no thinking
        return DialectDefaults(tool_call_parser="qwen2_5")
    return DialectDefaults()
