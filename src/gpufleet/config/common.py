"""What every part of the schema shares: the strict base model, the served-name rule, request defaults."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"


class Strict(BaseModel):
    """Frozen, and unknown keys are errors (a misspelt key must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_aliases(value: list[str]) -> list[str]:
    """Each alias is a valid served model name (the shared body of the models' and routes' alias validators)."""
    for alias in value:
        if not re.match(NAME_PATTERN, alias):
            raise ValueError(f"alias {alias!r} is not a valid model name")
    return value


class RestartPolicy(Strict):
    """How the supervisor restarts a crashed engine: exponential backoff, then give up."""

    max_restarts: int = Field(
        default=5, ge=0, description="consecutive failed restarts before the engine is marked failed"
    )
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    stable_after_s: float = Field(default=60.0, gt=0, description="uptime after which the failure count resets")


class RouteDefaults(Strict):
    """Request defaults of a model, route or persona: applied where the client did not choose.

    `max_tokens_cap` clamps what a client asks for; `thinking` is the default thinking mode (Qwen3's switch);
    `system_prompt` is put in front of every chat (a persona) unless the client sent its own system message.
    """

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0)
    seed: int | None = None
    stop: list[str] | None = None
    max_tokens: int | None = Field(default=None, gt=0, description="used when the client sets none")
    max_tokens_cap: int | None = Field(default=None, gt=0, description="upper bound on the client's max_tokens")
    thinking: bool | None = Field(default=None, description="default thinking mode; None: the model's default")
    max_reasoning_tokens: int | None = Field(default=None, gt=0, description="cap on reasoning (approximate tokens)")
    system_prompt: str | None = Field(default=None, min_length=1)
