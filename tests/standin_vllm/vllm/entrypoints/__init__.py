"""STAND-IN for tests, not vLLM: see tests/standin_vllm/README.md."""
