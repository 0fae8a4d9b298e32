"""Gateway: the ASGI app serving the OpenAI API in front of the engines."""

from __future__ import annotations

from gpufleet.gateway.app import build_app, running
from gpufleet.gateway.state import Gateway, GatewayState

__all__ = ["Gateway", "GatewayState", "build_app", "running"]
