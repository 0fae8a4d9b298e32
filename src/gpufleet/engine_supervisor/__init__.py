"""Supervisor: owns engine processes (start on demand, ready wait, idle TTL, crash restart, clean stop)."""

from __future__ import annotations

from gpufleet.engine_supervisor.model_fleet import EngineState, Supervisor, Upstream

__all__ = ["EngineState", "Supervisor", "Upstream"]
