"""STAND-IN version file: makes gpufleet's version-aware flag checks run against the stand-in as for vLLM 0.32.0."""

__version__ = version = "0.32.0"
