"""The edge's watched work in the handler's own task (gateway/client_watch.py): how each ending is told apart.

Under `gpufleet serve` the connection's DisconnectWatch cancels the handler's task itself when the client
leaves, and the shutdown's drain cancels it through the same guard; anyone else's cancellation must still
reach the handler, and the task's cancellation count must come back to where it was.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from gpufleet.errors import RequestError
from gpufleet.gateway.client_watch import Ending, serve_watching_client
from gpufleet.gateway.http_limits import DISCONNECT_EXTENSION, DisconnectWatch
from gpufleet.gateway.relay import LiveStreams


class _Protocol:
    def resume_reading_for_watch(self) -> None:
        pass


def _request() -> tuple[Request, DisconnectWatch]:
    watch = DisconnectWatch(_Protocol())  # type: ignore[arg-type]  # only resume_reading_for_watch is used
    scope = {"type": "http", "extensions": {DISCONNECT_EXTENSION: {"watch": watch}}}
    return Request(scope), watch


class _Work:
    """A request's work: waits on `gate`; records whether it started and whether it was cancelled."""

    def __init__(self) -> None:
        self.gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.started = False
        self.cancelled = False

    async def run(self, absorb: bool = False) -> str:
        self.started = True
        try:
            return await self.gate
        except asyncio.CancelledError:
            self.cancelled = True
            if absorb:
                return "answered anyway"
            raise


async def _serve(request: Request, work: Any, live: LiveStreams) -> tuple[Any, int]:
    result = await serve_watching_client(request, work, live)
    task = asyncio.current_task()
    assert task is not None
    return result, task.cancelling()


async def test_the_answer_comes_back_and_nothing_stays_waiting() -> None:
    request, _ = _request()
    live, work = LiveStreams(), _Work()
    handler = asyncio.ensure_future(_serve(request, work.run(), live))
    await asyncio.sleep(0)
    assert len(live) == 1  # counted for the drain while it waits
    work.gate.set_result("answer")
    assert await handler == ("answer", 0)
    assert len(live) == 0


async def test_an_error_of_the_work_is_raised() -> None:
    request, _ = _request()
    work = _Work()
    handler = asyncio.ensure_future(serve_watching_client(request, work.run(), LiveStreams()))
    await asyncio.sleep(0)
    work.gate.set_exception(RequestError("bad"))
    with pytest.raises(RequestError):
        await handler


async def test_a_client_that_leaves_cancels_the_work() -> None:
    request, watch = _request()
    work = _Work()
    handler = asyncio.ensure_future(_serve(request, work.run(), LiveStreams()))
    await asyncio.sleep(0)
    watch._connection_lost()
    assert await handler == (Ending.CLIENT_LEFT, 0)
    assert work.cancelled


async def test_a_client_gone_before_the_work_starts_gets_nothing_sent() -> None:
    request, watch = _request()
    watch._connection_lost()
    work = _Work()
    assert await _serve(request, work.run(), LiveStreams()) == (Ending.CLIENT_LEFT, 0)
    assert not work.started


async def test_the_shutdown_drain_cancels_the_work() -> None:
    request, _ = _request()
    live, work = LiveStreams(), _Work()
    handler = asyncio.ensure_future(_serve(request, work.run(), live))
    await asyncio.sleep(0)
    await live.drain(0)
    assert await handler == (Ending.CANCELLED, 0)
    assert work.cancelled and len(live) == 0


async def test_a_cancelled_handler_stays_cancelled() -> None:
    request, _ = _request()
    work = _Work()
    handler = asyncio.ensure_future(_serve(request, work.run(), LiveStreams()))
    await asyncio.sleep(0)
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler
    assert work.cancelled


async def test_a_handler_cancelled_while_its_client_leaves_stays_cancelled() -> None:
    request, watch = _request()
    work = _Work()
    handler = asyncio.ensure_future(_serve(request, work.run(), LiveStreams()))
    await asyncio.sleep(0)
    watch._connection_lost()
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler


async def test_work_that_answers_despite_the_cancel_leaves_no_cancellation_behind() -> None:
    request, watch = _request()
    work = _Work()
    handler = asyncio.ensure_future(_serve(request, work.run(absorb=True), LiveStreams()))
    await asyncio.sleep(0)
    watch._connection_lost()
    assert await handler == ("answered anyway", 0)
