"""What `gpufleet bench` measures: targets parsed from the command line (pure).

parse_target("smollm2", gateway="http://127.0.0.1:8000/v1")      # a gateway model or route
parse_target("http://127.0.0.1:9001/v1#smollm2", gateway=...)    # an engine's own OpenAI URL, model after '#'
parse_target("vllm=http://127.0.0.1:9001/v1#smollm2", gateway=...)  # the same, labelled 'vllm'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gpufleet.errors import ConfigError

_URL = re.compile(r"^https?://[^/\s#]+", re.IGNORECASE)
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@()+-]*$")


@dataclass(frozen=True)
class BenchTarget:
    """One thing to load: a label for the table, an OpenAI base URL (ending in /v1) and the model to ask for."""

    label: str
    base_url: str
    model: str
    via_gateway: bool  # True when base_url is the gateway (so --compare-direct can find the engine behind it)
    # The engine's own per-start key (the gateway's admin start hands it out) for an engine-direct target.
    api_key: str | None = field(default=None, repr=False, compare=False)


def _split_url(text: str, where: str) -> tuple[str, str | None]:
    url, _, model = text.partition("#")
    if not _URL.match(url):
        raise ConfigError(f"{where}: {url!r} is not an http(s) URL")
    url = url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"  # an engine's root was given; every engine here serves the OpenAI API under /v1
    return url, model or None


def parse_target(text: str, *, gateway: str) -> BenchTarget:
    """One TARGET argument; `gateway` is the --base-url a bare model name is sent to.

    A ConfigError names the argument and what is wrong with it.
    """
    where = f"target {text!r}"
    text = text.strip()
    if not text:
        raise ConfigError("target: empty; give a model name, URL#model or label=URL#model")
    label: str | None = None
    if "=" in text and not _URL.match(text):
        label, _, text = text.partition("=")
        if not _LABEL.match(label):
            raise ConfigError(f"{where}: label {label!r} must be letters, digits and ._:@()+-")
    if _URL.match(text):
        url, model = _split_url(text, where)
        if model is None:
            if label is None:
                raise ConfigError(f"{where}: name the model after '#', e.g. {url}#smollm2")
            model = label
        if label is None:
            label = f"{model}@{urlsplit(url).netloc}"
        gateway_url = gateway.rstrip("/")
        return BenchTarget(label, url, model, via_gateway=url == gateway_url)
    if any(char.isspace() for char in text) or "://" in text:
        raise ConfigError(f"{where}: neither a model name nor an http(s) URL")
    url, _ = _split_url(gateway, "--base-url")
    return BenchTarget(label or text, url, text, via_gateway=True)


def parse_targets(texts: list[str], *, gateway: str) -> list[BenchTarget]:
    """All TARGET arguments; labels must be unique (they key the report)."""
    if not texts:
        raise ConfigError("no target: name at least one gateway model or URL#model")
    targets = [parse_target(text, gateway=gateway) for text in texts]
    seen: set[str] = set()
    for target in targets:
        if target.label in seen:
            raise ConfigError(f"target label {target.label!r} is given twice; label one with NAME=URL#model")
        seen.add(target.label)
    return targets


def direct_label(target: BenchTarget) -> str:
    """The label of the engine-direct twin of a gateway target (--compare-direct)."""
    return f"{target.label} (direct)"


def parse_concurrency(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]; ConfigError on anything that is not a list of positive integers."""
    levels: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ConfigError(f"--concurrency: {part!r} is not a positive integer (expected e.g. 1,4,16)")
        levels.append(int(part))
    return sorted(set(levels))


def parse_rates(text: str) -> list[float]:
    """'1,2,4' or '0.5,2' -> request rates per second; ConfigError on anything that is not a positive number."""
    rates: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            rate = float(part)
        except ValueError:
            rate = -1.0
        if not (rate > 0 and rate < float("inf")):
            raise ConfigError(
                f"--rate: {part!r} is not a positive number of requests per second (expected e.g. 1,2,4 or 0.5)"
            )
        rates.append(rate)
    return sorted(set(rates))
