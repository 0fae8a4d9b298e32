"""What the console's log view shows of one model's engine: the last lines its latest process printed.

The supervisor keeps each engine process's last RECENT_LINES lines (stdout and stderr together) in memory; a
restart starts a fresh buffer, and the whole history stays in the log file under the cache dir. Credentials are
masked before anything leaves: the per-start engine key, the secret-looking values of the engine's environment,
URL user-info, and values that look like keys or tokens (gpufleet.redact.mask_secrets).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gpufleet.child_process import RECENT_LINES
from gpufleet.engine_supervisor.slot import EngineSlot
from gpufleet.redact import mask_secrets, secret_env_values


def engine_log_view(slot: EngineSlot, lines: int, known_secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The last `lines` (1..RECENT_LINES) lines of `slot`'s latest engine process, masked, with its state and pid.

    `known_secrets`: more values to mask (the gateway's own keys), beyond those the engine was started with.
    """
    process = slot.process
    known = list(known_secrets)
    captured: list[str] = []
    if process is not None:
        known += [process.spec.api_key or "", *secret_env_values(process.spec.env)]
        captured = process.recent_lines(min(lines, RECENT_LINES))
    return {
        "model": slot.name,
        "state": str(slot.state),
        "pid": process.pid if process is not None and process.returncode is None else None,
        "exit_code": process.returncode if process is not None else None,
        "log_path": str(process.log_path) if process is not None else None,
        "kept_lines": RECENT_LINES,
        "lines": [mask_secrets(line, known) for line in captured],
    }
