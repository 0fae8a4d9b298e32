"""Waiting for a request's answer while watching its client: a client that leaves cancels the work.

Cancelling closes the upstream connection, which tells the engine to stop generating, as for a stream the
client leaves. A shutdown whose grace ran out cancels the work too (relay.LiveStreams.drain): the caller
tells the two apart by the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import Any

from starlette.requests import Request

from gpufleet.errors import GpufleetError
from gpufleet.gateway.http_limits import disconnect_watch


class Ending(enum.Enum):
    """How the wait for the work ended."""

    DONE = "done"  # the work finished (its result or its GpufleetError is in the future)
    CLIENT_LEFT = "client_left"  # the client disconnected first; the work was cancelled
    CANCELLED = "cancelled"  # the work was cancelled by someone else (the shutdown drain)


async def wait_watching_client(request: Request, work: asyncio.Future[Any]) -> Ending:
    """Wait for `work`; cancel it when the client disconnects first."""
    watch = disconnect_watch(request.scope)
    if watch is None:
        return await _wait_watching_receive(request, work)
    # The gateway's own protocol calls back when the connection is lost: no second task per request.
    watch.watch(work.cancel)
    try:
        await work
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the handler itself is cancelled (e.g. a forced shutdown): awaiting cancelled `work` too
        return Ending.CLIENT_LEFT if watch.lost else Ending.CANCELLED
    except GpufleetError:
        pass  # the caller's work.result() raises it
    finally:
        watch.watch(None)
    return Ending.DONE


async def _wait_watching_receive(request: Request, work: asyncio.Future[Any]) -> Ending:
    """`wait_watching_client` under another ASGI server: a second task waits on `receive()`."""

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher: asyncio.Future[Any] = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait([work, watcher], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()  # the handler itself is cancelled (e.g. a forced shutdown): the upstream request too
        raise
    finally:
        watcher.cancel()
    if work.done():
        return Ending.CANCELLED if work.cancelled() else Ending.DONE
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, GpufleetError):
        await work
    return Ending.CLIENT_LEFT
