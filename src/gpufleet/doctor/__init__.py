"""The doctor: check a host against a plan (GPU, driver vs engine CUDA, WSL2, free VRAM, shm, port).

    >>> report = run_doctor()            # doctest: +SKIP
    >>> report.exit_code                 # 0 no errors, 1 at least one error finding

Probes (doctor/probes.py) read the host and are injectable; checks (doctor/checks.py) are pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.doctor.checks import ENGINE_CUDA, check_host
from gpufleet.doctor.facts import Finding, GpuInfo, HostFacts
from gpufleet.doctor.probes import (
    Probes,
    is_wsl,
    parse_meminfo,
    parse_smi_banner,
    parse_smi_query,
    probe_host,
)
from gpufleet.planner import Plan


@dataclass(frozen=True)
class DoctorReport:
    """Facts seen and findings made; `exit_code` is 1 when any finding is an error."""

    facts: HostFacts
    findings: tuple[Finding, ...]

    @property
    def exit_code(self) -> int:
        """0: nothing blocks; 1: at least one error."""
        return 1 if any(f.level == "error" for f in self.findings) else 0


def run_doctor(
    plan: Plan | None = None,
    *,
    port: int | None = None,
    probes: Probes | None = None,
    engine_cuda: str | None = None,
    engine_version: str | None = None,
    expected_vllm: str | None = None,
) -> DoctorReport:
    """Probe this host and check it (against `plan` when given)."""
    facts = probe_host(probes, port=port)
    findings = check_host(
        facts, plan, engine_cuda=engine_cuda, engine_version=engine_version, expected_vllm=expected_vllm
    )
    return DoctorReport(facts, tuple(findings))


__all__ = [
    "ENGINE_CUDA",
    "DoctorReport",
    "Finding",
    "GpuInfo",
    "HostFacts",
    "Probes",
    "check_host",
    "is_wsl",
    "parse_meminfo",
    "parse_smi_banner",
    "parse_smi_query",
    "probe_host",
    "run_doctor",
]
