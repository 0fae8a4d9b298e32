"""The continuation of a broken stream (gateway/stream_resume.py): what is kept, what the new request asks for."""

from __future__ import annotations

from typing import Any

from gpufleet.gateway.stream_resume import ResumeTrail, resume_body


def chunk(
    content: str | None = None,
    *,
    reasoning: str | None = None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    **delta: Any,
) -> dict[str, Any]:
    d: dict[str, Any] = dict(delta)
    if content is not None:
        d["content"] = content
    if reasoning is not None:
        d["reasoning_content"] = reasoning
    out: dict[str, Any] = {
        "id": "chatcmpl-A",
        "created": 111,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }
    if usage is not None:
        out = {"id": "chatcmpl-B", "created": 222, "choices": [], "usage": usage}
    return out


def trail_of(*chunks: dict[str, Any]) -> ResumeTrail:
    trail = ResumeTrail()
    for c in chunks:
        trail.feed(c)
    return trail


def test_chat_continues_the_relayed_text_as_an_unfinished_assistant_message() -> None:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "story"}],
        "max_tokens": 200,
        "stream": True,
    }
    trail = trail_of(chunk(role="assistant"), chunk("Once"), chunk(" upon"), chunk(" a"))
    resumed = resume_body(body, "chat", trail)
    assert resumed is not None
    # The prefill stops before the last word: re-tokenized, a cut word could drift; the continuation writes " a"
    # again and the relay drops what the client already has (trail.replay).
    assert resumed["messages"][-1] == {"role": "assistant", "content": "Once upon"}
    assert trail.replay == " a"
    assert resumed["messages"][:-1] == body["messages"]
    assert resumed["continue_final_message"] is True and resumed["add_generation_prompt"] is False
    assert resumed["max_tokens"] == 198  # 200 - 3 generated + the one piece (" a") written again
    assert body["max_tokens"] == 200 and len(body["messages"]) == 1  # the original request is not touched


def test_reasoning_goes_back_inside_its_think_block() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    mid_thought = trail_of(chunk(reasoning="Let me"), chunk(reasoning=" think"))
    assert resume_body(body, "chat", mid_thought)["messages"][-1]["content"] == "<think>\nLet me think"  # type: ignore[index]
    after = trail_of(chunk(reasoning="ok"), chunk("The answer"))
    assert resume_body(body, "chat", after)["messages"][-1]["content"] == "<think>\nok\n</think>\n\nThe answer"  # type: ignore[index]


def test_raw_tool_call_text_is_replayed_for_the_dialect_to_finish() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    trail = trail_of(chunk('<think>\nhm\n</think>\n\n<tool_call>\n{"name": "sh'))
    prefill = resume_body(body, "chat", trail)["messages"][-1]["content"]  # type: ignore[index]
    assert prefill + trail.replay == '<think>\nhm\n</think>\n\n<tool_call>\n{"name": "sh'


def test_completions_append_the_relayed_text_to_the_prompt() -> None:
    body = {"model": "m", "prompt": "def add(a, b):", "max_tokens": 50}
    trail = ResumeTrail()
    for text in ("\n", "    return", " a"):
        trail.feed({"id": "cmpl-A", "choices": [{"index": 0, "text": text, "finish_reason": None}]})
    resumed = resume_body(body, "completion", trail)
    assert resumed == {"model": "m", "prompt": "def add(a, b):\n    return", "max_tokens": 48}
    assert trail.replay == " a"
    assert resume_body({**body, "prompt": [1, 2, 3]}, "completion", trail) is None


def test_what_cannot_be_continued_is_refused() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "max_tokens": 2}
    assert resume_body(body, "chat", trail_of(chunk("a"), chunk("b"))) is None  # nothing left to generate
    assert resume_body(body, "chat", trail_of(chunk("a", finish="stop"))) is None  # it had finished
    parsed_call = chunk(tool_calls=[{"index": 0, "id": "c", "function": {"name": "sh", "arguments": "{"}}])
    assert resume_body({**body, "max_tokens": 9}, "chat", trail_of(parsed_call)) is None
    assert resume_body({**body, "max_tokens": 9, "n": 2}, "chat", trail_of(chunk("a"))) is None
    two = {"id": "x", "choices": [{"index": 1, "delta": {"content": "b"}}]}
    assert resume_body({**body, "max_tokens": 9}, "chat", trail_of(two)) is None


def test_spliced_chunks_keep_the_first_streams_id_and_add_up_usage() -> None:
    trail = trail_of(chunk("a"), chunk("b"), chunk("c"))
    trail.begin_resume()
    assert trail.splice(chunk("", role="assistant")) is None  # the continuation's opening: the client had it
    spliced = trail.splice(chunk("d"))
    assert spliced is not None and spliced["id"] == "chatcmpl-A" and spliced["created"] == 111
    usage = trail.splice(chunk(usage={"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20}))
    assert usage is not None
    assert usage["usage"] == {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
