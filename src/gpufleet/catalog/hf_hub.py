"""Add an uncatalogued model from the Hugging Face Hub without downloading its weights.

Two metadata reads through `huggingface_hub` (an optional dependency): `config.json`, and the
safetensors headers (`HfApi.get_safetensors_metadata` reads each shard's JSON header with a range
request), whose tensor shapes and dtypes give the exact checkpoint size. HF_ENDPOINT selects the hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gpufleet.catalog.hf_dir import model_from_config
from gpufleet.catalog.specs import ModelSpec
from gpufleet.errors import CatalogError

# Bytes per element of the safetensors dtypes a checkpoint can hold.
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip


def checkpoint_bytes(parameter_count: dict[str, int], where: str) -> int:
    """Bytes of all tensors: elements per dtype (from the safetensors headers) x that dtype's size."""
    unknown = sorted(set(parameter_count) - set(SAFETENSORS_DTYPE_BYTES))
    if unknown:
        raise CatalogError(f"{where}: safetensors dtype(s) {', '.join(unknown)} have no known size")
    return sum(count * SAFETENSORS_DTYPE_BYTES[dtype] for dtype, count in parameter_count.items())


def model_from_hub(
    repo_id: str, *, revision: str | None = None, endpoint: str | None = None, token: str | bool | None = None
) -> ModelSpec:
    """A ModelSpec for `repo_id` from its config.json and safetensors headers (no weight download)."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            NotASafetensorsRepoError,
            RepositoryNotFoundError,
        )
        from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    except ImportError:
        raise CatalogError(
            "planning a model from the Hugging Face Hub needs huggingface_hub: pip install 'gpufleet[hub]'"
        ) from None
    # HF_ENDPOINT is read per call (huggingface_hub reads it once, at import).
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    where = f"{api.endpoint}/{repo_id}"
    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()  # the CLI prints the plan, not download bars
    try:
        config_file = api.hf_hub_download(repo_id, "config.json", revision=revision)
        config: Any = json.loads(Path(config_file).read_text(encoding="utf-8"))
        metadata = api.get_safetensors_metadata(repo_id, revision=revision)
    except NotASafetensorsRepoError:
        raise CatalogError(f"{where}: no safetensors weights (vLLM needs safetensors)") from None
    except (EntryNotFoundError, RepositoryNotFoundError):
        raise CatalogError(
            f"{where}: no such model or no config.json (check the repo id; private repos need HF_TOKEN)"
        ) from None
    except (HfHubHTTPError, OSError) as err:
        raise CatalogError(f"{where}: cannot read the model's metadata ({str(err).splitlines()[0]})") from None
    except json.JSONDecodeError as err:
        raise CatalogError(f"{where}/config.json: not valid JSON ({err})") from None
    finally:
        if not bars_were_off:
            enable_progress_bars()
    return model_from_config(
        config,
        repo=repo_id,
        weight_bytes=lambda: checkpoint_bytes({str(k): int(v) for k, v in metadata.parameter_count.items()}, where),
        size_source=f"measured: safetensors headers of {repo_id} on {api.endpoint}",
        where=f"{where}/config.json",
        name=repo_id.split("/")[-1].lower(),
    )
