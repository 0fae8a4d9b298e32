"""The data that flows between the request transform and the response transforms.

`DialectDefaults` is what a route/model says about its engine (built by the gateway from config);
`PreparedRequest` is what `prepare_request` returns: the upstream body plus a `ResponsePlan`, the
instructions the response side follows (split `<think>`? parse tool calls? validate JSON?).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RequestKind = Literal["chat", "completion"]


@dataclass(frozen=True)
class DialectDefaults:
    """Per-route/model dialect settings: what the model speaks and what its engine already does.

    Example: `DialectDefaults(reasoning_parser="qwen3", tool_call_parser="hermes")` for Qwen3 on llama.cpp.
    """

    thinking_default: bool = False  # seed 000: non-thinking is the default, thinking blows up token counts
    reasoning_parser: str | None = None  # "qwen3" | "deepseek_r1"; None: the model has no thinking switch
    tool_call_parser: str | None = None  # "hermes" | "qwen3_json" | "qwen3_xml" | "qwen3_coder"
    engine_handles_reasoning: bool = False  # vLLM started with --reasoning-parser
    engine_handles_tools: bool = False  # vLLM started with --enable-auto-tool-choice --tool-call-parser
    engine_supports_json_schema: bool = False  # guided decoding (vLLM, llama.cpp grammar)
    max_reasoning_tokens: int | None = None  # per-route cap, approximated as chars / 4
    sampling_by_mode: bool = True  # fill Qwen's recommended sampling per thinking mode
    # Thinking-2507 templates end the prompt with "<think>\n", so the output starts inside thinking.
    think_open_in_template: bool = False
    # When gpufleet parses tool calls itself, a missing/"auto" tool_choice is sent upstream as this.
    # vLLM without --enable-auto-tool-choice rejects "auto" but still renders the tools for "none",
    # so vLLM routes set "none"; llama.cpp takes "auto" (and may parse the calls itself): None.
    upstream_tool_choice: str | None = None


@dataclass(frozen=True)
class ResponsePlan:
    """What the response transforms must do with the engine's answer to one request."""

    kind: RequestKind = "chat"
    thinking: bool = False  # the thinking mode gpufleet resolved for this request
    reasoning_parser: str | None = None  # split <think> out of content with this parser; None: don't
    starts_in_reasoning: bool = False  # output begins inside <think> (no opening tag expected)
    max_reasoning_chars: int | None = None  # reasoning cap in characters (tokens * 4)
    tool_parser: str | None = None  # parse <tool_call> text with this parser; None: don't
    tool_param_types: dict[str, dict[str, str]] = field(default_factory=dict)  # fn -> param -> JSON type
    response_format: dict[str, Any] | None = None  # the client's json_object / json_schema request
    json_schema: dict[str, Any] | None = None  # the schema to validate content against
    structured_by_gateway: bool = False  # the engine cannot constrain output: gpufleet must validate

    @property
    def max_reasoning_tokens(self) -> int | None:
        """The reasoning cap in (approximate) tokens, as configured."""
        return None if self.max_reasoning_chars is None else self.max_reasoning_chars // 4

    @property
    def passthrough(self) -> bool:
        """True when the response needs no transformation beyond mirroring reasoning field names."""
        return self.reasoning_parser is None and self.tool_parser is None and self.max_reasoning_chars is None


@dataclass(frozen=True)
class PreparedRequest:
    """The body to send upstream and the plan for its answer."""

    body: dict[str, Any]
    plan: ResponsePlan
