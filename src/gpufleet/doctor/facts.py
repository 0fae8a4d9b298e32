"""What the doctor saw on a host (facts) and what it concluded (findings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Level = Literal["ok", "warn", "error"]


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML or nvidia-smi reports it; memory is None where the driver says N/A (GB10)."""

    index: int
    name: str
    total_bytes: int | None
    free_bytes: int | None
    compute_capability: str | None


@dataclass(frozen=True)
class HostFacts:
    """Everything the checks look at, gathered by probes (or fed from recorded samples in tests)."""

    gpus: tuple[GpuInfo, ...] = ()
    gpu_source: str = "none"  # "nvml", "nvidia-smi" or "none"
    gpu_error: str | None = None  # why no GPU could be listed
    driver_version: str | None = None
    driver_cuda: str | None = None  # highest CUDA the driver supports, "12.8"
    proc_version: str | None = None
    mem_total_bytes: int | None = None  # host RAM (/proc/meminfo): the GPU's memory on unified machines
    mem_available_bytes: int | None = None
    shm_bytes: int | None = None
    port: int | None = None
    port_in_use: bool | None = None
    engine_versions: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """One check's result: how bad, what was seen, and how to fix it."""

    check: str
    level: Level
    seen: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """JSON form."""
        return {"check": self.check, "level": self.level, "seen": self.seen, "fix": self.fix}
