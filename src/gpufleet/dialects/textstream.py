"""Text primitives for streaming parsers: how much of a buffer may be released now.

A tag such as `<tool_call>` can be cut anywhere by chunking (vLLM #19056, vllm-mlx PR #55), so a
streaming parser holds back any suffix that could still become a tag, and emits the rest.
"""

from __future__ import annotations


def partial_tag_len(text: str, *tags: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `tags`.

    >>> partial_tag_len("hello <tool_c", "<tool_call>")
    7
    """
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best


def releasable_len(text: str, *tags: str, hold_whitespace: bool = False) -> int:
    """How many leading characters of `text` can be emitted without cutting a possible tag.

    With `hold_whitespace`, trailing whitespace is held too (it may turn out to sit next to a tag
    and be dropped).
    """
    cut = len(text) - partial_tag_len(text, *tags)
    if hold_whitespace:
        while cut > 0 and text[cut - 1].isspace():
            cut -= 1
    return cut
