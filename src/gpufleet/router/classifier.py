"""`model: auto`: a rule-based complexity classifier that picks ROUTINE / MODERATE / COMPLEX (pure; no I/O).

Seed 000 routes auto requests by tier (small model for ROUTINE, the big one for MODERATE/COMPLEX, thinking for
the hard ones). Each request fires a set of named signals (long prompt, code, math, a proof, a multi-part ask,
tools, a deep conversation, `/think` …); the score is the sum of their weights and two thresholds turn it into a
tier. Every rule, weight and threshold is documented in docs/router-auto.md.

    >>> clf = ComplexityClassifier(moderate_at=2.0, complex_at=4.5)
    >>> clf.classify({"messages": [{"role": "user", "content": "hi"}]}).tier
    <Tier.ROUTINE: 'routine'>

Cost is bounded: lengths are measured on the whole text, but only the first 2 KB and the last 6 KB of the current
turn (and the first 2 KB of the system prompt) are scanned, and the ask's vocabulary is read from at most 1.5 KB,
so a 100 KB prompt costs ~0.1 ms (benchmarks/classifier_cost.py, docs/router-auto.md#cost).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from gpufleet.tiers.signals import SIGNALS

__all__ = ["SIGNALS", "ComplexityClassifier", "Tier", "TierDecision"]


class Tier(StrEnum):
    """The three `auto` tiers; each maps to a model or route in `router.auto`."""

    ROUTINE = "routine"
    MODERATE = "moderate"
    COMPLEX = "complex"


@dataclass(frozen=True)
class TierDecision:
    """The chosen tier, the score that chose it, and the signals that fired (in SIGNALS order)."""

    tier: Tier
    score: float
    signals: tuple[str, ...]


LONG_PROMPT_CHARS = 1_500
VERY_LONG_PROMPT_CHARS = 12_000
LONG_SYSTEM_CHARS = 4_000
SHORT_SIMPLE_CHARS = 200
NUMBERS_AS_MATH_CHARS = 1_000
PASTED_MATERIAL_CHARS = 1_500
ASK_CHARS = 600
DETAILED_ASK_CHARS = 250
DEEP_CONVERSATION_MESSAGES = 7
SCAN_HEAD_CHARS = 2_048
SCAN_TAIL_CHARS = 6_144
SYSTEM_SCAN_CHARS = 2_048

# Speed (benchmarks/classifier_cost.py): text is lower-cased once; vocabulary is matched with set lookups on its
# words and substring checks for phrases (sre alternations of many words cost ~20x more); the remaining regexes
# are case-sensitive and only run after a cheap check says they can match. sre jumps straight to a pattern's
# leading literal, but tries a pattern that starts with `\b` or a lookbehind at every position, ~0.1 ms per KB of
# code full of `=` and `(`: such a pattern starts at its rarest literal and looks behind it (_POWER_RE), or runs
# only once a gate that starts with a literal, or a word of the ask, says it can match.
_WORD_RE = re.compile(r"\w+")
_ASCII_NON_WORD_TO_SPACE = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_")})
_THINK_RE = re.compile(r"(?<![\w/])/(no_think|think)\b")
_FENCED_BLOCK_RE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_CODE_LINE_RE = re.compile(
    r"\n[ \t]*(?:def |class |import |from [\w.]+ import |#include|function |const |let |var |func |fn |pub fn |"
    r"public |private |return\b|async def |for \(|if \(|while \(|select\b.+\bfrom\b|@\w+\(|__global__)"
)
_TRACE_RE = re.compile(r"\berror (?:ts|cs|e)\d{3,}|\n\s*file \"[^\"]+\", line \d+|\n\s+at [\w.$]+\([\w.]+:\d+\)")
_CODE_TASK_RE = re.compile(
    r"\b(?:write|implement|create|generate|give me|code|rewrite|refactor)\b[^.?!\n]{0,40}?"
    r"\b(?:function|method|class|script|program|query|regex|regexp|unit tests?|tests|api|endpoint|"
    r"dockerfile|docker-compose|makefile|interpreter|parser|compiler|kernel|cli)\b"
)
_LATEX_RE = re.compile(r"\\(?:frac|int|sum|prod|lim|sqrt|zeta|alpha|beta|theta|pi|infty|partial|mathbb)\b")
_DOLLAR_MATH_RE = re.compile(r"\$[^$\n]+\$")
_POWER_RE = re.compile(r"\^(?<=\b[a-z]\^)\d")  # x^2
# An equation, `2x + 3 = 7` or `x = -4`; each pattern runs only if its gate matches.
_OPERATION_EQUALS_RE = re.compile(r"\b\d*[a-z]\s*[-+*/]\s*\d+\s*=")
_OPERATION_EQUALS_GATE_RE = re.compile(r"[-+*/]\s*\d+\s*=")
_VARIABLE_EQUALS_RE = re.compile(r"\b[a-z]\s*=\s*[-\d]")
_VARIABLE_EQUALS_GATE_RE = re.compile(r"=\s*[-\d]")
_F_OF_X_RE = re.compile(r"(?<![a-z_])[fgh]\([a-z][^()]{0,20}\)")
_MATH_FUNCTIONS = ("sin", "cos", "tan", "log", "ln", "exp", "sqrt")
_MATH_CALL_RE = re.compile(r"\b(?:" + "|".join(_MATH_FUNCTIONS) + r")\s*\(")  # runs if one is a word of the ask
_FOR_ALL_RE = re.compile(r"\bfor all (?:real|integers|positive|[a-z]\b)")
_NUMBER_RE = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w.])")
_LIST_ITEM_RE = re.compile(r"\n[ \t]*(?:\d{1,2}[.)]|[-*•]|[a-z][.)])[ \t]+\S")
_QUESTION_RE = re.compile(r"[^?\s]\?(?=\s|$)")  # a question mark ending a word (not `??` or `a ? b : c`)
_HOW_WHY_RE = re.compile(r"\bhow (?:do|does|should|can) (?:i|we|it|they)\b|\bwhy (?:does|do|is|are|did)\b")
_WRITE_A_RE = re.compile(
    r"\b(?:write|draft|create|prepare) (?:a|an|the|me a)\b[^.?!\n]{0,30}?\b(?:letter|essay|report|plan|proposal|"
    r"article|story|speech|post|guide|tutorial|lesson)"
)
_REVIEW_VERB_RE = re.compile(r"\breview (?:this|these|my|our|the following|it)\b")
_WRITING_RE = re.compile(
    r"\b(?:write|draft|compose|prepare)\b[^.?!\n]{0,30}?\b(?:e-?mail|letter|memo|poem|description|"
    r"bio|announcement|invitation|speech|review|reply|response|post)s?\b"
)
_EXTRACT_RE = re.compile(
    r"\b(?:extract|pull out|parse|convert|turn|list|format)\b[^.?!\n]{0,60}?\b(?:json|csv|yaml|xml|table|iso)\b"
    r"|\b(?:extract|pull out)\b[^.?!\n]{0,40}?\b(?:from|all|every|each)\b"
)
_QUANTITY_RE = re.compile(
    r"(?<![\w.])\d+(?:[.,]\d+)*\s?(?:[kmbt]|gb|gib|tb|mb|ms|s|tok/s|req/s|rps|qps|requests?/s|users|nodes|gpus?|"
    r"vcpus?|cores|%|x)(?![\w])"
)
_ACK_RE = re.compile(
    r"^\W*(?:thanks?|thank you|thx|ty|ok(?:ay)?|great|perfect|cool|nice|got it|awesome|lgtm)\b[^?]{0,40}$"
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


class _Phrase(NamedTuple):
    """A phrase as _Vocabulary looks for it: first its first word (a set lookup that rules most phrases out), then
    the phrase with a space either side in the joined words."""

    first_word: str
    padded: str


def _phrases(text: str) -> tuple[_Phrase, ...]:
    """Comma-separated phrases."""
    return tuple(_Phrase(phrase.split()[0], f" {phrase.strip()} ") for phrase in text.split(","))


# Vocabulary, matched against the ask's lower-cased words (sets), word prefixes (stems) and phrases, where a
# phrase is checked in the words joined by single spaces (so "trade-offs" is the phrase "trade offs").
_CODE_LANGUAGE_WORDS = _words(
    "sql regex bash shell python javascript typescript golang rust java kotlin git docker kubernetes pytest pseudocode"
)
_CODE_LANGUAGE_PHRASES = _phrases("excel formula, json schema")
_CODE_VERBS = _words("write implement create generate give code rewrite refactor")
_MATH_WORDS = _words(
    "equation derivative integral probability polynomial matrix matrices theorem lemma prime primes divisible "
    "modulo irrational logarithm factorial variance equilibrium"
)
_MATH_STEMS = ("eigen",)
_MATH_PHRASES = _phrases(
    "expected value, standard deviation, confidence interval, p value, angular velocity, solve for"
)
_MATH_SYMBOLS = "∫∑∏√∞≤≥≠"
_PROOF_WORDS = _words("prove proof derive derivation rigorous rigorously justify justification induction")
_PROOF_PHRASES = _phrases("show that")
_STEP_PHRASES = _phrases("step by step, walk through, walk me through, and then, after that")
_STEP_WORDS = frozenset({"afterwards"})
_TASK_VERBS = _words(
    "explain compare design propose rewrite implement analyze analyse recommend estimate evaluate identify derive "
    "discuss draft compute calculate determine reconstruct describe rank find fix list include cover show decide "
    "investigate check query verify produce"
)
_OPEN_WORDS = _words(
    "explain describe compare contrast summarize summarise summary outline elaborate critique advantages design "
    "entwirf entwerfen erkläre expliquer explique concevez diseña explica"  # the same asks in German/French/Spanish
)
_OPEN_PHRASES = _phrases(
    "difference between, differences between, pros and cons, lesson plan, what went wrong, what goes wrong"
)
_WRITE_VERBS = _words("write draft create prepare")
_WRITING_VERBS = _words("write draft compose prepare")
_REWRITE_WORDS = _words("rewrite rephrase paraphrase reword proofread")
_EXTRACT_VERBS = _words("extract pull parse convert turn list format")
_REASONING_WORDS = _words(
    "tradeoff tradeoffs architecture complexity bottleneck race races deadlock deadlocks assumptions analyze analyse "
    "analysis evaluate implications strategy risk risks mitigation correctness consistent consistency rollback "
    "reasoning methodology methodological distributed consensus failover replication sharding idempotent "
    "idempotency leader availability outage outages downtime"
    " architektur kompromisse konsistenz verfügbarkeit ausfällen ausfall compromis compromisos disponibilidad"
)
_REASONING_STEMS = ("scalab", "optimi", "leak", "vulnerab", "exploit", "migrat", "recommend", "generali", "synthesi")
_REASONING_PHRASES = _phrases(
    "trade off, trade offs, root cause, root causes, failure mode, failure modes, design a, design an, design the, "
    "threat model, edge cases, in depth, think carefully"
)
_MATH_SOLVE_WORDS = _words("solve evaluate compute calculate simplify integrate differentiate")
_MATH_SOLVE_PHRASES = _phrases("find all, find the value, find x, work out, how many ways")
_SHOW_WORK_WORDS = _words("check verify explain show step steps justify why extraneous")
_CAPACITY_WORDS = _words(
    "vram gpu gpus memory context throughput latency p95 p99 qps rps nodes servers concurrent users batch "
    "downtime bandwidth storage replicas"
)
_CAPACITY_PHRASES = _phrases("kv cache, requests s, tok s, tokens per second, how much, how many")
_BREVITY_WORDS = frozenset({"briefly", "tldr"})
_BREVITY_PHRASES = _phrases(
    "in one sentence, in one word, in one line, one word, one liner, in a few words, be brief, keep it short, "
    "short answer, tl dr, yes or no"
)


def _content_text(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a list of parts (images etc. are skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _window(text: str) -> str:
    """What the regexes see: all of a short text, the head and the tail of a long one."""
    if len(text) <= SCAN_HEAD_CHARS + SCAN_TAIL_CHARS:
        return text
    return text[:SCAN_HEAD_CHARS] + "\n" + text[-SCAN_TAIL_CHARS:]


def _ask(text: str, chars: int) -> str:
    """The part of a turn that asks: all of a short one; the first and last paragraphs of a long one.

    A long turn is mostly pasted material (an article, a log, a contract) with the instruction before or after
    it; its numbers, questions and vocabulary say nothing about the task, so only its ends are read for them.
    """
    if chars < PASTED_MATERIAL_CHARS:
        return text
    text = text.strip()
    # Only a paragraph break within ASK_CHARS of either end can shorten what is read, so only there is looked at.
    first = text.find("\n\n", 0, ASK_CHARS + 1)
    last = text.rfind("\n\n", max(0, len(text) - ASK_CHARS - 2))
    head = text[: first if first >= 0 else ASK_CHARS]
    tail = text[last + 2 :] if last >= 0 else text[-ASK_CHARS:]
    return head + "\n\n" + tail


def _has_fence(text: str) -> bool:
    """Whether the text holds a ``` code fence.

    A one-character `in` is a memchr, many times cheaper than scanning 8 KB for a longer string, and most text has
    no backtick at all.
    """
    return "`" in text and "```" in text


def _at_least(pattern: re.Pattern[str], text: str, n: int) -> bool:
    """Whether `pattern` matches `text` at least `n` times (stops scanning at the n-th match)."""
    return sum(1 for _ in itertools.islice(pattern.finditer(text), n)) >= n


def _text_hint(text: str) -> bool | None:
    """True for /think, False for /no_think, None for neither; the last one written wins (Qwen3's rule)."""
    if "/" not in text or "think" not in text:  # one character is a memchr, several a slower scan
        return None
    last = None
    for m in _THINK_RE.finditer(text):
        last = m
    if last is None:
        return None
    return last.group(1) == "think"


@dataclass(frozen=True)
class _Vocabulary:
    """An ask's lower-cased words as a set, and joined by single spaces (for phrases)."""

    words: frozenset[str]
    joined: str

    @classmethod
    def of(cls, text: str) -> _Vocabulary:
        # On ASCII text, mapping non-word characters to spaces and splitting gives the words \w+ finds, ~4x faster.
        tokens = text.translate(_ASCII_NON_WORD_TO_SPACE).split() if text.isascii() else _WORD_RE.findall(text)
        return cls(frozenset(tokens), " " + " ".join(tokens) + " ")

    def has_phrase(self, phrases: Iterable[_Phrase]) -> bool:
        """Whether any phrase occurs as whole words."""
        return any(p.first_word in self.words and p.padded in self.joined for p in phrases)

    def count_phrases(self, phrases: Iterable[_Phrase]) -> int:
        """How many of the phrases occur as whole words."""
        return sum(1 for p in phrases if p.first_word in self.words and p.padded in self.joined)

    def stems(self, stems: tuple[str, ...]) -> set[str]:
        """The distinct words that start with one of `stems`."""
        if not any(f" {stem}" in self.joined for stem in stems):  # the usual answer, without a pass over the words
            return set()
        return {word for word in self.words if word.startswith(stems)}


def _flag_hint(payload: Mapping[str, Any]) -> bool | None:
    """Thinking asked for (True) or refused (False) by request fields rather than text."""
    effort = payload.get("reasoning_effort")
    reasoning = payload.get("reasoning")
    if effort is None and isinstance(reasoning, Mapping):
        effort = reasoning.get("effort")
    if isinstance(effort, str):
        if effort.lower() in ("high", "xhigh"):
            return True
        if effort.lower() in ("low", "minimal", "none"):
            return False
    kwargs = payload.get("chat_template_kwargs")
    if isinstance(kwargs, Mapping):
        for key in ("enable_thinking", "thinking"):
            if isinstance(kwargs.get(key), bool):
                return bool(kwargs[key])
    thinking = payload.get("thinking")
    if isinstance(thinking, bool):
        return thinking
    if isinstance(thinking, Mapping) and isinstance(thinking.get("type"), str):
        return bool(thinking["type"] == "enabled")
    return None


@dataclass(frozen=True)
class _Request:
    """What the rules look at, pulled out of an OpenAI chat or completions body."""

    turn: str  # the last user message plus the tool results after it (completions: the prompt)
    turn_chars: int
    system: str  # the first system/developer message
    system_chars: int
    depth: int  # user/assistant/tool messages
    tool_results: int
    has_tools: bool
    prior_code: bool = False  # the message before the last user message holds a code fence


def _read_request(payload: Mapping[str, Any]) -> _Request:
    has_tools = bool(payload.get("tools") or payload.get("functions"))
    messages = payload.get("messages")
    if not isinstance(messages, list):
        prompt = payload.get("prompt")
        if isinstance(prompt, list):
            strings = [p for p in prompt if isinstance(p, str)]
            if strings:
                prompt = strings[-1]
            else:  # token ids: ~4 chars a token, nothing to read
                return _Request("", 4 * len(prompt), "", 0, 0, 0, has_tools)
        text = prompt if isinstance(prompt, str) else ""
        return _Request(_window(text).lower(), len(text), "", 0, 0, 0, has_tools)

    msgs = [m for m in messages if isinstance(m, dict)]
    system = ""
    for m in msgs:
        if m.get("role") in ("system", "developer"):
            system = _content_text(m.get("content"))
            break
    roles = [m.get("role") for m in msgs]  # searched and counted with list methods: 200 messages stay cheap
    # The turn: the last user message (the last message if none is a user's) and the tool results after it.
    last_user = len(roles) - 1 - roles[::-1].index("user") if "user" in roles else len(roles) - 1
    turn_msgs = msgs[last_user : last_user + 1] + [
        m for m, role in zip(msgs[last_user + 1 :], roles[last_user + 1 :], strict=True) if role in ("tool", "function")
    ]
    turn = "\n".join(text for m in turn_msgs if (text := _content_text(m.get("content"))))
    depth = sum(map(roles.count, ("user", "assistant", "tool", "function")))
    tool_results = roles.count("tool") + roles.count("function")
    prior = _content_text(msgs[last_user - 1].get("content")) if last_user >= 1 else ""
    return _Request(
        turn=_window(turn).lower(),
        turn_chars=len(turn),
        system=system[:SYSTEM_SCAN_CHARS].lower(),
        system_chars=len(system),
        depth=depth,
        tool_results=tool_results,
        has_tools=has_tools,
        prior_code=_has_fence(_window(prior)),
    )


_CONTENT_SIGNALS = frozenset(
    {
        "code",
        "code_task",
        "code_context",
        "math",
        "proof",
        "multi_step",
        "open_task",
        "reasoning_words",
        "long_prompt",
        "sizing",
        "writing_task",
    }
)


def _is_math(ask: str, vocab: _Vocabulary, numbers_count: bool, code: bool) -> bool:
    if vocab.words & _MATH_WORDS or vocab.stems(_MATH_STEMS) or vocab.has_phrase(_MATH_PHRASES):
        return True
    if any(symbol in ask for symbol in _MATH_SYMBOLS):
        return True
    if "\\" in ask and _LATEX_RE.search(ask):
        return True
    if "$" in ask and not code and _DOLLAR_MATH_RE.search(ask):  # `^\$[0-9]+$` in a regex question is not math
        return True
    if "^" in ask and _POWER_RE.search(ask):
        return True
    if "=" in ask and (
        (_OPERATION_EQUALS_GATE_RE.search(ask) and _OPERATION_EQUALS_RE.search(ask))
        or (_VARIABLE_EQUALS_GATE_RE.search(ask) and _VARIABLE_EQUALS_RE.search(ask))
    ):
        return True
    if any(f"{name}(" in ask for name in "fgh") and _F_OF_X_RE.search(ask):
        return True
    if not vocab.words.isdisjoint(_MATH_FUNCTIONS) and _MATH_CALL_RE.search(ask):
        return True
    if " for all " in vocab.joined and _FOR_ALL_RE.search(ask):
        return True
    return numbers_count and _at_least(_NUMBER_RE, ask, 4)


@dataclass(slots=True)  # not frozen: built once per request, and a frozen __init__ costs µs
class _Reading:
    """One request as the rules read it, with what several rules share computed once."""

    req: _Request
    text: str  # code and hints are looked for everywhere in the (bounded, lower-cased) turn …
    ask: str  # … what is asked for only in its instruction
    vocab: _Vocabulary
    words: frozenset[str]
    reasoning: int  # reasoning words, stems and phrases in the ask
    hint: bool | None  # thinking asked for (True) or refused (False)

    @classmethod
    def of(cls, req: _Request, payload: Mapping[str, Any]) -> _Reading:
        ask = _ask(req.turn, req.turn_chars)
        vocab = _Vocabulary.of(ask)
        reasoning = (
            len(vocab.words & _REASONING_WORDS)
            + len(vocab.stems(_REASONING_STEMS))
            + vocab.count_phrases(_REASONING_PHRASES)
        )
        # The last user turn's hint beats the system prompt's, which beats request flags.
        hint = _text_hint(req.turn)
        if hint is None:
            hint = _text_hint(req.system)
        if hint is None:
            hint = _flag_hint(payload)
        return cls(req, req.turn, ask, vocab, vocab.words, reasoning, hint)


def _code(r: _Reading, fired: set[str]) -> bool:
    text = r.text
    return (
        _has_fence(text)
        or "traceback (most recent call last)" in text
        or "exception in thread" in text
        or bool(("error " in text or "file " in text or "  at " in text) and _TRACE_RE.search(text))
        or text.count(";\n") + (text.count("{\n") if "{" in text else 0) >= 2  # "{": see _has_fence
        or _at_least(_CODE_LINE_RE, "\n" + text, 2)
    )


def _code_task(r: _Reading, fired: set[str]) -> bool:
    if "code" in fired:  # code in the turn covers a task about code
        return False
    words, ask = r.words, r.ask
    return bool(
        words & _CODE_LANGUAGE_WORDS
        or "c++" in ask
        or r.vocab.has_phrase(_CODE_LANGUAGE_PHRASES)
        or (words & _CODE_VERBS and _CODE_TASK_RE.search(ask))
    )


def _math(r: _Reading, fired: set[str]) -> bool:
    numbers_count = r.req.turn_chars < NUMBERS_AS_MATH_CHARS and "code" not in fired
    return bool(_is_math(r.ask, r.vocab, numbers_count=numbers_count, code=bool(fired & {"code", "code_task"})))


def _math_solve(r: _Reading, fired: set[str]) -> bool:
    words = r.words
    return "math" in fired and bool(
        (words & _MATH_SOLVE_WORDS or r.vocab.has_phrase(_MATH_SOLVE_PHRASES)) and words & _SHOW_WORK_WORDS
    )


def _sizing(r: _Reading, fired: set[str]) -> bool:
    capacity = len(r.words & _CAPACITY_WORDS) + r.vocab.count_phrases(_CAPACITY_PHRASES)
    return capacity >= 2 and _at_least(_QUANTITY_RE, r.ask, 2)


def _detailed_ask(r: _Reading, fired: set[str]) -> bool:
    ask = r.ask
    return (
        r.req.turn_chars < PASTED_MATERIAL_CHARS  # a long turn's ends may be pasted material; long_prompt covers it
        and len(ask) >= DETAILED_ASK_CHARS
        and len(_FENCED_BLOCK_RE.sub("", ask) if "```" in ask else ask) >= DETAILED_ASK_CHARS
    )


def _multi_step(r: _Reading, fired: set[str]) -> bool:
    words, ask = r.words, r.ask
    return bool(
        _at_least(_LIST_ITEM_RE, "\n" + ask, 3)
        or (ask.count("?") >= 3 and _at_least(_QUESTION_RE, ask, 3))
        or words & _STEP_WORDS
        or r.vocab.has_phrase(_STEP_PHRASES)
        or len(words & _TASK_VERBS) >= 3
    )


def _open_task(r: _Reading, fired: set[str]) -> bool:
    words, ask = r.words, r.ask
    return bool(
        words & _OPEN_WORDS
        or r.vocab.has_phrase(_OPEN_PHRASES)
        or ("review" in words and _REVIEW_VERB_RE.search(ask))
        or (words & {"how", "why"} and _HOW_WHY_RE.search(ask))
        or (words & _WRITE_VERBS and _WRITE_A_RE.search(ask))
    )


def _writing_task(r: _Reading, fired: set[str]) -> bool:
    if "open_task" in fired:  # a writing ask is one task: "write a letter" fires open_task already
        return False
    words, ask = r.words, r.ask
    return bool(
        (words & _WRITING_VERBS and _WRITING_RE.search(ask))
        or words & _REWRITE_WORDS
        or (words & _EXTRACT_VERBS and _EXTRACT_RE.search(ask))
    )


def _brevity_hint(r: _Reading, fired: set[str]) -> bool:
    if r.words & _BREVITY_WORDS or r.vocab.has_phrase(_BREVITY_PHRASES):
        return True
    system = _Vocabulary.of(r.req.system) if r.req.system else None
    return system is not None and bool(system.words & _BREVITY_WORDS or system.has_phrase(_BREVITY_PHRASES))


_Rule = Callable[[_Reading, set[str]], bool]

# The rules of docs/router-auto.md, one row per signal: (signal, fires?). A rule sees the signals of the rows above
# it (`fired`), so a row that reads another (code_task, math, math_solve, writing_task, short_simple) comes after it.
_RULES: tuple[tuple[str, _Rule], ...] = (
    ("long_prompt", lambda r, fired: r.req.turn_chars >= LONG_PROMPT_CHARS),
    ("very_long_prompt", lambda r, fired: r.req.turn_chars >= VERY_LONG_PROMPT_CHARS),
    ("code", _code),
    ("code_task", _code_task),
    ("code_context", lambda r, fired: r.req.prior_code and not _ACK_RE.search(r.ask)),
    ("math", _math),
    ("math_solve", _math_solve),
    ("sizing", _sizing),
    ("proof", lambda r, fired: bool(r.words & _PROOF_WORDS or r.vocab.has_phrase(_PROOF_PHRASES))),
    ("detailed_ask", _detailed_ask),
    ("multi_step", _multi_step),
    ("open_task", _open_task),
    ("writing_task", _writing_task),
    ("reasoning_words", lambda r, fired: r.reasoning >= 1),
    ("many_reasoning_words", lambda r, fired: r.reasoning >= 3),
    ("tools", lambda r, fired: r.req.has_tools),
    ("tool_history", lambda r, fired: r.req.tool_results >= 2),
    ("deep_conversation", lambda r, fired: r.req.depth >= DEEP_CONVERSATION_MESSAGES),
    ("long_system", lambda r, fired: r.req.system_chars >= LONG_SYSTEM_CHARS),
    ("think_hint", lambda r, fired: r.hint is True),
    ("no_think_hint", lambda r, fired: r.hint is False),
    ("brevity_hint", _brevity_hint),
    ("short_simple", lambda r, fired: r.req.turn_chars < SHORT_SIMPLE_CHARS and not (fired & _CONTENT_SIGNALS)),
)


def _fired(req: _Request, payload: Mapping[str, Any]) -> set[str]:
    """The names of the signals this request fires (the rows of `_RULES` that hold, in order)."""
    reading = _Reading.of(req, payload)
    fired: set[str] = set()
    for name, fires in _RULES:
        if fires(reading, fired):
            fired.add(name)
    return fired


class ComplexityClassifier:
    """Scores a request by the weighted signals it fires and maps the score to a tier.

    ROUTINE below `moderate_at`, MODERATE from it, COMPLEX from `complex_at`; a thinking request (think_hint)
    is never ROUTINE while think_hint's weight is positive.
    """

    def __init__(self, moderate_at: float, complex_at: float, weights: Mapping[str, float] | None = None) -> None:
        if complex_at <= moderate_at:
            raise ValueError(f"complex_at ({complex_at}) must be greater than moderate_at ({moderate_at})")
        unknown = sorted(set(weights or {}) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown signal {unknown[0]!r} in weights; known signals: {', '.join(SIGNALS)}")
        self.moderate_at = moderate_at
        self.complex_at = complex_at
        self.weights: Mapping[str, float] = MappingProxyType({**SIGNALS, **(weights or {})})

    def classify(self, payload: Mapping[str, Any]) -> TierDecision:
        """The tier for an OpenAI chat or completions request body (never raises on odd bodies)."""
        fired = _fired(_read_request(payload), payload)
        names = tuple(name for name in SIGNALS if name in fired)
        score = round(sum(self.weights[name] for name in names), 3)
        if score >= self.complex_at:
            tier = Tier.COMPLEX
        elif score >= self.moderate_at:
            tier = Tier.MODERATE
        else:
            tier = Tier.ROUTINE
        if tier is Tier.ROUTINE and "think_hint" in fired and self.weights["think_hint"] > 0:
            tier = Tier.MODERATE
        return TierDecision(tier=tier, score=score, signals=names)
