"""Benchmarks run against models: ``mmr`` (leading-question robustness of multimodal LLMs)."""
