"""An optional `auto` tier classifier: a small model asked for the tier, as a judge (pure; the caller sends it).

The rules in classifier.py are the fast default. This one needs a chat model served by the gateway itself —
e.g. the embedded Qwen2.5-Coder-1.5B — and costs one short `/v1/chat/completions` call per request:
`judge_body` builds that call, `parse_judgement` reads its answer (None: fall back to the rules). Accuracy and
cost: docs/router-auto.md.

The answer is constrained with `response_format` json_schema (an enum of the three tiers). It is the one form
every engine behind the gateway takes: llama.cpp compiles it into a grammar, vLLM into guided decoding, and for
the others the gateway asks for the JSON in the system prompt and validates it (dialects/structured.py).

    >>> body = judge_body({"messages": [{"role": "user", "content": "hi"}]}, "judge")
    >>> body["model"], body["temperature"], body["response_format"]["json_schema"]["schema"]["enum"]
    ('judge', 0, ['routine', 'moderate', 'complex'])
    >>> parse_judgement('"complex"'), parse_judgement("I am not sure")
    (<Tier.COMPLEX: 'complex'>, None)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gpufleet.router.classifier import Tier
from gpufleet.router.knn_classifier import request_text

__all__ = ["EXAMPLES", "JUDGE_PROMPT", "TIER_SCHEMA", "judge_body", "parse_judgement"]

# A bare JSON string from an enum: 3-4 tokens to decode (an object {"tier": …} costs twice that).
TIER_SCHEMA: dict[str, Any] = {"type": "string", "enum": [t.value for t in Tier]}

# The tiers as docs/router-auto.md defines them, told as the size of the work the answer takes.
JUDGE_PROMPT = """\
You route requests to one of three AI models. You do not answer the request; you only say which model should.

"routine": the small fast model. The answer is a word, a fact or a sentence or two, with no real work behind \
it: greetings and small talk, a definition, a date, a conversion, translating or fixing one sentence, a joke or \
a title, a yes/no question, one simple tool action (weather, timer, calendar).
"moderate": a mid-size model. The answer is one piece of real work: code (a function, script, SQL query, regex, \
shell command, config, a bug fix), an explanation of a concept or of code, an email, letter or cover letter, a \
rewritten paragraph, a summary or translation of a text, data extracted as JSON, a textbook math problem, a \
short comparison or piece of advice.
"complex": the big model with thinking. The answer needs careful reasoning over many steps: a proof or a \
derivation, hard math to justify, system design and architecture with trade-offs, a capacity or sizing \
estimate, the root cause of an incident, a security review, a large implementation or refactor, a multi-part \
analysis, strategy or long report.

A long pasted text or a snippet of code does not by itself make a request complex: summarizing, translating or \
answering a question about it is moderate. Most coding questions, derivatives and word problems are moderate. \
Choose complex only when the request itself asks for deep or multi-step reasoning.

Reply with the tier only: "routine", "moderate" or "complex"."""

# Worked examples, sent as earlier turns (small models copy a shown exchange better than they follow a list):
# (text shown, the request's whole length or None for the text's own, tier). All are from the `tune` split of
# tests/data/tier_prompts.yaml, never from `holdout3`, the split the benchmark reports as the honest figure.
EXAMPLES: tuple[tuple[str, int | None, Tier], ...] = (
    ("hi", None, Tier.ROUTINE),
    (
        "Write a Python function that checks whether a string is a palindrome, ignoring case and punctuation.",
        None,
        Tier.MODERATE,
    ),
    ("Prove that there are infinitely many primes of the form 4k + 3.", None, Tier.COMPLEX),
    ("Convert 10 km to miles.", None, Tier.ROUTINE),
    ("Explain how TCP congestion control works, including slow start and congestion avoidance.", None, Tier.MODERATE),
    (
        "Design a rate limiter for a multi-region API gateway handling 2M requests/s. It must enforce per-tenant "
        "limits globally with at most 5% overshoot. Compare the trade-offs.",
        None,
        Tier.COMPLEX,
    ),
    ("Translate to Spanish: 'The meeting has been moved to Thursday afternoon.'", None, Tier.ROUTINE),
    ("If I roll two dice, what is the probability that the sum is at least 9?", None, Tier.MODERATE),
    (
        "Summarize this article in five bullet points:\n\nRIVERTON — The city's water utility will raise residential "
        "rates by 7.5 percent starting in July, the\ncouncil decided on Tuesday after a three-hour meeting",
        2462,
        Tier.MODERATE,
    ),
)

_TIER_WORD = re.compile(r"\b(" + "|".join(t.value for t in Tier) + r")\b")


def _framed(text: str, length: int, notes: str = "") -> str:
    """The user turn that shows the judge one request: its size (and context), then the text between marks."""
    size = f"{length:,} characters, the first {len(text):,} shown" if length > len(text) else f"{length:,} characters"
    return f"Request ({size}{notes}):\n<<<\n{text}\n>>>"


def _notes(payload: Mapping[str, Any]) -> str:
    """What the judge cannot see in the shown turn: the conversation it ends and the tools it offers."""
    notes = ""
    messages = payload.get("messages")
    if isinstance(messages, list) and len(messages) > 1:
        tool_results = sum(isinstance(m, dict) and m.get("role") == "tool" for m in messages)
        notes += f"; message {len(messages)} of a conversation"
        notes += f" with {tool_results} tool results" if tool_results else ""
    if payload.get("tools") or payload.get("functions"):
        notes += "; tools offered"
    return notes


def judge_body(
    payload: Mapping[str, Any], model: str, *, max_chars: int = 600, seed: int = 0, max_tokens: int = 8
) -> dict[str, Any]:
    """The OpenAI chat body that asks `model` for the tier of the request `payload` (a chat or completions body).

    The judge sees the request's last user turn (its first `max_chars` characters) and a line saying how long it
    is and whether it ends a conversation or offers tools, after the system prompt and the worked examples (a
    fixed prefix, which llama.cpp and vLLM keep cached). Greedy, seeded, a few tokens, thinking off.
    """
    messages: list[dict[str, str]] = [{"role": "system", "content": JUDGE_PROMPT}]
    for text, length, tier in EXAMPLES:
        messages += [
            {"role": "user", "content": _framed(text, length or len(text))},
            {"role": "assistant", "content": json.dumps(tier.value)},
        ]
    whole = request_text(payload, max_chars=None)
    messages.append({"role": "user", "content": _framed(whole[:max_chars], len(whole), _notes(payload))})
    return {
        "model": model,
        "messages": messages,
        "temperature": 0,
        "seed": seed,
        "max_tokens": max_tokens,
        "response_format": {"type": "json_schema", "json_schema": {"name": "tier", "schema": TIER_SCHEMA}},
        # Qwen3 hybrids think by default; a judge must answer at once. Other templates ignore the variable.
        "chat_template_kwargs": {"enable_thinking": False},
    }


def parse_judgement(content: str) -> Tier | None:
    """The tier a judge answered: JSON `{"tier": …}`, a JSON string, or a bare word, in any case and quoting.

    None when the answer names no tier or more than one (the caller then falls back to the rules).
    """
    text = content.strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        doc = doc.get("tier")
    if isinstance(doc, str):
        text = doc
    found = set(_TIER_WORD.findall(text.lower()))
    return Tier(found.pop()) if len(found) == 1 else None
