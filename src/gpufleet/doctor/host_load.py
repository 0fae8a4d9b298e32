"""Live readings of the host for the console's host panel: CPU use, RAM, and each GPU's memory and utilisation.

CPU comes from /proc/stat (busy share between two readings), load from /proc/loadavg, RAM from /proc/meminfo,
GPUs from NVML (nvidia-ml-py, injectable: tests pass a fake module, scripts/gpu-check reads a real GPU). A host
without an NVIDIA driver reads as no GPUs, with the reason in `nvml`.

    monitor = HostMonitor()
    reading = await monitor.read()          # {"cpu": {...}, "memory": {...}, "gpus": [...], "nvml": "ok"}
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpufleet.doctor.probes import parse_meminfo

# A first reading has no earlier one to compare with: take a second one this much later.
FIRST_SAMPLE_S = 0.25


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time of all cores (jiffies) from /proc/stat's `cpu` line, and when it was read."""

    busy: int
    total: int
    at: float


def parse_proc_stat(text: str, at: float = 0.0) -> CpuTimes:
    """CpuTimes from /proc/stat; idle and iowait count as not busy. ValueError when the `cpu` line is missing."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            # user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
            values = [int(v) for v in fields[1:9]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return CpuTimes(busy=sum(values) - idle, total=sum(values), at=at)
    raise ValueError("/proc/stat has no 'cpu' line")


def cpu_percent(before: CpuTimes, after: CpuTimes) -> float | None:
    """Share of all cores busy between two readings, in percent; None when no time passed between them."""
    total = after.total - before.total
    if total <= 0:
        return None
    return round(100.0 * (after.busy - before.busy) / total, 1)


def parse_loadavg(text: str) -> list[float]:
    """The 1, 5 and 15 minute load averages from /proc/loadavg."""
    return [float(v) for v in text.split()[:3]]


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(read: Callable[..., Any], *args: Any) -> Any:
    # Each figure on its own: GB10 answers "Not Supported" for memory, some boards for power or temperature.
    try:
        return read(*args)
    except Exception:  # pynvml raises NVMLError subclasses per missing feature; any means "unknown"
        return None


def read_gpus(nvml: Any) -> list[dict[str, Any]]:
    """Every GPU NVML sees: memory, utilisation, temperature, power, and the processes holding its memory.

    `nvml` is the pynvml module or a stand-in with the same functions; the caller has called nvmlInit().
    """
    gpus = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
        rates = _optional(nvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = _optional(nvml.nvmlDeviceGetPowerUsage, handle)
        temperature = _optional(nvml.nvmlDeviceGetTemperature, handle, 0)  # 0: NVML_TEMPERATURE_GPU, the die
        processes = _optional(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
        gpus.append(
            {
                "index": index,
                "name": _decode(nvml.nvmlDeviceGetName(handle)),
                "memory_total_bytes": int(memory.total) if memory is not None else None,
                "memory_used_bytes": int(memory.used) if memory is not None else None,
                "utilization_percent": int(rates.gpu) if rates is not None else None,
                "memory_utilization_percent": int(rates.memory) if rates is not None else None,
                "temperature_c": int(temperature) if temperature is not None else None,
                "power_w": round(power_mw / 1000, 1) if power_mw is not None else None,
                # usedGpuMemory is None where the driver may not say (a container without the host's pid namespace).
                "processes": [
                    {"pid": int(p.pid), "used_bytes": None if p.usedGpuMemory is None else int(p.usedGpuMemory)}
                    for p in processes
                ],
            }
        )
    return gpus


def read_nvml_gpus(nvml_loader: Callable[[], Any]) -> tuple[list[dict[str, Any]], str]:
    """(GPUs, "ok") through NVML, or ([], why not) where there is no NVML library or driver."""
    try:
        nvml = nvml_loader()
        nvml.nvmlInit()
    except Exception as err:  # no libnvidia-ml.so, no driver, no device: all mean "no GPU here"
        return [], f"unavailable: {type(err).__name__}: {err}".strip()
    try:
        return read_gpus(nvml), "ok"
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def process_group(pid: int, proc_root: Path = Path("/proc")) -> int | None:
    """The process group of `pid` (an engine's workers share their leader's, so a GPU process maps to its model)."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Field 5 is the process group; the command name (field 2) may hold spaces and parentheses.
    fields = stat.rpartition(")")[2].split()
    return int(fields[2]) if len(fields) > 2 and fields[2].lstrip("-").isdigit() else None


def _load_pynvml() -> Any:
    import pynvml  # nvidia-ml-py

    return pynvml


class HostMonitor:
    """Reads the host on demand; keeps the previous CPU reading so each read gives the CPU use since the last."""

    def __init__(self, *, nvml_loader: Callable[[], Any] = _load_pynvml, proc_root: Path = Path("/proc")) -> None:
        self.nvml_loader = nvml_loader
        self.proc_root = proc_root
        self._last_cpu: CpuTimes | None = None

    def _cpu_times(self) -> CpuTimes:
        return parse_proc_stat((self.proc_root / "stat").read_text(), at=time.monotonic())

    async def read(self) -> dict[str, Any]:
        """CPU (percent busy since the last read, load, cores), RAM, GPUs; NVML runs off the event loop."""
        before = self._last_cpu
        if before is None:
            before = self._cpu_times()
            await asyncio.sleep(FIRST_SAMPLE_S)
        now = self._cpu_times()
        self._last_cpu = now
        gpus, nvml_state = await asyncio.to_thread(read_nvml_gpus, self.nvml_loader)
        for gpu in gpus:
            for process in gpu["processes"]:
                process["group"] = process_group(process["pid"], self.proc_root)
        total, available = parse_meminfo(_read(self.proc_root / "meminfo"))
        return {
            "cpu": {
                "percent": cpu_percent(before, now),
                "over_s": round(now.at - before.at, 2),
                "cores": os.cpu_count(),
                "load": parse_loadavg(_read(self.proc_root / "loadavg") or "0 0 0"),
            },
            "memory": {
                "total_bytes": total,
                "available_bytes": available,
                "used_bytes": total - available if total is not None and available is not None else None,
            },
            "gpus": gpus,
            "nvml": nvml_state,
        }


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
