"""The usage ledger: one row per answered request (docs/keys.md)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter


@dataclass(slots=True)
class UsageRow:
    """What one request used. `key_name` is 'admin' for a static server.api_keys key, 'anonymous' without keys."""

    ts: float  # when the request arrived (epoch seconds)
    key_id: str
    key_name: str
    endpoint: str  # chat, completion, embedding, persona_chat
    model_asked: str
    model_served: str = ""
    route: str = ""
    tier: str = ""
    target: str = ""
    status: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    ttft_s: float | None = None
    duration_s: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def values(self) -> tuple[object, ...]:
        values: tuple[object, ...] = _VALUES(self)
        return values


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(UsageRow))
_VALUES = attrgetter(*COLUMNS)  # dataclasses.astuple deep-copies: ~30x slower, and this runs for every row
# `keys usage --by` may group by these (not by free-form numbers).
GROUPABLE = ("key", "model", "served", "endpoint", "route", "tier", "target", "status", "day")
