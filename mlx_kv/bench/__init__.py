"""Benchmarks behind `mlx-kv bench ...`: each compares against mlx-lm's own caches in one run."""
