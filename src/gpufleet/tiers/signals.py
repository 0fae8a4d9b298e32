"""The signals of the `auto` rules classifier (router/classifier.py) and their default weights.

Data, not code: the config checks `router.auto.weights` against these names when gpufleet.yaml loads, and the
classifier scores with them, so the table lives below both.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Signal name → default weight. The order is the order of TierDecision.signals. Override with
# `router.auto.weights.<name>`; a weight of 0 switches a signal off.
SIGNALS: Mapping[str, float] = MappingProxyType(
    {
        "long_prompt": 2.0,  # current turn ≥ 1,500 chars (~400 tokens)
        "very_long_prompt": 2.0,  # current turn ≥ 12,000 chars (~3k tokens); adds to long_prompt
        "code": 2.0,  # code in the turn: a ``` fence, ≥ 2 code-looking lines, or a traceback / compiler error
        "code_task": 2.0,  # asks for code without showing any: "write a function", SQL, regex, bash, Dockerfile …
        "code_context": 2.0,  # the previous answer held a code fence and the user follows up (not just "thanks")
        "math": 2.0,  # math notation or vocabulary (equation, derivative …), or ≥ 4 numbers in < 1 KB without code
        "math_solve": 2.5,  # math, an ask to work it out (solve, evaluate …) and to show it (check, explain …)
        "sizing": 4.5,  # capacity / sizing estimate: ≥ 2 quantities with units (32B, 16k, 80 GB, 2,000 req/s)
        # and ≥ 2 capacity terms (VRAM, KV cache, context, throughput, p99, nodes, concurrent users …)
        "proof": 3.0,  # "prove", "proof", "show that", "derive", "rigorous", "justify"
        "detailed_ask": 1.0,  # a turn under 1,500 chars whose text outside code blocks is ≥ 250 chars
        "multi_step": 2.0,  # ≥ 3 list items / questions / distinct task verbs, "step by step", "and then"
        "open_task": 2.0,  # open-ended ask: explain / describe / compare / review / summarize / write a letter, plan …
        "writing_task": 2.0,  # write/draft an email, letter, poem …; rewrite/rephrase a text; extract/turn into JSON …
        "reasoning_words": 1.5,  # analysis vocabulary: trade-offs, root cause, design a, optimize, deadlock …
        "many_reasoning_words": 1.5,  # ≥ 3 distinct analysis words; adds to reasoning_words
        "tools": 1.0,  # the request offers tools (or legacy functions)
        "tool_history": 1.5,  # ≥ 2 tool results in the conversation: an agent loop
        "deep_conversation": 1.0,  # ≥ 7 user/assistant/tool messages
        "long_system": 0.5,  # system prompt ≥ 4,000 chars
        "think_hint": 2.0,  # /think, reasoning_effort high, thinking / enable_thinking true; also floors at MODERATE
        "no_think_hint": -2.0,  # /no_think, reasoning_effort low, thinking / enable_thinking false
        "brevity_hint": -1.5,  # "in one sentence", "one word", "briefly", "keep it short" (user or system)
        "short_simple": -1.0,  # current turn < 200 chars and no content signal (code … reasoning_words) fired
    }
)
