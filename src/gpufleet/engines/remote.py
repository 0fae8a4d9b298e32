"""The `remote` engine: a model served by an OpenAI-compatible server gpufleet does not start."""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.config import RemoteModel


@dataclass(frozen=True)
class RemoteUpstream:
    """Where to send requests for a remote model, and with which name and key."""

    base_url: str
    api_key: str | None
    upstream_model: str
    timeout_s: float


def remote_upstream(name: str, model: RemoteModel) -> RemoteUpstream:
    """The upstream of a remote model; the upstream name defaults to the served name."""
    return RemoteUpstream(
        base_url=model.url,
        api_key=model.api_key,
        upstream_model=model.upstream_model or name,
        timeout_s=model.timeout_s,
    )
