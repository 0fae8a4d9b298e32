"""forward.Holds: what an attempt holds open, released as contextlib.AsyncExitStack would release it.

The pipeline relies on it to end a lease, close the upstream response and count the attempt out of flight
whatever happens: every exit runs, last in first out, even when one of them raises."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gpufleet.gateway.forward import Holds


def test_exits_run_last_in_first_out_with_their_arguments() -> None:
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def lease() -> AsyncIterator[str]:
        seen.append("leased")
        try:
            yield "upstream"
        finally:
            seen.append("lease ended")

    async def attempt() -> None:
        holds = Holds()
        holds.callback(seen.append, "in flight ended")
        assert await holds.enter_async_context(lease()) == "upstream"
        holds.callback(seen.append, "response closed")
        await holds.aclose()
        await holds.aclose()  # a second close finds nothing left

    asyncio.run(attempt())
    assert seen == ["leased", "response closed", "lease ended", "in flight ended"]


def test_an_exit_that_raises_does_not_stop_the_others() -> None:
    seen: list[str] = []
    told: list[BaseException | None] = []

    class Lease(contextlib.AbstractAsyncContextManager[None]):
        async def __aexit__(self, *exc: object) -> None:
            told.append(exc[1])  # type: ignore[arg-type]
            seen.append("lease ended")

    def broken() -> None:
        raise RuntimeError("close failed")

    async def attempt() -> None:
        holds = Holds()
        holds.callback(seen.append, "in flight ended")
        await holds.enter_async_context(Lease())
        holds.callback(broken)
        await holds.aclose()

    with pytest.raises(RuntimeError, match="close failed"):
        asyncio.run(attempt())
    assert seen == ["lease ended", "in flight ended"]
    assert isinstance(told[0], RuntimeError)  # as the stack does, the async exit is told of the error


def test_an_async_exit_may_suppress_the_error_pending() -> None:
    class Suppressing(contextlib.AbstractAsyncContextManager[None]):
        async def __aexit__(self, *exc: object) -> bool:
            return True

    def broken() -> None:
        raise RuntimeError("close failed")

    async def attempt() -> None:
        holds = Holds()
        await holds.enter_async_context(Suppressing())
        holds.callback(broken)
        await holds.aclose()

    asyncio.run(attempt())  # nothing raised, as with AsyncExitStack
