"""The gpufleet.yaml examples in the README and docs are valid configs (a copied example must load)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gpufleet.config import parse_config

REPO = Path(__file__).resolve().parent.parent
# Whole-config examples only (fragments such as a lone `router:` block are checked by their own docs tests).
FILES = ["README.md", "docs/router.md", "docs/config.md", "docs/keys.md"]


def yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("name", FILES)
def test_config_examples_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLEET_KEY", "example-key")
    monkeypatch.setenv("RIG_KEY", "example-key")
    blocks = yaml_blocks(REPO / name)
    assert blocks, f"{name} has no yaml example"
    for block in blocks:
        data = yaml.safe_load(block)
        if "models" in data:
            parse_config(data, file=name)
