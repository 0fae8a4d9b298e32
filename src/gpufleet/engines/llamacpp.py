"""The embedded engine: llama.cpp's OpenAI server (via the xllamacpp wheel) in a child process.

It runs as a child process, not in-process, so it goes through exactly the same supervisor and relay path as
vLLM (start, ready check, crash restart, idle unload) and a crash in C++ cannot take the gateway down.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gpufleet.config import LlamaCppModel
from gpufleet.engines.base import LaunchSpec, local_urls
from gpufleet.model_packages import resolve_gguf

# Read by llamacpp_server.py (xllamacpp's `api_keys`); set per start by engines.base.with_engine_key.
API_KEY_ENV = "GPUFLEET_ENGINE_API_KEY"


class LlamaCppEngine:
    """Builds the command line of `python -m gpufleet.engines.llamacpp_server`."""

    kind = "llamacpp"

    def resolve(self, name: str, model: LlamaCppModel) -> Path:
        """The GGUF file to serve (a packaged model is assembled on first use: seconds)."""
        return resolve_gguf(model.source)

    def launch_spec(self, name: str, model: LlamaCppModel, resolved: Path, port: int) -> LaunchSpec:
        gguf = resolved
        threads = model.threads or os.cpu_count() or 1
        argv = [
            sys.executable,
            "-m",
            "gpufleet.engines.llamacpp_server",
            "--model",
            str(gguf),
            "--port",
            str(port),
            "--alias",
            name,
            "--ctx",
            str(model.context),
            "--parallel",
            str(model.parallel),
            "--threads",
            str(threads),
        ]
        for key, value in sorted(model.extra_args.items()):
            argv += ["--set", f"{key}={value}"]
        urls = local_urls(port)
        return LaunchSpec(
            argv=argv,
            env={},
            port=port,
            base_url=urls["base_url"],
            health_url=urls["health_url"],
            metrics_url=urls["metrics_url"],
            api_key_env=API_KEY_ENV,
        )
