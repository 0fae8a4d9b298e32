"""The planner's decode estimate for a benchmarked model, to print next to the measured tok/s.

decode_estimate(config, "qwen-7b")  # -> (41.3, None) or (None, "why there is none")
"""

from __future__ import annotations

from gpufleet.config import Config, VllmModel
from gpufleet.engines.vllm_resolve import resolve_model
from gpufleet.errors import EngineError


def _configured(config: Config, name: str) -> tuple[str, VllmModel] | None:
    for model_name, model in config.models.items():
        if (model_name == name or name in model.aliases) and isinstance(model, VllmModel):
            return model_name, model
    return None


def decode_estimate(config: Config, name: str) -> tuple[float | None, str | None]:
    """One decode stream's tokens/s as the planner predicts it for model `name`, or None and the reason.

    (None, None) when `name` is not a vLLM model of `config`: there is nothing to compare with.
    """
    found = _configured(config, name)
    if found is None:
        return None, None
    model_name, model = found
    if not model.plan:
        return None, "plan: false (the planner did not size this model)"
    try:
        resolved = resolve_model(model_name, model, model.vllm_version)
    except EngineError as err:
        return None, f"no plan: {err}"
    plan = resolved.plan
    if plan is None or plan.decode_tok_s_estimate is None:
        return None, "the planner has no decode estimate on CPU (it models GPU memory bandwidth)"
    return plan.decode_tok_s_estimate, None
