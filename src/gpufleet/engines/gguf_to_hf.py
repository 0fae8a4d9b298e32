"""Convert a GGUF file into a Hugging Face model directory that vLLM can serve.

Run as a script with the *engine* venv's python (it needs torch, transformers, gguf, accelerate),
never imported by gpufleet itself:

    <venv>/bin/python -I gguf_to_hf.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out DIR

Recipe from reference/embedded-engine.md ("GGUF → HF directory"): transformers dequantizes the GGUF
on load, but `save_pretrained` then refuses ("The model is quantized with gguf and is not serializable")
until the GGUF quantizer is cleared. The result is written to DIR.tmp and renamed, so a killed run never
leaves a half directory that looks complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    """Write an HF directory (config, bf16 safetensors, tokenizer, chat template) for `gguf` at `out`."""
    # Imported here: these live only in the engine venv, and this module must stay importable
    # (for ruff/mypy and for locating it) from gpufleet's own venv.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    print(f"loading tokenizer from {gguf}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    print("loading and dequantizing weights (bfloat16)", flush=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # Without these two lines save_pretrained raises "quantized with gguf and is not serializable".
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    print(f"saving to {out}", flush=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"converted in {time.monotonic() - started:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: `--gguf FILE --out DIR`; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gguf", type=Path, required=True, help="the .gguf file to convert")
    parser.add_argument("--out", type=Path, required=True, help="the HF directory to write")
    args = parser.parse_args(argv)
    if not args.gguf.is_file():
        print(f"error: GGUF file not found: {args.gguf}", file=sys.stderr)
        return 2
    convert(args.gguf.resolve(), args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
