"""Worked structured-output schemas from the seeds.

Seed 002 classifies documents (paperless-style) with Qwen3-8B-AWQ and requires valid JSON with a
title, tags and a correspondent (NFR110).
"""

from __future__ import annotations

from typing import Any

DOCUMENT_CLASSIFICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "correspondent": {"type": "string"},
    },
    "required": ["title", "tags", "correspondent"],
    "additionalProperties": False,
}


def document_classification_format() -> dict[str, Any]:
    """The `response_format` a client sends for seed 002's classification."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "document_classification",
            "schema": DOCUMENT_CLASSIFICATION_SCHEMA,
            "strict": True,
        },
    }
