"""Secrets out of generated deployments (issue 20): literal keys, tokens and URL passwords in a gpufleet.yaml
become `${VAR}` references, and their values go only to an env file with mode 0600 (`.env` for compose and for
`kubectl create secret generic gpufleet-env --from-env-file=.env`, `gpufleet.env` for systemd), never into a
ConfigMap, a manifest's `value:` or a world-readable file.

    raw, secrets = lift_secrets(raw)   # raw: the config with ${GPUFLEET_API_KEY_1}...; secrets: name -> value

Lifted: `server.api_keys` entries, the password in `server.database_url`, a model's `api_key`, the password in a
model's `url`, and `env` values (of a
model, its `docker` and its `ray` block) whose name says secret (TOKEN, KEY, SECRET, PASSWORD, CREDENTIAL).
"""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import urlsplit

_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_VAR_SAFE = re.compile(r"[^A-Z0-9_]")
SECRET_FILE_MODE = 0o600


def lift_secrets(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(a copy of `raw` with every literal secret replaced by a `${VAR}`, {VAR: value})."""
    out = copy.deepcopy(raw)
    secrets: dict[str, str] = {}

    def lift(name: str, value: str) -> str:
        name = _VAR_SAFE.sub("_", name.upper())
        while name in secrets and secrets[name] != value:
            name += "_2"
        secrets[name] = value
        return "${" + name + "}"

    server = out.get("server")
    if isinstance(server, dict) and isinstance(server.get("api_keys"), list):
        server["api_keys"] = [
            lift(f"GPUFLEET_API_KEY_{i}", key) if _literal(key) else key
            for i, key in enumerate(server["api_keys"], start=1)
        ]
    if isinstance(server, dict) and isinstance(server.get("database_url"), str):
        server["database_url"] = _lift_url_password(
            server["database_url"], lambda pw: lift("GPUFLEET_DATABASE_PASSWORD", pw)
        )
    for model_name, model in (out.get("models") or {}).items():
        if not isinstance(model, dict):
            continue
        prefix = f"GPUFLEET_{model_name}"
        if _literal(model.get("api_key")):
            model["api_key"] = lift(f"{prefix}_API_KEY", model["api_key"])
        if isinstance(model.get("url"), str):
            model["url"] = _lift_url_password(model["url"], lambda pw, p=prefix: lift(f"{p}_URL_PASSWORD", pw))
        for holder in (model, model.get("docker"), model.get("ray")):
            env = holder.get("env") if isinstance(holder, dict) else None
            if isinstance(env, dict):
                for key, value in env.items():
                    if _SECRET_NAME.search(key) and _literal(value):
                        env[key] = lift(key, value)
    return out, secrets


def _literal(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "${" not in value


def _lift_url_password(url: str, lift: Any) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password or "${" in password:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return url.replace(f"{parts.netloc}", f"{user}:{lift(password)}@{host}", 1)
