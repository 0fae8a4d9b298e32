"""Which Qwen dialect settings apply to a configured model (what the model speaks, what its engine does)."""

from __future__ import annotations

import dataclasses

from gpufleet.config import LlamaCppModel, ModelConfig, RemoteModel, TransformersModel, VllmModel
from gpufleet.dialects import DialectDefaults, model_dialect


def dialect_for(name: str, model: ModelConfig) -> DialectDefaults:
    """Dialect defaults for one configured model, from its id and its engine's capabilities."""
    if isinstance(model, VllmModel):
        base = model_dialect(model.model)
        return dataclasses.replace(
            base,
            engine_handles_reasoning=bool(model.reasoning_parser),
            engine_handles_tools=bool(model.tool_call_parser),
            engine_supports_json_schema=True,  # vLLM's guided decoding
            # vLLM rejects tool_choice "auto" without --enable-auto-tool-choice but renders tools for "none".
            upstream_tool_choice=None if model.tool_call_parser else "none",
        )
    if isinstance(model, LlamaCppModel):
        base = model_dialect(model.source.removeprefix("package:") if model.source.startswith("package:")
                             else name + " " + model.source)
        # llama.cpp turns response_format json_schema into a grammar (checked with xllamacpp).
        return dataclasses.replace(base, engine_supports_json_schema=True)
    if isinstance(model, TransformersModel):
        # `transformers serve` has no reasoning/tool parsers or guided decoding: the gateway does the dialect.
        return model_dialect(model.model)
    assert isinstance(model, RemoteModel)
    # A remote server may or may not parse reasoning/tools; already-split output passes through untouched.
    return model_dialect(model.upstream_model or name)
