"""Model names as path material: which names are refused, and the file name derived from one (issue 20).

A served name may contain `/` (`Qwen/Qwen3-8B`), and gpufleet names files after models (engine logs, the
transformers engine's run folder and model link). A name with `.`/`..` segments or a leading `/` would lead
those paths out of the cache (`a/../../../victim.txt` replaced a file with a symlink), so such names are
refused when the config loads, and file names are derived with `file_stem`, never by pasting the name.

    name_problem("a/../b")      # "has a '..' segment ..."
    file_stem("Qwen/Qwen3-8B")  # 'Qwen_Qwen3-8B-a82fd547' (a short hash keeps 'a/b' and 'a_b' apart)
"""

from __future__ import annotations

import hashlib
import re

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a model name that files are named after; None when it can."""
    if name.startswith("/"):
        return "starts with '/'"
    segments = name.split("/")
    for bad in (".", ".."):
        if bad in segments:
            return f"has a {bad!r} path segment"
    if "" in segments:
        return "has an empty path segment ('//' or a trailing '/')"
    if "\\" in name:
        return "contains a backslash"
    return None


def file_stem(name: str) -> str:
    """A single safe file-name component for model `name`: the name itself when plain, else a slug + hash."""
    if _PLAIN.fullmatch(name) and ".." not in name:
        return name
    slug = _UNSAFE.sub("_", name).strip("._")[:80] or "model"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
