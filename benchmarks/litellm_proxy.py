"""LiteLLM's proxy as a comparison target: installed into a throwaway venv, configured for speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import BENCH_DIR, Service, Target, free_port, start_service, wait_ready

LITELLM_VENV = BENCH_DIR / ".venv-litellm"
# 1.109.1 (newest on PyPI at writing) needs litellm-proxy-extras==0.4.113, which is not
# published; 1.108.7 is the newest whose [proxy] extra resolves. Every recent litellm also
# asks for certifi>=2026.10.19, newer than any certifi on PyPI, hence uv's --override
# (certifi only supplies CA roots; nothing here uses TLS).
LITELLM_VERSION = "1.108.7"
LITELLM_OVERRIDES = ("certifi==2026.10.18",)
# Added so LiteLLM runs at its best, not as a bare `pip install litellm[proxy]` would:
# - opentelemetry-sdk: without it the proxy retries a failing import of its OTel module
#   (litellm/integrations/otel/logger.py) on every request, from _seed_request_destinations
#   in user_api_key_auth.py -- py-spy showed ~20% of its CPU there and it halved req/s;
# - httptools: uvicorn's fast HTTP parser (h11 otherwise), as gpufleet gets.
LITELLM_EXTRAS = ("opentelemetry-sdk==1.45.2", "httptools==0.9.0")
LITELLM_SPEC = (f"litellm[proxy]=={LITELLM_VERSION}", *LITELLM_EXTRAS)
UV_VERSION = "0.13.8"


def litellm_installed_version() -> str | None:
    """The litellm version in the throwaway venv, or None if it is missing."""
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_litellm() -> None:
    """Install ``LITELLM_SPEC`` into ``benchmarks/.venv-litellm`` unless it is there already."""
    stamp = LITELLM_VENV / "bench-spec.txt"
    wanted = "\n".join(LITELLM_SPEC) + "\n"
    if stamp.exists() and stamp.read_text() == wanted and litellm_installed_version() == LITELLM_VERSION:
        return
    print(f"installing {' '.join(LITELLM_SPEC)} into {LITELLM_VENV} (about a minute)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    bin_dir = LITELLM_VENV / "bin"
    subprocess.run([str(bin_dir / "pip"), "install", "-q", f"uv=={UV_VERSION}"], check=True)
    overrides = LITELLM_VENV / "overrides.txt"
    overrides.write_text("\n".join(LITELLM_OVERRIDES) + "\n")
    uv = [str(bin_dir / "uv"), "pip", "install", "-q", "--python", str(bin_dir / "python")]
    subprocess.run([*uv, "--override", str(overrides), *LITELLM_SPEC], check=True)
    stamp.write_text(wanted)


# LiteLLM's fastest honest configuration for this test: one uvicorn worker (its recommended
# default); no master key (gpufleet runs without keys here too), no DB, no Redis, so no auth
# lookups or spend writes; no callbacks; spend and error logs off; log level ERROR; the bundled
# model-cost map instead of a network fetch at startup. The model is an ``openai/`` deployment
# on the same upstream.
LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: sk-bench
litellm_settings:
  set_verbose: false
  json_logs: false
  telemetry: false
general_settings:
  disable_spend_logs: true
  disable_error_logs: true
"""
LITELLM_ENV = {
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DISABLE_SCHEMA_UPDATE": "True",
    # gpufleet runs without API keys here, so LiteLLM does too (it refuses to by default).
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
}


def start_litellm(upstream: Target, model: str, log_dir: Path, cpus: set[int] | None) -> tuple[Service, Target]:
    """LiteLLM's proxy (one worker) with an ``openai/`` model on the upstream, on the proxy CPU."""
    ensure_litellm()
    cfg = log_dir / "litellm.yaml"
    cfg.write_text(LITELLM_CONFIG.format(model=model, api_base=upstream.base_url))
    port = free_port()
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--num_workers", "1"]
    env: dict[str, str | None] = {**LITELLM_ENV, "DATABASE_URL": None}  # no DB: no spend/key lookups
    svc = start_service("litellm", argv, log_dir, cpus, env)
    wait_ready(svc, f"http://127.0.0.1:{port}/health/liveliness", 180)
    return svc, Target("litellm", f"http://127.0.0.1:{port}/v1")
