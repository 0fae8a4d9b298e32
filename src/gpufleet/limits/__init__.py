"""Per-key limits counted in memory: requests and tokens per minute, tokens per day, concurrency (docs/keys.md)."""

from gpufleet.limits.counters import Limiter, Limits, reset_text

__all__ = ["Limiter", "Limits", "reset_text"]
