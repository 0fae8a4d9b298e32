"""Relaying OpenAI requests to an upstream engine: one JSON answer, or an SSE stream chunk by chunk.

Hot path. Each upstream network read is parsed into SSE events, each event's JSON gets the served model
name (llama.cpp puts a meaningless one there) and any dialect transform, and whatever is complete is sent
to the client at once: nothing is held back beyond an incomplete event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from gpufleet.errors import UpstreamError
from gpufleet.gateway.client_protocol import StreamEncoder
from gpufleet.gateway.errors import error_body
from gpufleet.gateway.http_limits import disconnect_watch
from gpufleet.gateway.stream_resume import ResumeTrail
from gpufleet.gateway.upstream_http import ConnectFailed, ConnectionDropped, HttpPool, is_lean_url
from gpufleet.redact import mask_credentials, redact_url

ChunkTransform = Callable[[dict[str, Any]], list[dict[str, Any]]]
ChunkFlush = Callable[[], list[dict[str, Any]]]


class UpstreamBody(Protocol):
    """An upstream answer's body as the relay reads it (aiohttp's StreamReader, or upstream_http's response)."""

    async def readany(self) -> bytes: ...

    def iter_any(self) -> AsyncIterator[bytes]: ...


class UpstreamResponse(Protocol):
    """An upstream's answer once its headers arrived: aiohttp's ClientResponse (https://, credentials in the URL)
    or upstream_http's LeanResponse (plain http://, the hot path). Body reads raise aiohttp.ClientError or
    TimeoutError when the body breaks off."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content_type(self) -> str: ...

    @property
    def content(self) -> UpstreamBody: ...

    async def read(self) -> bytes: ...

    def release(self) -> Any: ...

    def close(self) -> None: ...


# Asked when a stream breaks: the next upstream's response and the client bytes it already gave, or None.
Resumer = Callable[[ResumeTrail, str], Awaitable[tuple[UpstreamResponse, bytes] | None]]

_DONE = b"data: [DONE]\n\n"
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx in front must not buffer the stream either
]


class BrokenStream(Exception):
    """The upstream's stream cannot be relayed further (malformed chunk, oversized event, cut mid-event)."""


class UpstreamDropped(UpstreamError):
    """The connection dropped after the request was sent; `reused`: it was a kept-alive connection."""

    def __init__(self, message: str, *, reused: bool) -> None:
        super().__init__(message, retryable=False)
        self.reused = reused


class UpstreamClient:
    """A pooled HTTP client for engines and remote upstreams.

    Plain http:// POSTs (local engines, http remotes: the hot path) go through upstream_http's lean client;
    https://, URLs with credentials and the health probes through aiohttp."""

    def __init__(self, read_timeout_s: float, connect_timeout_s: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}  # per remote `timeout_s`: built once, not per request
        self._session: aiohttp.ClientSession | None = None
        self._read_timeout_s = read_timeout_s
        self._lean = HttpPool(connect_timeout_s)
        self._header_lines: dict[str | None, bytes] = {}  # per api key: built once, not per request

    async def start(self) -> None:
        # limit=0: no client-side cap on concurrent upstream connections (the engine does its own batching).
        connector = ReuseTrackingConnector(limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False)

    async def close(self) -> None:
        await self._lean.close()
        if self._session is not None:
            await self._session.close()

    def _read_timeout(self, timeout_s: float | None) -> aiohttp.ClientTimeout:
        if timeout_s is None:
            return self._timeout
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.sock_connect, sock_read=timeout_s)
            self._timeouts[timeout_s] = timeout
        return timeout

    async def post(
        self, url: str, body: bytes, *, api_key: str | None, timeout_s: float | None = None
    ) -> UpstreamResponse:
        """POST `body` and return the response once its headers arrived.

        UpstreamError when there is no answer: `retryable` when the request provably did not reach the
        upstream (connection refused, or a timeout before the answer's headers); UpstreamDropped when the
        connection dropped after the request was sent (the upstream may be running it), saying whether it was
        a reused keep-alive connection (llama.cpp closes idle ones: 7-13% of back-to-back streams). It is not
        sent again here: that is the fallback loop's decision, and counts as an attempt (router/fallback.py).
        """
        assert self._session is not None, "UpstreamClient.start() was not called"
        if is_lean_url(url):
            return await self._post_lean(url, body, api_key, timeout_s)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        attempt = _Attempt()
        token = _ATTEMPT.set(attempt)
        try:
            return await self._session.post(url, data=body, headers=headers, timeout=self._read_timeout(timeout_s))
        except TimeoutError:
            raise UpstreamError(f"upstream {redact_url(url)} did not answer in time", status_code=504) from None
        except aiohttp.ClientConnectorError as err:
            raise UpstreamError(f"cannot connect to upstream {redact_url(url)}: {err.os_error or err}") from None
        except aiohttp.ClientError as err:
            raise UpstreamDropped(
                f"upstream {redact_url(url)} dropped the connection after the request was sent: "
                f"{err or type(err).__name__}",
                reused=attempt.reused,
            ) from None
        finally:
            _ATTEMPT.reset(token)

    async def _post_lean(self, url: str, body: bytes, api_key: str | None, timeout_s: float | None) -> UpstreamResponse:
        lines = self._header_lines.get(api_key)
        if lines is None:
            auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
            lines = self._header_lines[api_key] = f"Content-Type: application/json\r\n{auth}".encode("latin-1")
        read_timeout_s = self._read_timeout_s if timeout_s is None else timeout_s
        try:
            return await self._lean.post(url, body, headers=lines, read_timeout_s=read_timeout_s)
        except TimeoutError:
            raise UpstreamError(f"upstream {redact_url(url)} did not answer in time", status_code=504) from None
        except ConnectFailed as err:
            raise UpstreamError(f"cannot connect to upstream {redact_url(url)}: {err}") from None
        except ConnectionDropped as err:
            raise UpstreamDropped(
                f"upstream {redact_url(url)} dropped the connection after the request was sent: {err}",
                reused=err.reused,
            ) from None

    async def probe(self, target: Any, timeout_s: float = 3.0) -> bool:
        """True when a remote target answers `GET {base_url}/models` with 200 (router health probes)."""
        assert self._session is not None
        remote = target.remote
        headers = {"Authorization": f"Bearer {remote.api_key}"} if remote.api_key else {}
        try:
            async with self._session.get(
                remote.base_url + "/models", headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


@dataclass
class _Attempt:
    """One POST: whether it went out on a kept-alive (reused) connection."""

    reused: bool = False


# The POST in progress in this task. `ReuseTrackingConnector.connect` runs inside `session.post`, in the same task
# and so in the same context: it marks this object.
_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("gpufleet_upstream_attempt", default=None)


class ReuseTrackingConnector(aiohttp.TCPConnector):
    """A TCPConnector that tells `UpstreamClient.post` whether its request went out on a pooled connection.

    aiohttp reports reuse only through its tracing signals, and any trace config makes every request send all of
    them (request start, headers sent, chunk sent, end, connection reuse...): in a profile of non-stream load
    that cost about 5% of the gateway's CPU. Remembering which connections were handed out before costs a set
    lookup.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handed_out: weakref.WeakSet[Any] = weakref.WeakSet()  # a closed connection's protocol drops out

    async def connect(self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout) -> Connection:
        conn = await super().connect(req, traces, timeout)
        attempt = _ATTEMPT.get()
        protocol = conn.protocol
        if attempt is not None and protocol is not None:
            attempt.reused = protocol in self._handed_out
            self._handed_out.add(protocol)
        return conn


@dataclass
class StreamStats:
    """What the relay learned from a stream (for metrics)."""

    started: float
    first_token_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    chunks: int = 0
    error: str | None = None
    shut_down: bool = False  # cut by the gateway's shutdown (server.shutdown_grace_s ran out), not the upstream


@dataclass
class SSERewriter:
    """Parses upstream SSE bytes into events and re-emits them rewritten (model name, transforms, usage).

    Built whole, once per stream: the dialect's hooks (`transform`, `flush`, `stop_upstream`) and the client
    protocol's `encoder` (None: OpenAI SSE, written here directly) are constructor arguments.
    """

    served_model: str
    client_wants_usage: bool
    stats: StreamStats
    transform: ChunkTransform | None = None
    flush: ChunkFlush | None = None
    stop_upstream: Callable[[], bool] | None = None  # True: nothing more the upstream sends will be relayed
    encoder: StreamEncoder | None = None
    plain_transform: bool = False  # `transform` passes a one-choice, non-empty text content chunk on unchanged
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    trail: ResumeTrail | None = None  # set when a broken stream may continue on another replica (stream_resume.py)
    failure: str | None = None  # set when the stream cannot be relayed further; the relay then ends it
    _buffer: bytes = b""
    _done_sent: bool = False
    _finished: bool = False  # a choice carried a finish_reason: the answer is complete even without [DONE]
    _pending_usage: dict[str, Any] | None = field(default=None)
    _served_model_json: bytes | None = None  # the served name as a JSON string's inside, for the fast path
    _shape: _Shape | None = None  # the fast path's first plain chunk around its text (see _chunk_shape)

    def feed(self, data: bytes) -> bytes:
        """Bytes from the network in; complete rewritten events out (possibly b"")."""
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        pos = 0
        while self.failure is None and not self._done_sent:
            end = buffer.find(b"\n\n", pos)
            if end < 0:
                break
            start, pos = pos, end + 2
            shape = self._shape
            if shape is not None and end - start > shape[0] and self.trail is None:
                # A plain content chunk shaped as the first one the fast path took: only its text differs.
                _, head, tail, out_head, out_tail = shape
                if buffer.startswith(head, start) and buffer.endswith(tail, start, end):
                    text = buffer[start + len(head) : end - len(tail)]
                    if b'"' not in text and b"\n" not in text and text not in _UNSAFE_TEXT and text[:9] != b"reasoning":
                        self.stats.chunks += 1
                        out += (out_head, text, out_tail)
                        continue
            self._event(buffer[start:end], out)
        buffer = buffer[pos:]
        if len(buffer) > self.max_event_bytes and self.failure is None:
            # An event (or line) that never ends would be buffered forever: give up on the stream.
            self.failure = f"an upstream event exceeds {self.max_event_bytes} bytes (server.max_upstream_event_bytes)"
        self._buffer = b"" if self.failure is not None or self._done_sent else buffer
        return b"".join(out)

    def restart(self) -> None:
        """Forget the broken upstream's unfinished event: the next bytes come from the upstream that continues it."""
        self._buffer = b""
        self.failure = None

    @property
    def done_sent(self) -> bool:
        """True once the stream's end (`data: [DONE]`, or the upstream's error event) went to the client."""
        return self._done_sent

    def wants_no_more(self) -> bool:
        """True once nothing more the upstream sends would be relayed (the end was sent, or the transform's
        `stop_upstream`, e.g. the reasoning cap)."""
        return self._done_sent or (self.stop_upstream is not None and self.stop_upstream())

    def close(self) -> bytes:
        """End of upstream stream: flush what the transform held back and send the end, or set `failure`
        when the stream ended before the answer did (no [DONE] and no finish_reason: issue 21)."""
        out: list[bytes] = []
        if self._done_sent:
            return b""
        if self._buffer.strip():
            # SSE: an event not terminated by a blank line at EOF is incomplete and must be dropped. The
            # upstream broke off mid-event (a close-delimited stream has no framing to notice it otherwise).
            self._buffer = b""
            self.failure = "the upstream stream ended in the middle of an event"
            return b""
        if self.stats.chunks == 0:
            # Not one event and no [DONE]: a body that is not an event stream (an HTML page under an SSE
            # content type). A bare [DONE] would look like a complete, empty answer.
            self.failure = "the upstream stream ended without sending any event"
            return b""
        if not self._finished and not (self.stop_upstream is not None and self.stop_upstream()):
            # A close-delimited stream cut between events looks complete to the SSE framing: only the
            # missing finish_reason and [DONE] tell.
            self.failure = "the upstream stream ended without a finish_reason or data: [DONE]"
            return b""
        self._finish(out)
        return b"".join(out)

    def error_tail(self, body: dict[str, Any]) -> bytes:
        """The closing bytes for an error `body` (OpenAI's error envelope) in the client's protocol."""
        self._done_sent = True
        if self.encoder is not None:
            return self.encoder.error(body)
        return b"data: " + orjson.dumps(body) + b"\n\n" + _DONE

    def _finish(self, out: list[bytes]) -> None:
        if self.flush is not None:
            for chunk in self.flush():
                self._emit(chunk, out)
        if self._pending_usage is not None:
            self._emit(self._pending_usage, out)
            self._pending_usage = None
        out.append(_DONE if self.encoder is None else self.encoder.done())
        self._done_sent = True

    def _event(self, event: bytes, out: list[bytes]) -> None:
        if event.startswith(b"data: ") and b"\n" not in event and self._relay_as_is(event[6:], out):
            return
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # comments / keep-alives / event names: nothing a client needs
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self._finish(out)
                return
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.failure = f"malformed upstream chunk (not JSON): {payload[:100]!r}"
                return
            problem = chunk_problem(chunk) if isinstance(chunk, dict) else "not a JSON object"
            if problem is not None:
                self.failure = f"malformed upstream chunk: {problem}"
                return
            self._chunk(chunk, out)
            if self._done_sent:
                return

    def _relay_as_is(self, payload: bytes, out: list[bytes]) -> bool:
        """The fast path for a plain content chunk: relayed as the upstream's bytes, not parsed, with the served
        model name spliced in, when nothing needs the chunk rewritten (no dialect beyond a passthrough plan's,
        which leaves text content as it is; no resume trail; no client protocol encoder) and it carries nothing
        the relay reads: its bytes show one choice with a null
        finish_reason, no usage, no error, and the first token was seen already. The relay reads no other field,
        so it checks none (chunk_problem checks only what it reads). False: for the full path to handle."""
        if self.trail is not None or self.stats.first_token_at is None:
            return False  # (the first token's time is read from the parsed chunk)
        # A key's quotes cannot occur inside a JSON string (they would be escaped): these byte tests see keys
        # (or, at worst, a string value equal to the name, which only sends the chunk down the full path).
        if (
            not payload.startswith(b"{")
            or not payload.endswith(b"}")
            or b'"usage"' in payload
            or b'"error"' in payload
            or payload.count(b'"finish_reason"') != 1
            or b'"finish_reason":null' not in payload
        ):
            return False
        if self.transform is not None and not (
            self.plain_transform
            and b'"reasoning' not in payload
            and b'"tool_calls"' not in payload
            and b'"content":"' in payload
            and b'"content":""' not in payload
        ):
            return False  # a dialect's chunk, or one even a passthrough plan rewrites (reasoning names mirrored)
        if self.encoder is not None:
            return self._encode_as_text(payload, out)
        relayed = self._with_served_model(payload)
        if relayed is None:
            return False
        self.stats.chunks += 1
        out.append(b"data: " + relayed + b"\n\n")
        if self._shape is None:
            self._shape = _chunk_shape(payload, relayed)
        return True

    def _encode_as_text(self, payload: bytes, out: list[bytes]) -> bool:
        """The fast path under a client protocol encoder (Messages, Responses): a plain content chunk's text is
        decoded alone and handed to the encoder, which writes its delta when the text block is open already.
        The encoders read more than the relay does (a stop string llama.cpp names, choice 0 only), so a chunk
        that says anything of the kind goes to the full path."""
        assert self.encoder is not None
        if (
            b'"stop' in payload
            or b"__verbose" in payload
            or b'"tool_calls"' in payload
            or b'"reasoning' in payload
            or payload.count(b'"index":') != 1
        ):
            return False
        if b'"index":0,' not in payload and b'"index":0}' not in payload:
            return False
        text = _plain_content(payload)
        if text is None:
            return False
        piece = self.encoder.text_piece(text)
        if piece is None:
            return False
        self.stats.chunks += 1
        out.append(piece)
        return True

    def _with_served_model(self, payload: bytes) -> bytes | None:
        """`payload` with its top-level `model` string set to the served name, spliced in bytes; None when the
        splice is not certain (the key absent or repeated, its value not a plain string)."""
        if payload.count(b'"model":') != 1:
            return None
        start = payload.find(b'"model":"') + 9
        end = payload.find(b'"', start) if start >= 9 else -1
        if end < 0 or b"\\" in payload[start:end]:
            return None
        if self._served_model_json is None:
            self._served_model_json = orjson.dumps(self.served_model)[1:-1]
        return payload[:start] + self._served_model_json + payload[end:]

    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        self.stats.chunks += 1
        if "error" in chunk:
            # The upstream's own error event ends the stream, in the documented shape (string type and code).
            body = normalized_error(chunk["error"])
            self.stats.error = str(body["error"]["message"])[:200]
            out.append(self.error_tail(body))
            return
        trail = self.trail
        if trail is not None:
            if trail.resumes and trail.splice(chunk) is None:
                return
            trail.feed(chunk)  # the upstream's own text, before the dialect: what a continuation replays
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.stats.completion_tokens = int(usage.get("completion_tokens") or 0)
            self.stats.reasoning_tokens = reasoning_tokens(usage)
        for choice in chunk.get("choices") or ():
            if self.stats.first_token_at is None and _has_token(choice):
                self.stats.first_token_at = time.perf_counter()
            if choice.get("finish_reason") is not None:
                self._finished = True
        chunks = self.transform(chunk) if self.transform is not None else [chunk]
        for item in chunks:
            if not item.get("choices") and isinstance(item.get("usage"), dict):
                # The usage-only chunk comes after the last choice: hold it until the transform flushed.
                if self.client_wants_usage:
                    self._pending_usage = item
                continue
            if not self.client_wants_usage:
                item.pop("usage", None)
            self._emit(item, out)

    def _emit(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        chunk["model"] = self.served_model
        if self.encoder is None:
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        else:
            out.append(self.encoder.chunk(chunk))


# (minimum event length, event head, event tail, client head, client tail): see _chunk_shape.
_Shape = tuple[int, bytes, bytes, bytes, bytes]
# Texts that, between a head ending in `"content":"` and a tail starting with `"`, would complete a key the fast
# path's byte tests look for (`"usage"`, `"model":`, `"content":""`, `"reasoning...`): such chunks take them.
_UNSAFE_TEXT = frozenset((b"", b":", b"usage", b"error", b"finish_reason", b"tool_calls", b"content", b"model"))


def _chunk_shape(payload: bytes, relayed: bytes) -> _Shape | None:
    """The shape of a chunk the fast path relayed: its event's bytes before its `"content":"` text and from the
    text's closing quote on, and the client's (the served model spliced in). An engine's plain content chunks
    differ only in that text, so `feed` relays the next ones with two byte comparisons: a text without a quote
    or a newline (nor one of _UNSAFE_TEXT) leaves every byte test of `_relay_as_is` as it was for this chunk,
    so it would have taken the same path to the same bytes. None: the chunk has no such shape (the model name
    must come before the text)."""
    key = payload.find(b'"content":"')
    model = payload.find(b'"model":"')
    if key < 0 or not 0 <= model < key or b'"reasoning' in payload or b'"tool_calls"' in payload:
        return None
    start = key + 11
    end = payload.find(b'"', start)
    if end < 0 or payload[start:end] in _UNSAFE_TEXT or payload[start : start + 9] == b"reasoning":
        return None
    head, tail = b"data: " + payload[:start], payload[end:]
    out_head = b"data: " + relayed[: len(relayed) - len(payload) + start]
    return len(head) + len(tail) - 1, head, tail, out_head, tail + b"\n\n"


def _plain_content(payload: bytes) -> str | None:
    """The one `"content":"..."` string of a chunk's bytes, decoded alone; None when the key is not there once.

    A key's quotes cannot occur inside a JSON string (they would be escaped), so the match is the key; its
    string ends at the first quote not escaped by an odd run of backslashes."""
    key = b'"content":"'
    start = payload.find(key)
    if start < 0 or payload.find(key, start + 1) >= 0:
        return None
    opening = start + len(key) - 1
    end = payload.find(b'"', opening + 1)
    while end >= 0:
        backslashes = 0
        while payload[end - 1 - backslashes] == 0x5C:  # a backslash
            backslashes += 1
        if backslashes % 2 == 0:
            try:
                text = orjson.loads(payload[opening : end + 1])
            except orjson.JSONDecodeError:
                return None  # (a bad escape: the full path says what is wrong with the chunk)
            return text if isinstance(text, str) else None
        end = payload.find(b'"', end + 1)
    return None


def _has_token(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    return bool(
        delta.get("content")
        or delta.get("reasoning_content")
        or delta.get("reasoning")
        or delta.get("tool_calls")
        or choice.get("text")
    )


def normalized_error(error: Any) -> dict[str, Any]:
    """An upstream's error event (`{"message": "boom", "code": 500}`, a bare string...) in the documented
    error shape: the upstream's message kept, `type` and `code` strings."""
    fields = error if isinstance(error, dict) else {"message": error}
    message = fields.get("message")
    type_ = fields.get("type")
    code = fields.get("code")
    param = fields.get("param")
    if isinstance(code, int) and not isinstance(code, bool):
        code = f"upstream_{code}"
    return {
        "error": {
            "message": message if isinstance(message, str) else str(message if message is not None else error)[:500],
            "type": type_ if isinstance(type_, str) else "server_error",
            "param": param if isinstance(param, str) else None,
            "code": code if isinstance(code, str) else "upstream_error",
        }
    }


def reasoning_tokens(usage: dict[str, Any]) -> int:
    """`usage.completion_tokens_details.reasoning_tokens` (OpenAI's field; vLLM may leave it out): 0 if absent."""
    details = usage.get("completion_tokens_details")
    value = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def chunk_problem(chunk: dict[str, Any]) -> str | None:
    """What is wrong with an upstream chunk or answer the relay reads, or None (cheap: type checks only).

    Only the fields the gateway itself reads are checked: `choices` (a list of objects) and the `usage`
    token counts (integers). Anything else is the client's to interpret.
    """
    choices = chunk.get("choices")
    if choices is not None:
        if not isinstance(choices, list):
            return "choices is not a list"
        for index, choice in enumerate(choices):
            if not isinstance(choice, dict):
                return f"choices[{index}] is not an object"
            delta = choice.get("delta")
            if delta is not None and not isinstance(delta, dict):
                return f"choices[{index}].delta is not an object"
            message = choice.get("message")
            if message is not None and not isinstance(message, dict):
                return f"choices[{index}].message is not an object"
    usage = chunk.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            return "usage is not an object"
        for key in ("prompt_tokens", "completion_tokens"):
            value = usage.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                return f"usage.{key} is not an integer: {str(value)[:40]!r}"
    return None


class Cancellable(Protocol):
    """What a shutdown's drain cancels: a task, or a request's own cancel guard (gateway/client_watch.py)."""

    def cancel(self) -> object: ...


class LiveStreams:
    """The streams being relayed now and the requests still waiting for their first byte, so that a
    shutting-down gateway can end them cleanly (SIGTERM drain: an error event, or 503 before any byte)."""

    def __init__(self) -> None:
        self._streams: set[StreamRelayResponse] = set()
        self._waiting: set[Cancellable] = set()
        self.shutting_down: str | None = None  # the reason, once the grace ran out

    def __len__(self) -> int:
        return len(self._streams) + len(self._waiting)

    def add(self, stream: StreamRelayResponse) -> None:
        self._streams.add(stream)

    def discard(self, stream: StreamRelayResponse) -> None:
        self._streams.discard(stream)

    def add_waiting(self, work: Cancellable) -> None:
        """A request with nothing sent yet (queued for an engine, waiting for its first byte), until
        `discard_waiting`; the drain calls its `cancel()`."""
        self._waiting.add(work)

    def discard_waiting(self, work: Cancellable) -> None:
        self._waiting.discard(work)

    async def drain(self, grace_s: float) -> None:
        """Let requests run `grace_s`, then end the rest: streams with an error event and [DONE], requests
        with nothing sent yet with 503 (their handlers see `shutting_down` set)."""
        await asyncio.sleep(grace_s)
        self.shutting_down = (
            f"the gateway is shutting down: this request did not finish within server.shutdown_grace_s ({grace_s:g} s)"
        )
        for work in list(self._waiting):
            work.cancel()
        for stream in list(self._streams):
            stream.abort(self.shutting_down)


class StreamRelayResponse:
    """An ASGI response that relays an upstream SSE stream and cancels it when the client goes away.

    `first` is what the rewriter already made of the stream's first bytes (read before answering, so that a
    target that fails before the client got anything can be skipped).
    """

    def __init__(
        self,
        upstream: UpstreamResponse,
        rewriter: SSERewriter,
        *,
        headers: list[tuple[bytes, bytes]],
        on_close: Callable[[StreamStats, bool], Any],
        first: bytes = b"",
        live: LiveStreams | None = None,
        resume: Resumer | None = None,
        stall_s: float | None = None,
    ) -> None:
        self.upstream = upstream
        self.first = first
        self.rewriter = rewriter
        self.headers = _SSE_HEADERS + headers
        self.on_close = on_close
        self.live = live
        self.resume = resume  # continues a broken stream on another replica (pipeline.py), if the route has one
        self.stall_s = stall_s  # router.stream_stall_timeout_s: silence after the first byte is a break
        self._started = False  # http.response.start was sent
        self._aborted: str | None = None
        self._task: asyncio.Future[None] | None = None

    def abort(self, message: str) -> None:
        """End the stream now with an error event and [DONE] (the gateway is shutting down)."""
        self._aborted = message
        if self._task is not None:
            self._task.cancel()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        stream = self._task = asyncio.ensure_future(self._stream(send))
        # gpufleet's own server calls back when the connection is lost: no watcher task per stream then.
        watch = disconnect_watch(scope)
        watcher = asyncio.ensure_future(self._watch_disconnect(receive, stream)) if watch is None else None
        if watch is not None:
            watch.watch(stream.cancel)
        if self.live is not None:
            self.live.add(self)
        disconnected = False
        try:
            await stream
        except asyncio.CancelledError:
            disconnected = watch.lost if watch is not None else watcher is not None and watcher.done()
            if disconnected:
                pass
            elif self._aborted is not None and self.rewriter.done_sent:
                # The answer was complete ([DONE] relayed); only the upstream's end was outstanding.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif self._aborted is not None:
                await self._end_with_error(send, self._aborted)
            else:
                raise
        except OSError:
            disconnected = True  # the client's socket is gone (ASGI spec >= 2.4 reports it on send)
        finally:
            if self.live is not None:
                self.live.discard(self)
            if watcher is not None:
                watcher.cancel()
            if watch is not None:
                watch.watch(None)
            if disconnected or not stream.done() or stream.cancelled() or self.rewriter.stats.error:
                # Closing (not releasing) the connection tells the engine to stop generating for this request.
                self.upstream.close()
            else:
                self.upstream.release()
            await _maybe_await(self.on_close(self.rewriter.stats, disconnected))

    async def _watch_disconnect(self, receive: Any, stream: asyncio.Future[None]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                stream.cancel()
                return

    async def _end_with_error(self, send: Any, message: str) -> None:
        self.rewriter.stats.error = message
        self.rewriter.stats.shut_down = True
        if not self._started:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        body = error_body(message, type_="server_error", code="gateway_shutting_down")
        await send({"type": "http.response.body", "body": self.rewriter.error_tail(body), "more_body": False})

    async def _stream(self, send: Any) -> None:
        self._started = True
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        rewriter = self.rewriter
        first = self.first
        while True:
            try:
                tail = await self._pump(send, first)
                break
            except (aiohttp.ClientError, TimeoutError, BrokenStream) as err:
                reason = mask_credentials(
                    f"upstream stream broke after {rewriter.stats.chunks} chunks: {err or type(err).__name__}"
                )
                resumed = await self._resume(reason)
                if resumed is None:
                    # Bytes already reached the client and no replica continues it: end with an error event.
                    rewriter.stats.error = reason
                    tail = rewriter.error_tail(error_body(reason, type_="server_error", code="upstream_stream_error"))
                    break
                self.upstream, first = resumed
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _pump(self, send: Any, first: bytes) -> bytes:
        """Relay the current upstream to its end; the closing bytes (raises when it breaks)."""
        rewriter = self.rewriter
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        if not rewriter.wants_no_more():
            async for data in self._reads():
                out = rewriter.feed(data)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if rewriter.failure is not None or rewriter.wants_no_more():
                    break
        if rewriter.wants_no_more() and not rewriter.done_sent:
            # e.g. the reasoning cap was hit: closing the connection makes the engine stop generating.
            self.upstream.close()
        tail = rewriter.close() if rewriter.failure is None else b""
        if rewriter.failure is not None:  # set while reading, or by close() (the stream never finished)
            raise BrokenStream(rewriter.failure)
        return tail

    def _reads(self) -> AsyncIterator[bytes]:
        """The upstream's network reads; with a stall timeout, a silence that long raises BrokenStream."""
        if self.stall_s is None:
            return self.upstream.content.iter_any()  # no timer per read on the hot path
        return self._reads_with_stall(self.stall_s)

    async def _reads_with_stall(self, stall_s: float) -> AsyncIterator[bytes]:
        while True:
            try:
                data = await asyncio.wait_for(self.upstream.content.readany(), stall_s)
            except TimeoutError:
                raise BrokenStream(
                    f"the upstream sent nothing for {stall_s:g} s (router.stream_stall_timeout_s)"
                ) from None
            if not data:
                return
            yield data

    async def _resume(self, reason: str) -> tuple[UpstreamResponse, bytes] | None:
        """The upstream that continues this stream and the client's bytes it sent first, or None."""
        if self.resume is None or self.rewriter.trail is None or self._aborted is not None:
            return None
        self.upstream.close()  # the broken one: stop it generating, if it still is
        self.rewriter.restart()
        return await self.resume(self.rewriter.trail, reason)


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        with contextlib.suppress(Exception):
            await value
