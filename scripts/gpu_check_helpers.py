"""Python steps of scripts/gpu-check (run on the lent GPU machine with PYTHONPATH=<vllm site>:<repo>/src).

    python3 scripts/gpu_check_helpers.py tiny-model /tmp/tq        # random-weight Qwen3 + trained tokenizer
    python3 scripts/gpu_check_helpers.py plan /tmp/tq --gpu h200 --util 0.3 --context 2048 --vllm-version 0.26.0
    python3 scripts/gpu_check_helpers.py kv-from-log serve.log     # what vLLM's log says about its KV cache
    python3 scripts/gpu_check_helpers.py ray-head-argv 10.0.0.5 /tmp/gfray   # the host's network address
    python3 scripts/gpu_check_helpers.py catalog-model qwen3-0.6b /tmp/pvr/qwen3-0.6b   # real shape, random weights
    python3 scripts/gpu_check_helpers.py fixture qwen3-0.6b plan.json serve.log h200 0.26.0 0.5 4096
    python3 scripts/gpu_check_helpers.py host-reading 12345          # the console's host panel, real NVML

Only gpufleet's pure parts are imported (planner, catalog, the vLLM log parser, Ray command lines): they need
pydantic and pyyaml, which the device has or the carried wheels bring. No network: the tiny model is made here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Qwen3's chat template, reduced to what the checks send (system/user/assistant turns, generation prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"]


def tiny_model(out: Path) -> None:
    """A 2-layer random-weight Qwen3 (hidden 256, 4 heads, 2 KV heads, head_dim 64) with a BPE tokenizer trained
    on local text: gibberish answers, but a real Qwen3 architecture for vLLM to load, profile, serve and sleep."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    corpus = [p.read_text(errors="replace") for p in Path(torch.__file__).parent.rglob("*.py")][:400]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=4000, special_tokens=SPECIAL,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL[1:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    config = Qwen3Config(vocab_size=len(fast), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
                         eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"), torch_dtype="bfloat16")
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    print(json.dumps({"model": str(out), "vocab": len(fast)}))


def catalog_model(name: str, out: Path) -> None:
    """A random-weight checkpoint with the real architecture of catalog model `name` (Qwen2/Qwen3).

    vLLM's KV-cache figure depends on the shapes and the bf16 weight bytes, not on the weight values, so
    this is what planner-vs-real needs without a download. Built on the GPU (seconds), saved as safetensors.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from gpufleet.catalog import get_model

    spec = get_model(name).spec
    tiny_model(out)  # the tokenizer (and a tiny config, overwritten below)
    kind = "qwen3" if spec.architecture.startswith("Qwen3") else "qwen2"
    config = AutoConfig.for_model(
        kind, vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers, num_attention_heads=spec.attention_heads, num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim, max_position_embeddings=spec.max_position_embeddings, rope_theta=spec.rope_theta,
        tie_word_embeddings=spec.tie_word_embeddings, torch_dtype="bfloat16", architectures=[spec.architecture],
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    del model
    print(json.dumps({"model": name, "dir": str(out), "layers": spec.layers, "hidden": spec.hidden_size}))


def fixture(name: str, plan_file: Path, log: Path, gpu: str, version: str, util: float, context: int) -> None:
    """A tests/data/planner_logs fixture (split: test) from one planner-vs-real run, for docs/planner.md."""
    import yaml

    from gpufleet.engines.vllm_log import VllmStartupLog

    planned = json.loads(plan_file.read_text())
    parsed = VllmStartupLog()
    lines = log.read_text(errors="replace").splitlines()
    for line in lines:
        parsed.feed(line)
    keep = [ln for ln in lines if any(k in ln for k in ("Model loading took", "Available KV cache memory",
                                                         "GPU KV cache size", "Maximum concurrency", "CUDA graph"))]
    entry = {
        "id": f"gpu-check-{name}-{gpu}-{version}", "source": f"scripts/gpu-check planner-vs-real on {gpu}",
        "split": "test", "model": name, "quantization": "bf16", "gpu": gpu, "gpu_memory_utilization": util,
        "max_model_len": context, "vllm_version": version,
        "notes": "random weights with the real architecture (vLLM sizes the KV cache from shapes and bytes)",
        "reported": {"kv_tokens": parsed.kv_cache.tokens if parsed.kv_cache else None},
        "planned": {k: planned.get(k) for k in ("kv_cache_tokens", "kv_cache_tokens_low", "kv_cache_tokens_high")},
        "excerpt": "\n".join(keep) + "\n",
    }
    print(yaml.safe_dump([entry], sort_keys=False, width=200))


def plan_json(model_dir: Path, gpu: str, util: float, context: int, version: str, eager: bool) -> None:
    """The planner's launch and KV prediction for the tiny model (what gpufleet would start)."""
    from gpufleet.catalog import get_gpu, model_from_hf_dir
    from gpufleet.planner import PlanRequest, plan, plan_launch

    spec = model_from_hf_dir(model_dir)
    result = plan(PlanRequest(model=spec, gpu=get_gpu(gpu), gpu_memory_utilization=util, context=context,
                              enforce_eager=eager, vllm_version=version))
    launch = plan_launch(result, served_model_name="tq", model_path=str(model_dir), enable_tools=False,
                         enable_reasoning=False)
    band = result.band
    print(json.dumps({"fits": result.fits, "kv_cache_tokens": result.kv_cache_tokens,
                      "kv_cache_tokens_low": band.kv_cache_tokens_low if band else None,
                      "kv_cache_tokens_high": band.kv_cache_tokens_high if band else None,
                      "kv_bytes_per_token": result.kv_bytes_per_token, "argv": launch.argv, "env": launch.env}))


def kv_from_log(log: Path) -> None:
    """KV cache tokens, concurrency and phases that gpufleet's vLLM log parser reads from a real log."""
    from gpufleet.engines.vllm_log import VllmStartupLog

    parsed = VllmStartupLog()
    for line in log.read_text(errors="replace").splitlines():
        parsed.feed(line)
    kv = parsed.kv_cache
    print(json.dumps({"phase": parsed.phase.name, "progress": parsed.progress_line(),
                      "kv_tokens": kv.tokens if kv else None, "max_concurrency": kv.max_concurrency if kv else None,
                      "failure": parsed.failure.cause if parsed.failure else None}))


def ray_head_argv(node_ip: str, temp_dir: Path) -> None:
    """gpufleet's `ray start --head --block` for a one-node, one-GPU cluster (vLLM over Ray with TP=1)."""
    from gpufleet.cluster.ray_commands import head_start_argv
    from gpufleet.config import VllmModel, parse_config

    config = parse_config({"models": {"tq": {"engine": "vllm", "model": "/tmp/tq", "nodes": [node_ip],
                                             "gpus_per_node": 1, "ray": {"python": sys.executable}}}})
    model = config.models["tq"]
    assert isinstance(model, VllmModel)
    argv = head_start_argv(model, sys.executable, temp_dir, {})
    # The device has plain `ray` (no dashboard extras) carried in: vLLM over Ray needs only the GCS and raylet.
    argv[argv.index("--include-dashboard") + 1] = "false"
    print(json.dumps(argv))


def host_reading(engine_pgid: int) -> None:
    """The console's host-panel reading (GET /admin/host) on a real GPU through nvidia-ml-py: each GPU's memory,
    utilisation, temperature and power, how long one NVML read takes, and whether the memory of the running
    engine (process group `engine_pgid`, as gpufleet starts engines) is found under that group. Never fails the
    run: what went wrong is in the JSON."""
    import asyncio
    import time

    import pynvml

    from gpufleet.doctor.host_load import HostMonitor, read_nvml_gpus

    started = time.perf_counter()
    gpus, state = read_nvml_gpus(lambda: pynvml)
    read_ms = round((time.perf_counter() - started) * 1000, 1)
    reading = asyncio.run(HostMonitor(nvml_loader=lambda: pynvml).read())
    engine_bytes = sum(p["used_bytes"] or 0 for gpu in reading["gpus"] for p in gpu["processes"]
                       if p.get("group") == engine_pgid)
    print(json.dumps({
        "ok": state == "ok" and bool(gpus) and all(g["memory_total_bytes"] for g in gpus),
        "nvml": state, "nvml_read_ms": read_ms, "gpus": reading["gpus"], "cpu": reading["cpu"],
        "memory": reading["memory"], "engine_pgid": engine_pgid, "engine_gpu_bytes": engine_bytes,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("tiny-model").add_argument("out", type=Path)
    p = sub.add_parser("plan")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--gpu", default="h200")
    p.add_argument("--util", type=float, default=0.3)
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--vllm-version", default="0.26.0")
    p.add_argument("--enforce-eager", action="store_true")
    sub.add_parser("kv-from-log").add_argument("log", type=Path)
    r = sub.add_parser("ray-head-argv")
    r.add_argument("node_ip")
    r.add_argument("temp_dir", type=Path)
    c = sub.add_parser("catalog-model")
    c.add_argument("name")
    c.add_argument("out", type=Path)
    f = sub.add_parser("fixture")
    for arg in ("name", "plan_file", "log", "gpu", "version", "util", "context"):
        f.add_argument(arg)
    sub.add_parser("host-reading").add_argument("engine_pgid", type=int)
    args = parser.parse_args()
    if args.step == "host-reading":
        host_reading(args.engine_pgid)
    elif args.step == "tiny-model":
        tiny_model(args.out)
    elif args.step == "plan":
        plan_json(args.model_dir, args.gpu, args.util, args.context, args.vllm_version, args.enforce_eager)
    elif args.step == "kv-from-log":
        kv_from_log(args.log)
    elif args.step == "catalog-model":
        catalog_model(args.name, args.out)
    elif args.step == "fixture":
        fixture(args.name, Path(args.plan_file), Path(args.log), args.gpu, args.version, float(args.util),
                int(args.context))
    else:
        ray_head_argv(args.node_ip, args.temp_dir)


if __name__ == "__main__":
    main()
