"""Serving a request's work while watching its client: a client that leaves cancels the work.

Cancelling closes the upstream connection, which tells the engine to stop generating, as for a stream the
client leaves. A shutdown whose grace ran out cancels the work too (relay.LiveStreams.drain): the caller
tells the two apart by the result.

Under `gpufleet serve` (its protocol calls back when the connection is lost) the work runs in the handler's
own task, and the callback cancels that task: no second task per request (issue 22: creating, scheduling and
awaiting one was about 4% of a non-stream request's CPU). Under another ASGI server a second task waits on
`receive()` for the disconnect, and the work runs in a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

from gpufleet.errors import GpufleetError
from gpufleet.gateway.http_limits import disconnect_watch
from gpufleet.gateway.relay import LiveStreams

T = TypeVar("T")


class Ending(enum.Enum):
    """How the work ended when it gave no answer."""

    CLIENT_LEFT = "client_left"  # the client disconnected first; the work was cancelled
    CANCELLED = "cancelled"  # the work was cancelled by someone else (the shutdown drain)


class _CancelGuard:
    """Cancels the handler's task once, for the client leaving or the drain, and remembers that it did."""

    __slots__ = ("cancelled", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.task.cancel()


async def serve_watching_client(request: Request, work: Coroutine[Any, Any, T], live: LiveStreams) -> T | Ending:
    """`work`'s answer (its GpufleetError raised), or how it was cut short. While it runs, a client that
    disconnects or the shutdown's drain (`live`) cancels it."""
    watch = disconnect_watch(request.scope)
    task = asyncio.current_task()
    if watch is None or task is None:
        return await _serve_watching_receive(request, work, live)
    if watch.lost:
        work.close()  # gone already: nothing is sent upstream
        return Ending.CLIENT_LEFT
    guard = _CancelGuard(task)
    outside = task.cancelling()  # cancellations already asked of the handler: not ours to absorb
    live.add_waiting(guard)
    watch.watch(guard.cancel)
    try:
        return await work
    except asyncio.CancelledError:
        if not guard.cancelled:
            raise  # the handler itself is cancelled (e.g. a forced shutdown)
        guard.cancelled = False  # our cancel, taken back here (the finally below must not take it back again)
        if task.uncancel() > outside:
            raise  # the handler was cancelled from outside as well
        return Ending.CLIENT_LEFT if watch.lost else Ending.CANCELLED
    finally:
        watch.watch(None)
        live.discard_waiting(guard)
        if guard.cancelled:
            task.uncancel()  # the work absorbed our cancel and answered: the count goes back


async def _serve_watching_receive(request: Request, work: Coroutine[Any, Any, T], live: LiveStreams) -> T | Ending:
    """`serve_watching_client` under another ASGI server: the work and a second task waiting on `receive()`."""

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task: asyncio.Task[T] = asyncio.ensure_future(work)
    live.add_waiting(task)
    watcher: asyncio.Future[Any] = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait([task, watcher], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()  # the handler itself is cancelled (e.g. a forced shutdown): the upstream request too
        raise
    finally:
        watcher.cancel()
        live.discard_waiting(task)
    if task.done():
        return Ending.CANCELLED if task.cancelled() else task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, GpufleetError):
        await task
    return Ending.CLIENT_LEFT
