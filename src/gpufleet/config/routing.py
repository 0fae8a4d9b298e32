"""Routes, personas, the `router:` block (fallback, cooldown, `auto` tiers) and swap groups of gpufleet.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, field_validator, model_validator

from gpufleet.config.common import RouteDefaults, Strict, check_aliases
from gpufleet.tiers.labelled_set import LabelledSetError, load_labelled
from gpufleet.tiers.signals import SIGNALS


class RouteConfig(Strict):
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
    resume_fallbacks: list[str] = Field(
        default_factory=list,
        description="fallbacks with the same weights and tokenizer as the targets: a stream "
        "that breaks mid-answer may continue there (the targets, replicas, always may)",
    )
    affinity: bool = Field(
        default=True, description="pin a session (x-gpufleet-session header or `user`) to one replica"
    )
    defaults: RouteDefaults = Field(default_factory=RouteDefaults)
    listed: bool = True

    @field_validator("aliases")
    @classmethod
    def _aliases_are_names(cls, value: list[str]) -> list[str]:
        return check_aliases(value)

    @model_validator(mode="after")
    def _resume_fallbacks_are_fallbacks(self) -> RouteConfig:
        unknown = [name for name in self.resume_fallbacks if name not in self.fallbacks]
        if unknown:
            raise ValueError(f"resume_fallbacks: {unknown[0]!r} is not one of this route's fallbacks")
        return self


class PersonaConfig(Strict):
    """A persona for `POST /chat` (and the OpenAI endpoints, by name): a system prompt in front of a model/route."""

    route: str = Field(description="the model, route or alias that answers")
    system_prompt: str = Field(min_length=1)
    description: str = ""
    defaults: RouteDefaults = Field(default_factory=RouteDefaults)


class AutoModelClassifier(Strict):
    """`router.auto.classifier` when a model picks the tier, through the gateway itself (docs/router-auto.md).

    The rules stay the fallback: they decide while the model warms up, and whenever its call fails or is slower
    than `timeout_s`, so `auto` never waits on (or fails with) the classifier.
    """

    kind: Literal["knn", "judge"] = Field(
        description="knn: the nearest labelled examples by embedding; judge: a chat model names the tier"
    )
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


class AutoTiers(Strict):
    """`model: auto`: a complexity classifier picks a tier; each tier names a model or route (seed 000)."""

    routine: str
    moderate: str
    complex: str
    moderate_at: float = Field(default=2.0, description="score from which a request is MODERATE")
    complex_at: float = Field(default=4.5, description="score from which a request is COMPLEX")
    weights: dict[str, float] = Field(default_factory=dict, description="override signal weights by name")
    classifier: _AutoClassifier = Field(
        default="rules", description="'rules' (in-process, ~0.05 ms), or a model: {kind: knn|judge, model: NAME}"
    )

    @model_validator(mode="after")
    def _ordered(self) -> AutoTiers:
        if self.complex_at <= self.moderate_at:
            raise ValueError(f"complex_at ({self.complex_at}) must be greater than moderate_at ({self.moderate_at})")
        return self

    @field_validator("weights")
    @classmethod
    def _known_signals(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown signal {unknown[0]!r}; known signals: {', '.join(SIGNALS)}")
        return value


class RouterConfig(Strict):
    """Fallback, cooldown and `auto` settings shared by every route."""

    max_attempts: int = Field(default=3, ge=1, le=10, description="targets tried per request, fallbacks included")
    retry_backoff_s: float = Field(default=0.05, ge=0, description="pause before trying the next target")
    cooldown_s: float = Field(default=30, ge=0, description="a failing target is skipped this long, then probed")
    failures_before_cooldown: int = Field(default=1, ge=1)
    probe_interval_s: float = Field(default=5, gt=0, description="how often cooled-down remote targets are probed")
    first_byte_timeout_s: float = Field(
        default=120,
        gt=0,
        description="streams: no first chunk within this → try the next target (nothing was sent yet)",
    )
    retry_after_sent: bool = Field(
        default=True,
        description="a request whose client got no byte moves on after any upstream failure, also "
        "once the upstream had it (hang after headers, cut or malformed answer); false: the strict rule, for "
        "remotes billed per call",
    )
    stream_stall_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="a stream silent this long after its first byte counts as broken (and "
        "resumes on a replica); unset: only the read timeout (server.request_timeout_s / a remote's timeout_s)",
    )
    max_resumes: int = Field(
        default=1,
        ge=0,
        le=3,
        description="times a stream that breaks after its first byte continues on another "
        "replica of its route (same model): 0 turns it off",
    )
    auto: AutoTiers | None = None


class SwapGroupConfig(Strict):
    """Models that share one GPU. Without a budget only one member runs at a time."""

    memory_mib: int | None = Field(default=None, gt=0, description="budget; members declare memory_mib")
    max_queue: int = Field(default=64, ge=0, description="requests waiting for a swap; more get HTTP 503")
