"""Router: resolves a requested model name to the target(s) that serve it."""

from __future__ import annotations

from gpufleet.router.table import ModelTable, Target

__all__ = ["ModelTable", "Target"]
