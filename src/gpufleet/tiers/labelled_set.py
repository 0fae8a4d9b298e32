"""Labelled `auto` requests: the set shipped with gpufleet (tiers/data/tier_prompts.yaml) or an operator's own.

The same file measures the rules (tests/test_classifier.py) and gives the embedding kNN its examples
(`router.auto.classifier: {kind: knn}`). Format, shared by both:

    documents:                 # optional: long texts, referenced as "{doc:NAME}" or "{doc:NAME*N}" (N copies)
      article: |
        ...
    prompts:
      - id: greet-hi           # optional, unique when given
        tier: routine          # routine | moderate | complex
        split: tune            # optional: which part of the set (only the measurements use it)
        request: {messages: [{role: user, content: "hi"}]}   # a chat or completions body

    >>> [item["tier"] for item in parse_labelled({"prompts": [{"tier": "routine", "request": {"prompt": "hi"}}]})]
    ['routine']
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

SHIPPED = Path(__file__).parent / "data" / "tier_prompts.yaml"
TIERS = ("routine", "moderate", "complex")
_DOC_RE = re.compile(r"\{doc:(\w+)(?:\*(\d+))?\}")


class LabelledSetError(ValueError):
    """A labelled set that cannot be used; the message names the item and key (e.g. `prompts[3].tier`)."""


def load_labelled(path: Path = SHIPPED) -> list[dict[str, Any]]:
    """The labelled prompts of `path` with `{doc:...}` placeholders expanded; LabelledSetError when malformed."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelledSetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LabelledSetError(f"{path}: cannot read: {err}") from None
    except yaml.YAMLError as err:
        raise LabelledSetError(f"{path}: invalid YAML: {getattr(err, 'problem', None) or err}") from None
    try:
        return parse_labelled(data)
    except LabelledSetError as err:
        raise LabelledSetError(f"{path}: {err}") from None


def parse_labelled(data: Any) -> list[dict[str, Any]]:
    """Check already-loaded YAML and expand its documents (see the module docstring for the format)."""
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list) or not data["prompts"]:
        raise LabelledSetError("prompts: a non-empty list of {tier, request} is required")
    docs = data.get("documents") or {}
    if not isinstance(docs, dict) or not all(isinstance(text, str) for text in docs.values()):
        raise LabelledSetError("documents: a mapping of name to text is expected")

    def expand(node: Any, where: str) -> Any:
        if isinstance(node, str):

            def document(match: re.Match[str]) -> str:
                if match[1] not in docs:
                    raise LabelledSetError(f"{where}: unknown document {match[1]!r}")
                return "\n".join([docs[match[1]]] * int(match[2] or 1))

            return _DOC_RE.sub(document, node)
        if isinstance(node, list):
            return [expand(item, where) for item in node]
        if isinstance(node, dict):
            return {key: expand(value, where) for key, value in node.items()}
        return node

    items: list[dict[str, Any]] = []
    ids: set[str] = set()
    for i, item in enumerate(data["prompts"]):
        where = f"prompts[{i}]"
        if not isinstance(item, dict):
            raise LabelledSetError(f"{where}: a mapping with tier and request is expected")
        if item.get("tier") not in TIERS:
            raise LabelledSetError(f"{where}.tier: {item.get('tier')!r} is not one of {', '.join(TIERS)}")
        request = item.get("request")
        if not isinstance(request, dict) or not ("messages" in request or "prompt" in request):
            raise LabelledSetError(f"{where}.request: a chat (messages) or completions (prompt) body is expected")
        if "id" in item:
            if item["id"] in ids:
                raise LabelledSetError(f"{where}.id: {item['id']!r} is used twice")
            ids.add(item["id"])
        items.append({**item, "request": expand(request, f"{where}.request")})
    return items
