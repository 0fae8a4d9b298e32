"""Gateway: the ASGI app serving the OpenAI API in front of the engines."""

from __future__ import annotations

from gpufleet.gateway.app import Gateway, build_app, running

__all__ = ["Gateway", "build_app", "running"]
