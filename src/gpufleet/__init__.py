"""gpufleet: run open-weight LLMs on your own GPUs as one OpenAI-compatible service."""

from __future__ import annotations

__version__ = "0.1.0"
