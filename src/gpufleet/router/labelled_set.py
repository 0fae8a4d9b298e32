"""Kept so that `gpufleet.router.labelled_set` imports keep working: the format moved to gpufleet.tiers (the config
checks it at load and must not import the router)."""

from __future__ import annotations

from gpufleet.tiers.labelled_set import SHIPPED, TIERS, LabelledSetError, load_labelled, parse_labelled

__all__ = ["SHIPPED", "TIERS", "LabelledSetError", "load_labelled", "parse_labelled"]
