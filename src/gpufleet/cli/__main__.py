"""`python -m gpufleet.cli` (same as the `gpufleet` console script)."""

from __future__ import annotations

from gpufleet.cli import main

main()
