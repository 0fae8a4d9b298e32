"""Thinking control: decide per request whether a Qwen3 hybrid model thinks, and its sampling.

Precedence (vllm-facts §4; Qwen obeys soft switches only while enable_thinking is true, gpufleet
makes them work by setting enable_thinking itself):
1. a request field that turns thinking OFF (`chat_template_kwargs.enable_thinking: false`,
   `thinking: false | {"type": "disabled"}`, `reasoning_effort: "none"`) always wins;
2. otherwise the latest `/think` or `/no_think` in a user or system message;
3. otherwise a request field that turns thinking ON;
4. otherwise the route/model default (off unless configured: seed 000's token blow-up).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from gpufleet.errors import RequestError

# Qwen model cards: thinking mode must not be greedy; non-thinking uses a lower top_p.
THINKING_SAMPLING: Mapping[str, float | int] = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}
NON_THINKING_SAMPLING: Mapping[str, float | int] = {
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "min_p": 0.0,
}

_SOFT_SWITCH_RE = re.compile(r"(?<![\w/])/(no_think|think)(?![\w/])")


class ThinkingChoice(NamedTuple):
    """The resolved thinking mode, where it came from, and a per-request reasoning budget if any."""

    enabled: bool
    source: str  # "chat_template_kwargs" | "thinking" | "reasoning_effort" | "soft_switch" | "default"
    budget_tokens: int | None = None


def _message_text(message: object) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def soft_switch(messages: object) -> bool | None:
    """The latest `/think` (True) or `/no_think` (False) in user/system messages, or None."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "system"):
            continue
        found = _SOFT_SWITCH_RE.findall(_message_text(message))
        if found:
            return bool(found[-1] == "think")
    return None


def _explicit(body: Mapping[str, Any]) -> tuple[bool | None, str, int | None]:
    """The thinking switch set by request fields, its source, and `thinking.budget_tokens`."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise RequestError("chat_template_kwargs must be an object", param="chat_template_kwargs")
    if kwargs and "enable_thinking" in kwargs:
        value = kwargs["enable_thinking"]
        if not isinstance(value, bool):
            raise RequestError(
                "chat_template_kwargs.enable_thinking must be true or false",
                param="chat_template_kwargs.enable_thinking",
            )
        return value, "chat_template_kwargs", None
    if "thinking" in body and body["thinking"] is not None:
        return _thinking_field(body["thinking"])
    effort = body.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str):
            raise RequestError("reasoning_effort must be a string such as 'none' or 'high'", param="reasoning_effort")
        return effort.strip().lower() != "none", "reasoning_effort", None
    return None, "default", None


def _thinking_field(value: object) -> tuple[bool, str, int | None]:
    if isinstance(value, bool):
        return value, "thinking", None
    if isinstance(value, dict) and value.get("type") in ("enabled", "disabled"):
        budget = value.get("budget_tokens")
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
            raise RequestError("thinking.budget_tokens must be a positive integer", param="thinking.budget_tokens")
        return value["type"] == "enabled", "thinking", budget
    raise RequestError('thinking must be true, false, {"type": "enabled"} or {"type": "disabled"}', param="thinking")


def resolve_thinking(body: Mapping[str, Any], *, default: bool, chat: bool = True) -> ThinkingChoice:
    """Decide the thinking mode of one request (see the module docstring for the precedence)."""
    explicit, source, budget = _explicit(body)
    if explicit is False:
        return ThinkingChoice(False, source, budget)
    switch = soft_switch(body.get("messages")) if chat else None
    if switch is not None:
        return ThinkingChoice(switch, "soft_switch", budget)
    if explicit is True:
        return ThinkingChoice(True, source, budget)
    return ThinkingChoice(default, "default", budget)


def sampling_for(thinking: bool) -> Mapping[str, float | int]:
    """Qwen's recommended sampling parameters for a thinking mode."""
    return THINKING_SAMPLING if thinking else NON_THINKING_SAMPLING
