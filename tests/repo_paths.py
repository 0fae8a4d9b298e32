"""Where the repository is, for tests that run its CLI, read its docs or walk its source."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
