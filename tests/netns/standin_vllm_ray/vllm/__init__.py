"""STAND-IN for tests, not vLLM: see tests/netns/standin_vllm_ray/vllm/entrypoints/openai/api_server.py."""
