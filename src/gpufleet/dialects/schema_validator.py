"""JSON Schema validation whose regexes run in linear time (RE2), for client-supplied schemas.

`response_format.json_schema` comes from the client, and jsonschema checks `pattern` / `patternProperties`
with Python's backtracking `re`: `^(a+)+$` against 30 `a`s and a `b` froze the gateway's event loop for
seconds (issue 12). RE2 guarantees time linear in the input; it lacks backreferences and lookaround, so a
schema using them is refused with a 400 naming the pattern instead of being half-checked.

    check_patterns(schema, param="response_format.json_schema.schema")   # RequestError on a pattern RE2 lacks
    errors = list(schema_validator(schema).iter_errors(document))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import re2
from jsonschema import ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend, validator_for

from gpufleet.errors import RequestError

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is the client's; RE2 would also print it to stderr


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _OPTIONS)


def _search(pattern: str, text: str) -> bool:
    return _compiled(pattern).search(text) is not None


def _pattern(validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Validator, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    # jsonschema's own version matches patternProperties' keys with `re` (same wording of its errors here).
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = sorted(k for k in instance if k not in known and not any(_search(p, k) for p in patterns))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False and extras:
        listed = ", ".join(repr(e) for e in extras)
        if patterns:
            yield ValidationError(f"{listed} do(es) not match any of the regexes: {', '.join(map(repr, patterns))}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


_LINEAR = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
}


@lru_cache(maxsize=16)
def _linear_class(base: type[Validator]) -> type[Validator]:
    return extend(base, validators=_LINEAR)  # type: ignore[no-any-return]


def schema_validator(schema: Mapping[str, Any]) -> Validator:
    """A validator for `schema` (its declared draft) that matches every regex with RE2."""
    cls = _linear_class(validator_for(schema))
    return cls(schema)


def check_patterns(schema: Any, *, param: str) -> None:
    """RequestError (400) when a `pattern` / `patternProperties` key in `schema` is not a regex RE2 runs.

    Also refuses `unevaluatedProperties` next to `patternProperties`: jsonschema evaluates that pair with
    Python's `re` internally, outside the keywords replaced here.
    """
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        patterns: list[Any] = []
        if isinstance(node.get("pattern"), str):
            patterns.append(node["pattern"])
        if isinstance(node.get("patternProperties"), dict):
            patterns.extend(node["patternProperties"])
            if "unevaluatedProperties" in node:
                raise RequestError(
                    f"{param}: patternProperties together with unevaluatedProperties is not "
                    "supported; use additionalProperties",
                    param=param,
                )
        for pattern in patterns:
            try:
                _compiled(pattern)
            except re2.error as err:
                reason = err.args[0].decode(errors="replace") if err.args and isinstance(err.args[0], bytes) else err
                raise RequestError(
                    f"{param}: pattern {pattern!r} is not supported ({reason}); patterns run on RE2, which has no "
                    "backreferences or lookaround",
                    param=param,
                ) from None
        stack.extend(node.values())


# Keywords whose subschemas apply to the same instance: a cycle through only these (and $ref) never reaches a value,
# so validating anything against it recurses until Python's stack runs out (a RecursionError after generation).
_SAME_INSTANCE_LISTS = ("allOf", "anyOf", "oneOf")
_SAME_INSTANCE_ONE = ("not", "if", "then", "else")


def _pointer_part(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def _subschemas(schema: Any) -> dict[str, Any]:
    """Every object in `schema` by its JSON pointer ("" is the root)."""
    found: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", schema)]
    while stack:
        pointer, node = stack.pop()
        if isinstance(node, dict):
            found[pointer] = node
            stack.extend(
                (f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}", value)
                for key, value in node.items()
                if isinstance(key, str)
            )
        elif isinstance(node, list):
            stack.extend((f"{pointer}/{index}", value) for index, value in enumerate(node))
    return found


def _ref_target(ref: str, nodes: Mapping[str, Any], anchors: Mapping[str, str], *, param: str, at: str) -> str:
    if ref == "#" or ref.startswith("#/"):
        target = "/".join(_pointer_part(unquote(p)) for p in ref[1:].split("/")) if ref != "#" else ""
        canonical = "".join(f"/{p.replace('~', '~0').replace('/', '~1')}" for p in target.split("/")[1:])
        if canonical in nodes:
            return canonical
    elif ref.startswith("#") and ref[1:] in anchors:
        return anchors[ref[1:]]
    else:
        raise RequestError(
            f"{param}: $ref {ref!r} at '#{at}' is not supported: only references inside the schema ('#/$defs/...') are",
            param=param,
        )
    raise RequestError(f"{param}: $ref {ref!r} at '#{at}' points to nothing in the schema", param=param)


def check_refs(schema: Any, *, param: str) -> None:
    """RequestError (400) for a `$ref` that leaves the schema, points nowhere, or loops without reaching a value.

    `{"$ref": "#"}` or two `$defs` referring to each other made jsonschema recurse until a RecursionError, after the
    model had generated; a recursive schema that descends into the value (a tree's `children`) stays allowed.
    """
    nodes = _subschemas(schema)
    anchors = {node["$anchor"]: pointer for pointer, node in nodes.items() if isinstance(node.get("$anchor"), str)}
    edges: dict[str, list[str]] = {}
    for pointer, node in nodes.items():
        out: list[str] = []
        if isinstance(node.get("$ref"), str):
            out.append(_ref_target(node["$ref"], nodes, anchors, param=param, at=pointer))
        for key in _SAME_INSTANCE_LISTS:
            if isinstance(node.get(key), list):
                out.extend(f"{pointer}/{key}/{i}" for i, item in enumerate(node[key]) if isinstance(item, dict))
        out.extend(f"{pointer}/{key}" for key in _SAME_INSTANCE_ONE if isinstance(node.get(key), dict))
        edges[pointer] = out
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in edges:
        if state.get(start):
            continue
        path: list[tuple[str, int]] = [(start, 0)]
        state[start] = 1
        while path:
            pointer, index = path[-1]
            following = edges.get(pointer, [])
            if index == len(following):
                state[pointer] = 2
                path.pop()
                continue
            path[-1] = (pointer, index + 1)
            nxt = following[index]
            if state.get(nxt) == 1:
                raise RequestError(
                    f"{param}: the schema refers to itself at '#{nxt}' without describing any value "
                    "(a $ref cycle); nothing could ever be validated against it",
                    param=param,
                )
            if not state.get(nxt):
                state[nxt] = 1
                path.append((nxt, 0))
