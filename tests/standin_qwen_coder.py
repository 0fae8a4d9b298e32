"""A STAND-IN chat-completions upstream that answers like a raw Qwen3 coder (not a real model).

It speaks only `/v1/chat/completions` and never parses anything itself, the way llama.cpp or a vLLM without
parsers serve Qwen3: its text holds `<think>…</think>` and `<tool_call>{json}</tool_call>`, which the
gateway's Qwen dialect must turn into reasoning and tool calls. Turn one: it thinks, then calls the client's
shell tool with the command the user wrote after `RUN:`. After the tool result: it thinks, then answers
`DONE: <the tool result>`. Streams are cut into 3-character chunks so tags split at every boundary.
The request's `stop` strings cut the answer as an engine's would; `names_stop` says how the finish reports the
match: "vllm" (the choice's `stop_reason`), "llamacpp" (`__verbose.stop_type`/`stopping_word`, what llama.cpp
adds when its server runs verbose) or None (finish_reason "stop" alone, as llama.cpp's OpenAI routes answer).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.standin_kit import SSE_DONE, LoopbackUvicorn, sse

SHELL_TOOLS = ("Bash", "exec_command", "shell", "bash", "local_shell")
_RUN = re.compile(r"RUN: (.+)")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def shell_call(tools: list[dict[str, Any]], command: str) -> dict[str, Any] | None:
    """A call of the client's shell tool running `command`, in the argument shape its schema asks for."""
    by_name = {tool["function"]["name"]: tool["function"] for tool in tools if tool.get("type") == "function"}
    for name in SHELL_TOOLS:
        if name in by_name:
            properties = (by_name[name].get("parameters") or {}).get("properties") or {}
            if "cmd" in properties:
                return {"name": name, "arguments": {"cmd": command}}
            if (properties.get("command") or {}).get("type") == "array":
                return {"name": name, "arguments": {"command": ["bash", "-lc", command]}}
            return {"name": name, "arguments": {"command": command, "description": "run the requested command"}}
    return None


def qwen_answer(body: dict[str, Any]) -> tuple[str, str]:
    """(raw Qwen3 text, finish_reason) for a chat request."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        result = _text(last.get("content")).strip()
        return f"<think>\nThe command finished.\n</think>\n\nDONE: {result}", "stop"
    commands = [
        m.group(1).strip()
        for message in messages
        if message.get("role") == "user"
        for m in _RUN.finditer(_text(message.get("content")))
    ]
    call = shell_call(body.get("tools") or [], commands[-1]) if commands else None
    if call is None:
        return "<think>\nNothing to run.\n</think>\n\nHello from the stand-in.", "stop"
    return (
        "<think>\nI will run the command with the shell tool.\n</think>\n\n"
        f"<tool_call>\n{orjson.dumps(call).decode()}\n</tool_call>",
        "stop",
    )


def cut_at_stop(text: str, stops: Any) -> tuple[str, str | None]:
    """`text` up to the first of the request's stop strings (as engines cut), and the string matched."""
    if isinstance(stops, str):
        stops = [stops]
    hits = [(text.find(stop), stop) for stop in stops or () if isinstance(stop, str) and stop and stop in text]
    if not hits:
        return text, None
    at, stop = min(hits)
    return text[:at], stop


def stop_fields(names_stop: str | None, matched: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields of the finishing choice, fields of the answer/last chunk) that name the matched stop string."""
    if names_stop == "vllm":
        return {"stop_reason": matched}, {}
    if names_stop == "llamacpp" and matched is not None:
        return {}, {"__verbose": {"stop_type": "word", "stopping_word": matched}}
    return {}, {}


class StandInQwenCoder:
    """Runs the stand-in on a free port in a background thread; `received` keeps every request body."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.names_stop: str | None = None  # "vllm" | "llamacpp" | None: see the module docstring
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", lambda r: Response(b'{"object":"list","data":[]}'), methods=["GET"]),
            ]
        )
        self._server = LoopbackUvicorn(app, ready_timeout_s=10, lifespan="off")
        self.port = self._server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StandInQwenCoder:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout_s=10)

    async def _chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.received.append(body)
        text, finish = qwen_answer(body)
        text, matched = cut_at_stop(text, body.get("stop"))
        choice_extra, answer_extra = stop_fields(self.names_stop, matched)
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": max(1, len(text) // 4),
            "total_tokens": 11 + max(1, len(text) // 4),
        }
        if body.get("stream"):
            return StreamingResponse(
                self._stream(text, finish, usage, body, (choice_extra, answer_extra)), media_type="text/event-stream"
            )
        answer = {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "model": "raw-qwen3",
            "choices": [
                {"index": 0, "finish_reason": finish, **choice_extra, "message": {"role": "assistant", "content": text}}
            ],
            "usage": usage,
            **answer_extra,
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _stream(
        self,
        text: str,
        finish: str,
        usage: dict[str, int],
        body: dict[str, Any],
        extra: tuple[dict[str, Any], dict[str, Any]],
    ) -> AsyncIterator[bytes]:
        choice_extra, answer_extra = extra
        base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": "raw-qwen3"}
        first = {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
        yield sse(first)
        for start in range(0, len(text), 3):
            piece = {
                **base,
                "choices": [{"index": 0, "delta": {"content": text[start : start + 3]}, "finish_reason": None}],
            }
            yield sse(piece)
            await asyncio.sleep(0)
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish, **choice_extra}], **answer_extra}
        yield sse(last)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield sse({**base, "choices": [], "usage": usage})
        yield SSE_DONE
