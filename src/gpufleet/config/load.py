"""Read gpufleet.yaml: YAML without duplicate keys, `${VAR}` expansion, and pydantic errors as key paths."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gpufleet.config.schema import Config
from gpufleet.errors import ConfigError

# Served with no config file: the Qwen model shipped on PyPI (make run), plus the tiny SmolLM2 loaded on demand.
DEFAULT_CONFIG: dict[str, Any] = {
    "models": {
        "qwen2.5-coder-1.5b-instruct": {
            "engine": "llamacpp",
            "source": "package:qwen2.5-coder-1.5b-instruct",
            "aliases": ["qwen2.5-coder", "default"],
            "preload": True,
            "context": 8192,
            "parallel": 4,
        },
        "smollm2-135m-instruct": {
            "engine": "llamacpp",
            "source": "package:smollm2-135m-instruct",
            "aliases": ["smollm2"],
            "idle_ttl_s": 300,
            "context": 8192,
            "parallel": 4,
        },
    }
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"duplicate key {key!r} (line {line})")
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, path: str) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string; an unset VAR without default is an error."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set", key_path=path or None)

        return _ENV_REF.sub(replace, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}.{i}") for i, v in enumerate(value)]
    return value


_KEYED_MESSAGE = re.compile(r"^(models|routes|personas|router|swap_groups)(\.\S*)?: ")


def _key_path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts a discriminated union's tag in the location: the engine after `models.NAME`, and "rules" /
    # "mapping" after `router.auto.classifier`. Users never wrote those; a model may well be named "vllm".
    parts = [str(p) for p in loc]
    if len(parts) > 2 and parts[0] == "models" and parts[2] in ("llamacpp", "remote", "vllm", "transformers"):
        del parts[2]
    if parts[:3] == ["router", "auto", "classifier"] and parts[3:4] in (["rules"], ["mapping"]):
        del parts[3]
    return ".".join(parts) or "(top level)"


def parse_config(data: Any, *, file: str = "<config>", expand_env: bool = True) -> Config:
    """Validate already-loaded YAML data into a Config, or raise ConfigError (file, key path, reason).

    `expand_env=False` keeps `${VAR}` references as written (the deploy generators pass them on to the
    target, which fills them at run time, so no secret of the generating shell lands in a generated file).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", file=file)
    try:
        data = _expand_env(data, "") if expand_env else data
    except ConfigError as err:
        raise ConfigError(err.reason, file=file, key_path=err.key_path) from None
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        loc = tuple(first["loc"])
        if not loc and _KEYED_MESSAGE.match(msg):
            # Cross-reference checks run on the whole config; their message starts with the key path.
            key, msg = msg.split(": ", 1)
            loc = (key,)
        more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
        if first["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/config.md)"
        elif first["type"] == "union_tag_invalid":
            msg = "unknown engine; expected one of: llamacpp, vllm, transformers, remote"
        elif first["type"] == "union_tag_not_found":
            msg = "missing 'engine' (one of: llamacpp, vllm, transformers, remote)"
        raise ConfigError(msg + more, file=file, key_path=_key_path(loc)) from None


def load_config(path: Path | None, *, expand_env: bool = True) -> Config:
    """Load gpufleet.yaml from `path`; with None, the built-in default (the embedded Qwen model)."""
    if path is None:
        return parse_config(DEFAULT_CONFIG, file="<built-in default>")
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=file) from None
    except UnicodeDecodeError as err:
        bad = err.object[err.start : err.start + 1].hex()
        raise ConfigError(
            f"not UTF-8 text (byte 0x{bad} at offset {err.start}); save the file as UTF-8", file=file
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as err:
        raise ConfigError(err.reason, file=file) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"invalid YAML{where}: {problem}", file=file) from None
    return parse_config(data, file=file, expand_env=expand_env)
