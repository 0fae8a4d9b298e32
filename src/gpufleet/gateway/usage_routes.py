"""`GET /admin/usage`: the usage ledger over HTTP for admins (what `gpufleet keys usage` prints; the console).

    curl -H "Authorization: Bearer $ADMIN_KEY" 'http://127.0.0.1:8000/admin/usage?since=7d&by=key,model'
    → {"since": 1765..., "by": ["key", "model"], "rows": [{"key": "alice", "model": "qwen", "requests": 12, ...}]}
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.errors import ConfigError, GpufleetError, RequestError
from gpufleet.gateway.errors import error_response
from gpufleet.store import parse_duration

if TYPE_CHECKING:
    from gpufleet.gateway.app import Gateway


async def usage(request: Request) -> Response:
    """Totals from the ledger since `since` (default 7d), grouped by `by` (default key); admin keys only."""
    gateway: Gateway = request.app.state.gateway
    try:
        gateway.keys.check_admin(request.headers.get("authorization"))
        since_text = request.query_params.get("since", "7d")
        groups = [g.strip() for g in request.query_params.get("by", "key").split(",") if g.strip()]
        try:
            since = time.time() - parse_duration(since_text, option="since")
            await gateway.admission.writer.flush()  # the answer includes the rows still queued
            rows = await gateway.admission.writer.query(since, groups)
        except ConfigError as err:  # a bad `since` or `by`: the client's mistake
            raise RequestError(err.message, param=err.key_path) from None
    except GpufleetError as err:
        return error_response(err)
    body = {"since": since, "by": groups, "rows": rows}
    return Response(orjson.dumps(body), media_type="application/json")
