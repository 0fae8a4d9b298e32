"""Where a benchmark ran: the client host (CPU, cores, RAM, load, GPUs via NVML) and the gpufleet build.

    host_info()                    # {"cpu_model": ..., "cpu_cores": 16, "ram_bytes": ..., "gpus": [...], ...}
    host_info(nvml=fake_module)    # tests hand in an NVML double (the doctor's reader is shared)
    gpufleet_build()               # {"version": "0.1.0", "commit": "7205713...", "dirty": False}

The host is the machine `gpufleet bench` runs on: the engines' host too when the targets are local (the
usual case), not when a target is another machine's URL. The load average is recorded because a figure
from a shared machine means little without it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from gpufleet.doctor.probes import parse_meminfo, read_nvml


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_model(cpuinfo: str | None) -> str | None:
    """The CPU's name from /proc/cpuinfo (`model name`, or `Model`/`Hardware` on ARM boards)."""
    for key in ("model name", "Model", "Hardware"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo or "", re.M)
        if match:
            return match.group(1).strip()
    return platform.processor() or None


def _nvml_module() -> Any:
    import pynvml  # nvidia-ml-py; absent or without a driver on CPU-only hosts

    return pynvml


def gpus(nvml: Any = None) -> tuple[list[dict[str, Any]], str | None]:
    """GPUs through NVML as [{index, name, memory_total_bytes, compute_capability}], with the driver version;
    ([], None) when NVML is missing or finds no driver (a CPU-only host)."""
    try:
        found, driver, _cuda = read_nvml(nvml if nvml is not None else _nvml_module())
    except Exception:  # ImportError, NVMLError_LibraryNotFound, ...: no GPU to report
        return [], None
    return [
        {
            "index": gpu.index,
            "name": gpu.name,
            "memory_total_bytes": gpu.total_bytes,
            "compute_capability": gpu.compute_capability,
        }
        for gpu in found
    ], driver


def host_info(nvml: Any = None) -> dict[str, Any]:
    """The benchmarking host, JSON-ready."""
    ram_bytes, _available = parse_meminfo(_read("/proc/meminfo") or "")
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = None
    found, driver = gpus(nvml)
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(_read("/proc/cpuinfo")),
        "cpu_cores": os.cpu_count(),
        "ram_bytes": ram_bytes,
        "loadavg": load,  # 1, 5 and 15 minutes, at the start of the run
        "gpus": found,
        "nvidia_driver": driver,
    }


def gpufleet_build(source: Path | None = None) -> dict[str, Any]:
    """gpufleet's version, and the git commit when it runs from a checkout (None when installed from a wheel)."""
    try:
        version: str | None = importlib.metadata.version("gpufleet")
    except importlib.metadata.PackageNotFoundError:
        version = None
    where = source or Path(__file__).resolve().parent
    commit: str | None = None
    dirty: bool | None = None
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()
            or None
        )
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a checkout, or no git: the version is all there is
    return {"version": version, "commit": commit, "dirty": dirty}
