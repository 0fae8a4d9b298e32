"""Structured output: `response_format` json_object / json_schema on every engine.

Engines with guided decoding (vLLM, llama.cpp which turns `response_format` into a grammar) get the
field as sent. For the others gpufleet removes it, asks for JSON in the system prompt, and validates
the answer afterwards (`validate_structured`); the gateway then re-asks once (`retry_body`) or fails.
Even constrained engines can return invalid JSON when `max_tokens` cuts the document short, so
validation applies to both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from gpufleet.dialects.plan import ResponsePlan
from gpufleet.dialects.schema_validator import check_patterns, check_refs, schema_validator
from gpufleet.errors import RequestError

_FENCE_RE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```\s*\Z", re.S)


def parse_response_format(body: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The client's `response_format` (None for absent/"text") and its JSON schema (None for json_object).

    Raises RequestError (400) for a malformed field or an invalid schema.
    """
    rf = body.get("response_format")
    if rf is None:
        return None, None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None, None
    if kind == "json_object":
        return rf, None
    if kind != "json_schema":
        raise RequestError(
            "response_format.type must be 'text', 'json_object' or 'json_schema'", param="response_format"
        )
    spec = rf.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise RequestError(
            "response_format.json_schema.schema must be a JSON Schema object",
            param="response_format.json_schema.schema",
        )
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as err:
        raise RequestError(
            f"response_format.json_schema.schema is not a valid JSON Schema: {err.message}",
            param="response_format.json_schema.schema",
        ) from None
    check_patterns(schema, param="response_format.json_schema.schema")
    check_refs(schema, param="response_format.json_schema.schema")
    return rf, schema


def structured_instruction(schema: Mapping[str, Any] | None) -> str:
    """The system-prompt text that asks for JSON when the engine cannot constrain its output."""
    if schema is None:
        return "Reply with only a single JSON object: no prose before or after it, no Markdown code fences."
    return (
        "Reply with only a JSON document that validates against this JSON Schema: no prose before "
        "or after it, no Markdown code fences.\n" + json.dumps(schema, ensure_ascii=False)
    )


def add_system_instruction(messages: list[Any], text: str) -> list[Any]:
    """A copy of `messages` with `text` appended to the leading system message (or a new one first).

    Qwen's templates expect a single system message at the start, so the instruction joins it.
    """
    out = list(messages)
    first = out[0] if out else None
    if isinstance(first, dict) and first.get("role") == "system":
        content = first.get("content")
        if isinstance(content, str):
            out[0] = {**first, "content": f"{content}\n\n{text}" if content else text}
            return out
        if isinstance(content, list):
            out[0] = {**first, "content": [*content, {"type": "text", "text": text}]}
            return out
    return [{"role": "system", "content": text}, *out]


def extract_json_text(content: str) -> str:
    """The JSON text inside `content`, unwrapping one Markdown code fence if the model added it."""
    match = _FENCE_RE.match(content)
    return match.group(1) if match else content.strip()


def _check(content: object, plan: ResponsePlan, finish_reason: object) -> str | None:
    cut = " (the output was cut off by max_tokens)" if finish_reason == "length" else ""
    if not isinstance(content, str) or not content.strip():
        return "the model returned no content where a JSON document was required" + cut
    try:
        doc = json.loads(extract_json_text(content))
    except ValueError as err:
        return f"the model's answer is not valid JSON: {err}{cut}"
    if plan.json_schema is None:
        return None if isinstance(doc, dict) else "the model's answer is JSON but not an object"
    validator = schema_validator(plan.json_schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    first = errors[0]
    where = "$" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in first.absolute_path)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"the model's answer does not match the schema at {where}: {first.message}{more}{cut}"


def validate_structured(resp: Mapping[str, Any], plan: ResponsePlan) -> str | None:
    """None when every choice's content satisfies the request's response_format, else a message.

    Choices that answered with tool calls are not checked (they carry no JSON document).
    """
    if plan.response_format is None:
        return None
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices:
        return "the upstream response has no choices to validate"
    for i, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            return f"choice {i} has no message"
        if message.get("tool_calls"):
            continue
        problem = _check(message.get("content"), plan, choice.get("finish_reason"))
        if problem:
            return problem if len(choices) == 1 else f"choice {i}: {problem}"
    return None


def retry_body(body: Mapping[str, Any], resp: Mapping[str, Any], problem: str) -> dict[str, Any]:
    """The upstream body for one re-ask: the bad answer plus a user turn naming what was wrong."""
    choices = resp.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    answer = message.get("content") if isinstance(message, dict) else None
    messages = list(body.get("messages") or [])
    messages.append({"role": "assistant", "content": answer if isinstance(answer, str) else ""})
    messages.append(
        {
            "role": "user",
            "content": f"Your reply was rejected: {problem}. Reply again with only "
            "the JSON document, no prose and no code fences.",
        }
    )
    return {**body, "messages": messages}
