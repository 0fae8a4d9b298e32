"""Operational endpoints: liveness, readiness, status, Prometheus metrics, and admin start/stop/swap."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.config import RemoteModel
from gpufleet.errors import AuthError, GpufleetError, ModelNotFound
from gpufleet.gateway.auth import presented_key
from gpufleet.gateway.errors import error_response
from gpufleet.gateway.state import Gateway, state_of
from gpufleet.redact import redact_url

_JSON = "application/json"


def _gateway(request: Request) -> Gateway:
    return state_of(request)


async def health(request: Request) -> Response:
    """Liveness: the gateway process answers."""
    return Response(b'{"status":"ok"}', media_type=_JSON)


async def ready(request: Request) -> Response:
    """Readiness: 200 once every preloaded model is ready (so a load balancer only sends traffic then)."""
    gateway = _gateway(request)
    waiting = [
        item["name"]
        for item in gateway.supervisor.status()
        if gateway.config.models[item["name"]].preload
        and item["state"] != "ready"
        # A swap-group member that is not up is swapped out by design (its group was full at start).
        and not (item.get("swap_group") and item["state"] in ("stopped", "sleeping"))
    ]
    body = {"status": "ready" if not waiting else "starting", "waiting_for": waiting}
    return Response(orjson.dumps(body), status_code=200 if not waiting else 503, media_type=_JSON)


async def status(request: Request) -> Response:
    """Every model: engine state, phase, pid, engine URL, in-flight, restarts, last error; each swap group."""
    gateway = _gateway(request)
    try:
        principal = gateway.keys.check(presented_key(request.headers))
        if principal.key is not None:
            # Engine pids, URLs, log tails and every route's targets are the operator's, not a team key's.
            raise AuthError(
                "/status needs an admin key (server.api_keys), not a team key",
                status_code=403,
                code="status_requires_admin_key",
            )
    except GpufleetError as err:
        return error_response(err)
    managed = {item["name"]: item for item in gateway.supervisor.status()}
    models = []
    for name, model in gateway.config.models.items():
        entry = managed.get(name) or {"name": name, "engine": model.engine, "state": "remote"}
        entry = {**entry, "aliases": list(model.aliases)}
        if name in gateway.dialect_warnings:
            entry["warnings"] = [*entry.get("warnings", []), gateway.dialect_warnings[name]]
        if model.engine == "remote":
            entry["base_url"] = redact_url(model.url) if isinstance(model, RemoteModel) else None
        models.append(entry)
    body: dict[str, object] = {
        "models": models,
        "targets": gateway.router.snapshot(),
        "swap_groups": gateway.supervisor.swap_groups_status(),
    }
    body["stream_resumes"] = dict(gateway.router_metrics.resume_counts)  # by outcome (docs/router.md)
    body["store"] = gateway.admission.status()  # keys and usage ledger: up or down, rows queued
    if gateway.auto_model is not None:
        body["auto"] = gateway.auto_model.status()
    elif gateway.config.router.auto is not None:
        body["auto"] = {"classifier": "rules", "state": "ready"}
    return Response(orjson.dumps(body), media_type=_JSON)


async def metrics(request: Request) -> Response:
    """Prometheus text format; behind the API key with `server.metrics_require_key`."""
    gateway = _gateway(request)
    if gateway.config.server.metrics_require_key:
        try:
            gateway.keys.check(presented_key(request.headers))
        except GpufleetError as err:
            return error_response(err)
    return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _managed_name(gateway: Gateway, request: Request) -> str:
    gateway.keys.check_admin(presented_key(request.headers))
    name = gateway.table.resolve(request.path_params["name"]).primary.model
    if not gateway.supervisor.is_managed(name):
        raise ModelNotFound(f"model {name!r} is not served by a local engine (nothing to start or stop)")
    return name


async def stop_model(request: Request) -> Response:
    """Unload a model now; it starts again on the next request."""
    gateway = _gateway(request)
    try:
        name = _managed_name(gateway, request)
        await gateway.supervisor.stop_model(name)
    except GpufleetError as err:
        return error_response(err)
    return Response(orjson.dumps({"model": name, "state": "stopped"}), media_type=_JSON)


async def start_model(request: Request) -> Response:
    """Load a model now and wait until it is ready."""
    gateway = _gateway(request)
    try:
        name = _managed_name(gateway, request)
        upstream = await gateway.supervisor.ensure_ready(name)
    except GpufleetError as err:
        return error_response(err)
    # The engine's per-start key goes only to an admin (for `gpufleet bench --compare-direct`).
    body = {"model": name, "state": "ready", "engine_url": upstream.base_url, "engine_api_key": upstream.api_key}
    return Response(orjson.dumps(body), media_type=_JSON)


async def swap_model(request: Request) -> Response:
    """Bring a swap-group member up now, freeing idle members of its group (the seed's `gpu-mode r1`).

    Waits, in the group's queue, for busy members to finish their requests; answers when the model is ready.
    """
    gateway = _gateway(request)
    try:
        name = _managed_name(gateway, request)
        result = await gateway.supervisor.swap_to(name)
    except GpufleetError as err:
        return error_response(err)
    body = {
        "model": name,
        "state": "ready",
        "engine_url": result.upstream.base_url,
        "swap_group": result.group,
        "freed": [{"model": f.model, "how": f.how} for f in result.freed],
    }
    return Response(orjson.dumps(body), media_type=_JSON)
