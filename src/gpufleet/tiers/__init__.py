"""The vocabulary of `model: auto`: its signal names and default weights, and the labelled-request format.

Data shared by the config (which checks `router.auto.weights` and `classifier.examples` at load) and the router
(which classifies with them); it imports nothing else from gpufleet.

- signals.py       — SIGNALS: signal name → default weight
- labelled_set.py  — labelled requests (data/tier_prompts.yaml, or an operator's own file)
"""
