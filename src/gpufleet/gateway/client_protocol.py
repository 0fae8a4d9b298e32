"""What a client protocol (OpenAI, Anthropic Messages, OpenAI Responses, /chat) supplies to the pipeline.

Every request is served in one internal chat form (OpenAI chat/completions/embeddings bodies and answers);
a `ClientProtocol` turns that form's answers, stream chunks and errors into its own bytes. The OpenAI
protocols here are the identity: their streams take the relay's fast path (`stream_encoder()` is None).
This module is below the pipeline (the relay imports it); `gateway/edge.py` re-exports it for handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from starlette.responses import Response

from gpufleet.errors import GpufleetError
from gpufleet.gateway.errors import error_response

Kind = Literal["chat", "completion", "embedding"]  # the internal form a request is served in


class StreamEncoder(Protocol):
    """Encodes one stream's chunks in the client's protocol (one encoder per stream: it may keep state)."""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        """One chat.completion.chunk after the dialect transform, `model` already the served name; usage-only
        chunks are passed too."""
        ...

    def text_piece(self, text: str) -> bytes | None:
        """What `chunk` gives for a chunk carrying only `text` as choice 0's content, when that continues the
        text already open; None when it would open a block or item (the relay then passes the whole chunk).
        The relay's byte fast path calls it with a plain content chunk's text, decoded alone."""
        ...

    def done(self) -> bytes:
        """The upstream finished normally ([DONE], or the end of a stream that had its finish_reason)."""
        ...

    def error(self, body: dict[str, Any]) -> bytes:
        """An OpenAI error body `{"error": {...}}` mid-stream: the closing bytes of the stream."""
        ...


class ClientProtocol(Protocol):
    """How one endpoint speaks to its clients; the pipeline between is the same for all."""

    endpoint: str  # metrics label: "chat", "completion", "embedding", "messages", "responses", "persona_chat"

    def answer(self, data: dict[str, Any]) -> bytes:
        """A whole chat.completion (or completion / embedding list) dict, after the dialect → response body."""
        ...

    def stream_encoder(self) -> StreamEncoder | None:
        """A fresh encoder for one stream; None = relay OpenAI SSE as is (the fast path)."""
        ...

    def error_response(self, err: GpufleetError) -> Response:
        """The error in this protocol's own shape and status."""
        ...


_DONE = b"data: [DONE]\n\n"


class OpenAISSE:
    """OpenAI's own SSE framing as a StreamEncoder (what the fast path writes without one)."""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def text_piece(self, text: str) -> bytes | None:
        return None  # the relay passes plain chunks as bytes itself: never asked

    def done(self) -> bytes:
        return _DONE

    def error(self, body: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(body) + b"\n\n" + _DONE


@dataclass
class OpenAIProtocol:
    """/v1/chat/completions, /v1/completions, /v1/embeddings: the internal form is already the wire form."""

    endpoint: str

    def answer(self, data: dict[str, Any]) -> bytes:
        return orjson.dumps(data)

    def stream_encoder(self) -> StreamEncoder | None:
        return None

    def error_response(self, err: GpufleetError) -> Response:
        return error_response(err)


OPENAI: dict[Kind, OpenAIProtocol] = {kind: OpenAIProtocol(kind) for kind in ("chat", "completion", "embedding")}
