"""uvicorn's server with a graceful drain for `gpufleet serve` (SIGTERM / SIGINT).

uvicorn stops accepting connections at once and waits for those in flight; without more, a stream that
outlives its `timeout_graceful_shutdown` is cut with no error, which a client cannot tell from a normal
end. Here requests in flight get `server.shutdown_grace_s` to finish, then the streams still running end
with an OpenAI error event (`gateway_shutting_down`) and `data: [DONE]`, and only then does the app's
lifespan shutdown stop the engines.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn

from gpufleet.gateway.relay import LiveStreams

log = logging.getLogger("gpufleet.gateway")

# uvicorn's own hard limit comes this long after ours, so the streams we end can send their error event.
SHUTDOWN_MARGIN_S = 5.0


class DrainingServer(uvicorn.Server):
    """A uvicorn.Server whose shutdown ends unfinished streams cleanly after `grace_s`."""

    def __init__(self, config: uvicorn.Config, streams: LiveStreams, grace_s: float) -> None:
        super().__init__(config)
        self._streams = streams
        self._grace_s = grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._streams:
            log.warning("shutting down: %d request(s) in flight get %g s to finish", len(self._streams), self._grace_s)
        drain = asyncio.create_task(self._streams.drain(self._grace_s), name="gpufleet-drain")
        try:
            await super().shutdown(sockets)
        finally:
            drain.cancel()
