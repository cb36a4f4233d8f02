"""mlx-kv: a three-tier generational KV heap for mlx-lm models.

    from mlx_kv import HeapConfig, make_heap_cache
    cache = make_heap_cache(model, HeapConfig(budget=1024, policy="h2o"))
    mlx_lm.generate(model, tokenizer, prompt, prompt_cache=cache)

Names are imported lazily so that `import mlx_kv.cli` does not load MLX
before the CLI had a chance to preload OpenBLAS.
"""

from importlib import import_module

_EXPORTS = {
    "HeapConfig": "mlx_kv.config",
    "parse_bytes": "mlx_kv.sizes",
    "parse_budget": "mlx_kv.sizes",
    "HeapKVCache": "mlx_kv.heap.layer",
    "make_heap_cache": "mlx_kv.heap.prompt_cache",
    "load_heap_cache": "mlx_kv.heap.prompt_cache",
    "install": "mlx_kv.hook",
    "uninstall": "mlx_kv.hook",
    "heap_hook": "mlx_kv.hook",
    "POLICIES": "mlx_kv.policies",
    "Session": "mlx_kv.engine",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlx_kv' has no attribute {name!r}")
