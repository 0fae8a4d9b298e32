"""The request side of the dialect: one client body in, the upstream body and a ResponsePlan out."""

from __future__ import annotations

from typing import Any

from gpufleet.dialects.plan import DialectDefaults, PreparedRequest, RequestKind, ResponsePlan
from gpufleet.dialects.registry import get_reasoning_parser, get_tool_parser
from gpufleet.dialects.structured import add_system_instruction, parse_response_format, structured_instruction
from gpufleet.dialects.thinking import resolve_thinking, sampling_for
from gpufleet.dialects.tool_calls import tool_param_types
from gpufleet.errors import RequestError

# Fields only gpufleet understands: engines would reject or ignore them.
GPUFLEET_ONLY_FIELDS = ("thinking",)


def prepare_request(body: dict[str, Any], *, kind: RequestKind, defaults: DialectDefaults) -> PreparedRequest:
    """Apply thinking control, sampling defaults, tool and structured-output handling to one request.

    The caller's dict is not modified. Raises RequestError (400) for malformed dialect fields.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if kind not in ("chat", "completion"):
        raise ValueError(f"kind must be 'chat' or 'completion', not {kind!r}")
    chat = kind == "chat"
    out: dict[str, Any] = {k: v for k, v in body.items() if k not in GPUFLEET_ONLY_FIELDS}
    choice = resolve_thinking(body, default=defaults.thinking_default, chat=chat)

    reasoning_parser = None
    if defaults.reasoning_parser is not None:  # a model with Qwen3's thinking switch
        parser = get_reasoning_parser(defaults.reasoning_parser)
        # reasoning_effort is translated into the template switch below (vLLM < 0.33 ignores it).
        out.pop("reasoning_effort", None)
        if chat:
            out["chat_template_kwargs"] = {
                **(body.get("chat_template_kwargs") or {}),
                "enable_thinking": choice.enabled,
            }
            if not defaults.engine_handles_reasoning:
                reasoning_parser = parser
        if defaults.sampling_by_mode:
            for key, value in sampling_for(choice.enabled).items():
                if out.get(key) is None:  # only where the client did not choose
                    out[key] = value
    caps = [c for c in (defaults.max_reasoning_tokens, choice.budget_tokens) if c is not None]

    tool_parser, param_types = _plan_tools(body, out, chat, defaults)
    response_format, schema = parse_response_format(body) if chat else (None, None)
    if response_format is not None and not defaults.engine_supports_json_schema:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise RequestError("messages must be a list", param="messages")
        out.pop("response_format", None)
        out["messages"] = add_system_instruction(messages, structured_instruction(schema))

    plan = ResponsePlan(
        kind=kind,
        thinking=choice.enabled,
        reasoning_parser=reasoning_parser.name if reasoning_parser else None,
        # Thinking-2507 opens <think> in every prompt; R1-style parsers assume it only when thinking.
        starts_in_reasoning=reasoning_parser is not None
        and (defaults.think_open_in_template or (choice.enabled and reasoning_parser.assume_open)),
        max_reasoning_chars=min(caps) * 4 if caps else None,
        tool_parser=tool_parser,
        tool_param_types=param_types,
        response_format=response_format,
        json_schema=schema,
        structured_by_gateway=response_format is not None and not defaults.engine_supports_json_schema,
    )
    return PreparedRequest(out, plan)


def _plan_tools(
    body: dict[str, Any], out: dict[str, Any], chat: bool, defaults: DialectDefaults
) -> tuple[str | None, dict[str, dict[str, str]]]:
    """Decide whether gpufleet parses tool calls, and adjust `tool_choice` for the engine."""
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise RequestError("tools must be a list of tool definitions", param="tools")
    tool_choice = body.get("tool_choice")
    if not chat or not tools or tool_choice == "none" or defaults.engine_handles_tools:
        return None, {}
    if defaults.tool_call_parser is None:
        return None, {}
    parser = get_tool_parser(defaults.tool_call_parser)
    if defaults.upstream_tool_choice is not None and tool_choice in (None, "auto"):
        out["tool_choice"] = defaults.upstream_tool_choice
    return parser.name, tool_param_types(tools)
