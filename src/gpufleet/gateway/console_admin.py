"""Admin views the console shows beside the fleet: the host panel and an engine's log tail.

Admin keys (server.api_keys) only; a team key gets 403, no key 401, and a page on another origin is refused
before it gets here (origin_guard.py). Both only read: nothing here changes the fleet.

    GET /admin/host                         → {"cpu": {...}, "memory": {...}, "gpus": [...], "nvml": "ok"}
    GET /admin/models/{name}/logs?lines=100 → {"model", "state", "pid", "lines": [...], ...}  (credentials masked)
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.child_process import RECENT_LINES
from gpufleet.config import RemoteModel
from gpufleet.doctor.host_load import HostMonitor
from gpufleet.errors import GpufleetError, ModelNotFound, RequestError
from gpufleet.gateway.auth import presented_key
from gpufleet.gateway.errors import error_response
from gpufleet.gateway.state import Gateway, state_of

_JSON = "application/json"
_NO_STORE = {"Cache-Control": "no-store"}
DEFAULT_LOG_LINES = 100


def _admin(request: Request) -> Gateway:
    gateway = state_of(request)
    gateway.keys.check_admin(presented_key(request.headers))
    return gateway


def monitor_of(request: Request) -> HostMonitor:
    """The app's one HostMonitor (made at the first read: it keeps the last CPU reading between polls)."""
    monitor: HostMonitor | None = getattr(request.app.state, "host_monitor", None)
    if monitor is None:
        monitor = request.app.state.host_monitor = HostMonitor()
    return monitor


async def host(request: Request) -> Response:
    """CPU, RAM and every GPU (NVML), each GPU process tagged with the model whose engine holds it."""
    try:
        gateway = _admin(request)
    except GpufleetError as err:
        return error_response(err)
    reading = await monitor_of(request).read()
    # An engine is its own process group (child_process.py): its workers' GPU memory belongs to its model.
    models_by_group = {item["pid"]: item["name"] for item in gateway.supervisor.status() if item.get("pid")}
    for gpu in reading["gpus"]:
        for process in gpu["processes"]:
            process["model"] = models_by_group.get(process.pop("group", None))
    return Response(orjson.dumps(reading), media_type=_JSON, headers=_NO_STORE)


def _lines_param(request: Request) -> int:
    raw = request.query_params.get("lines", str(DEFAULT_LOG_LINES))
    if not raw.isdigit() or not 1 <= int(raw) <= RECENT_LINES:
        raise RequestError(
            f"lines={raw!r}: give a whole number from 1 to {RECENT_LINES} (the lines kept per engine)",
            param="lines",
            code="invalid_lines",
        )
    return int(raw)


def _known_secrets(gateway: Gateway) -> list[str]:
    config = gateway.config
    remote_keys = [m.api_key for m in config.models.values() if isinstance(m, RemoteModel) and m.api_key]
    return [*config.server.api_keys, *remote_keys]


async def engine_log(request: Request) -> Response:
    """The last `lines` lines (default 100, at most 200) the model's engine printed, credentials masked."""
    try:
        gateway = _admin(request)
        lines = _lines_param(request)
        name = gateway.table.resolve(request.path_params["name"]).primary.model
        if not gateway.supervisor.is_managed(name):
            raise ModelNotFound(
                f"model {name!r} is served by a remote endpoint: gpufleet runs no engine for it, so "
                "it has no engine log here"
            )
    except GpufleetError as err:
        return error_response(err)
    body = gateway.supervisor.engine_log(name, lines, _known_secrets(gateway))
    return Response(orjson.dumps(body), media_type=_JSON, headers=_NO_STORE)
