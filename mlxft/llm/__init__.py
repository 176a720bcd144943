"""Causal LMs on mlx-lm: loading, quantizing, adapters, generation, GGUF import."""
