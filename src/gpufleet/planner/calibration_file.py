"""The calibration file: launches on this host, planned vs logged KV tokens (cache dir, JSON).

`<cache root>/calibration.json` (src/gpufleet/paths.py; $GPUFLEET_CACHE moves it) holds a list of
measurements, newest last, one per launch key (a relaunch with the same settings replaces its entry).
The supervisor records one when a planned vLLM launch logs "GPU KV cache size"; `gpufleet plan`
reads them (planner/calibration.py). Writes go to a temporary file renamed over the old one, so a
crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpufleet.errors import PlanError
from gpufleet.paths import cache_root
from gpufleet.planner.calibration import LaunchKey, Measurement

MAX_ENTRIES = 500  # the oldest go first; a host sees a few launch shapes, not thousands


def calibration_path() -> Path:
    """Where this host's measurements live."""
    return cache_root() / "calibration.json"


def load_measurements(path: Path | None = None) -> list[Measurement]:
    """The stored measurements ([] when there is no file); PlanError naming the file when it is damaged."""
    path = path or calibration_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise PlanError(f"{path}: cannot read the calibration file ({err}); delete it to start over") from None
    entries = raw.get("measurements") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise PlanError(f"{path}: expected {{'measurements': [...]}}; delete it to start over")
    try:
        return [_measurement(entry) for entry in entries]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise PlanError(f"{path}: a measurement is malformed ({err!r}); delete it to start over") from None


def record_measurement(
    key: LaunchKey, planned_tokens: int, measured_tokens: int, path: Path | None = None
) -> Measurement:
    """Store one launch's figures (replacing an older entry with the same key) and return it."""
    path = path or calibration_path()
    try:
        kept = [m for m in load_measurements(path) if m.key != key]
    except PlanError:
        kept = []  # a damaged file is replaced rather than blocking every launch
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = Measurement(key, planned_tokens, measured_tokens, stamp)
    entries = [*kept, new][-MAX_ENTRIES:]
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"measurements": [_entry(m) for m in entries]}, indent=1)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".calibration.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return new


def record_from_launch(extra: dict[str, str], measured_tokens: int, path: Path | None = None) -> Measurement | None:
    """The supervisor's hook: record a launch whose spec carries the plan's key (`calibration_extra`)."""
    raw_key, planned = extra.get("calibration_key"), extra.get("planned_kv_tokens")
    if not raw_key or not planned:
        return None
    key = LaunchKey.from_dict(json.loads(raw_key))
    return record_measurement(key, int(planned), measured_tokens, path)


def calibration_extra(key: LaunchKey, planned_tokens: int) -> dict[str, str]:
    """What a LaunchSpec carries (its `extra`) so the supervisor can record the launch once it logs."""
    return {"calibration_key": json.dumps(key.as_dict(), sort_keys=True), "planned_kv_tokens": str(planned_tokens)}


def _entry(m: Measurement) -> dict[str, Any]:
    return {
        "key": m.key.as_dict(),
        "planned_tokens": m.planned_tokens,
        "measured_tokens": m.measured_tokens,
        "recorded_at": m.recorded_at,
        "error": None if m.error is None else round(m.error, 4),
    }


def _measurement(entry: dict[str, Any]) -> Measurement:
    return Measurement(
        LaunchKey.from_dict(entry["key"]),
        int(entry["planned_tokens"]),
        int(entry["measured_tokens"]),
        str(entry["recorded_at"]),
    )
