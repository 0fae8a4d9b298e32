"""`gpufleet node join` refuses bad input with a message and exit code 2 (its working path: test_ray_netns.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gpufleet.cli import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["spark-1:x"], "HEAD: 'spark-1:x': the port must be a number from 1 to 65535"),
        (
            ["198.51.100.10", "--node-ip", "198.51.100.11", "--python", "/nonexistent/python"],
            "--python /nonexistent/python does not exist",
        ),
    ],
)
def test_node_join_bad_input_exits_2_with_the_reason(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["node", "join", *args])
    assert result.exit_code == 2
    assert f"error: {message}" in result.output
