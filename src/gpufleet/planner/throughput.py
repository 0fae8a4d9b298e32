"""Roofline decode speed: each generated token reads the active weights and the KV cache once.

    t_token = (active weight bytes + KV bytes read) / memory bandwidth / efficiency * kernel factor
            + offloaded bytes / effective PCIe bandwidth

Efficiency 0.55 is stated, not measured per GPU: the seeds land at 0.4x (RTX 3090 32B-AWQ under
WSL2, ~19 tok/s, seed 001), 0.5x (RTX 3060 8B-AWQ eager, ~28 tok/s, seed 002) and 0.8x
(2x GB10 235B-AWQ, 35-40 tok/s, seed 004) of the roofline. Expect +-40%.
"""

from __future__ import annotations

from gpufleet.catalog import GB

DECODE_EFFICIENCY = 0.55
# Effective host->GPU copy rates (seed 001 lesson 3: "PCIe 3.0/4.0 ~12-25 GB/s" vs 936 GB/s VRAM).
PCIE_EFFECTIVE_GBPS = {3: 12.0, 4: 25.0, 5: 50.0}
# Without pinned memory (WSL2) copies are pageable and staged through a bounce buffer: ~half speed.
PAGEABLE_FACTOR = 0.5


def decode_tok_s(
    *,
    bytes_per_token: float,
    bandwidth_gbps: float,
    efficiency: float = DECODE_EFFICIENCY,
    kernel_factor: float = 1.0,
    offload_bytes_per_token: float = 0.0,
    pcie_gbps: float | None = None,
) -> float:
    """Tokens/s of one decode stream; offloaded weights cross PCIe on every forward pass."""
    seconds = bytes_per_token / (bandwidth_gbps * GB) / efficiency * kernel_factor
    if offload_bytes_per_token > 0:
        if not pcie_gbps:
            return 0.0
        seconds += offload_bytes_per_token / (pcie_gbps * GB)
    return 1.0 / seconds if seconds > 0 else 0.0


def pcie_gbps(pcie_gen: int | None, *, pinned_memory: bool = True) -> float | None:
    """Effective host->device GB/s for a PCIe generation (None: no PCIe link to speak of)."""
    if pcie_gen is None:
        return None
    rate = PCIE_EFFECTIVE_GBPS.get(pcie_gen, PCIE_EFFECTIVE_GBPS[4])
    return rate if pinned_memory else rate * PAGEABLE_FACTOR
