"""STAND-IN version file: gpufleet's version-aware flag checks treat the stand-in as vLLM 0.32.0."""

__version__ = version = "0.32.0"
