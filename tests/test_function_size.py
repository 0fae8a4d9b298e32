"""No function in src/gpufleet is longer than 60 lines, from its `def` to its last line (issue 22).

A longer function does more than one job: split it into named steps. The CLI's typer commands (cli/) are exempt:
their length is their option declarations. Nested functions count on their own and inside their parent.
"""

from __future__ import annotations

import ast

from tests.repo_paths import REPO

SRC = REPO / "src" / "gpufleet"
MAX_LINES = 60
EXEMPT_PACKAGES = ("cli",)


def function_lengths(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, length in lines) of every function and method in `source`."""
    tree = ast.parse(source)
    return [
        (node.name, node.lineno, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_function_lengths_are_measured_from_def_to_last_line() -> None:
    source = "@decorator\ndef f(\n    x: int,\n) -> int:\n    def g() -> int:\n        return x\n\n    return g()\n"
    assert function_lengths(source) == [("f", 2, 7), ("g", 5, 2)]


def test_no_function_outside_the_cli_exceeds_60_lines() -> None:
    too_long = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] in EXEMPT_PACKAGES:
            continue
        for name, line, length in function_lengths(path.read_text(encoding="utf-8")):
            if length > MAX_LINES:
                too_long.append(f"{path.relative_to(REPO)}:{line} {name} ({length} lines)")
    assert not too_long, f"functions over {MAX_LINES} lines (split them into named steps):\n" + "\n".join(too_long)
