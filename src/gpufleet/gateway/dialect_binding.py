"""Which Qwen dialect settings apply to a configured model (what the model speaks, what its engine does).

The model side comes from `dialect:` when the config names one, else from the first model id that implies
one (docs/qwen.md, "Which dialect a model gets"): vLLM's `model`, a llama.cpp package id or file, a remote's
`upstream_model`, then the configured name and its aliases. `reasoning_parser`/`tool_call_parser` on a
llama.cpp or remote model override the dialect's parsers (gpufleet applies them); on vLLM they are vLLM's
own launch flags, so the engine does that parsing.
"""

from __future__ import annotations

import dataclasses

from gpufleet.config import LlamaCppModel, ModelConfig, RemoteModel, TransformersModel, VllmModel
from gpufleet.dialects import DialectDefaults
from gpufleet.dialects.profiles import DIALECTS, first_inferred, looks_like_qwen


def model_ids(name: str, model: ModelConfig) -> list[str]:
    """The ids a dialect is inferred from, most trusted first."""
    if isinstance(model, VllmModel | TransformersModel):
        ids = [model.model]
    elif isinstance(model, LlamaCppModel):
        ids = [model.source.removeprefix("package:")]
    else:
        ids = [model.upstream_model] if model.upstream_model else []
    return [*ids, name, *model.aliases]


def dialect_name(name: str, model: ModelConfig) -> str | None:
    """The dialect (a `DIALECTS` key) that applies: the configured one, else the inferred one, else None."""
    return model.dialect or first_inferred(model_ids(name, model))


def dialect_for(name: str, model: ModelConfig) -> DialectDefaults:
    """Dialect defaults for one configured model, from its dialect and its engine's capabilities."""
    base = DIALECTS[dialect_name(name, model) or "none"]
    if isinstance(model, VllmModel):
        return dataclasses.replace(
            base,
            engine_handles_reasoning=bool(model.reasoning_parser),
            engine_handles_tools=bool(model.tool_call_parser),
            engine_supports_json_schema=True,  # vLLM's guided decoding
            # vLLM rejects tool_choice "auto" without --enable-auto-tool-choice but renders tools for "none".
            upstream_tool_choice=None if model.tool_call_parser else "none",
        )
    base = dataclasses.replace(
        base,
        reasoning_parser=model.reasoning_parser or base.reasoning_parser,
        tool_call_parser=model.tool_call_parser or base.tool_call_parser,
    )
    if isinstance(model, LlamaCppModel):
        # llama.cpp turns response_format json_schema into a grammar (checked with xllamacpp).
        return dataclasses.replace(base, engine_supports_json_schema=True)
    if isinstance(model, TransformersModel):
        # `transformers serve` has no reasoning/tool parsers or guided decoding: the gateway does the dialect.
        return base
    assert isinstance(model, RemoteModel)
    # A remote server may or may not parse reasoning/tools; already-split output passes through untouched.
    return base


def dialect_warning(name: str, model: ModelConfig) -> str | None:
    """A warning for a model that looks like Qwen but gets no dialect (its <think>/tool calls go unparsed)."""
    if dialect_name(name, model) is not None:
        return None
    has_parsers = not isinstance(model, VllmModel) and (model.reasoning_parser or model.tool_call_parser)
    ids = model_ids(name, model)
    if has_parsers or not looks_like_qwen(ids):
        return None
    return (
        f"model {name!r} looks like Qwen ({', '.join(repr(i) for i in ids)}) but no dialect could be inferred:"
        f" <think> and tool calls are not parsed; set `dialect:` ({', '.join(DIALECTS)})"
    )
