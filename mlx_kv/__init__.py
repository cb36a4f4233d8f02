"""mlx-kv: a three-tier generational KV heap for mlx-lm models.

    from mlx_kv import HeapConfig, make_heap_cache
    cache = make_heap_cache(model, HeapConfig(budget=1024, policy="h2o"))
    mlx_lm.generate(model, tokenizer, prompt, prompt_cache=cache)
"""

from mlx_kv.attention import install, uninstall
from mlx_kv.config import HeapConfig, parse_bytes
from mlx_kv.heap.factory import load_heap_cache, make_heap_cache
from mlx_kv.heap.layer import HeapKVCache
from mlx_kv.policies import POLICIES

__all__ = [
    "HeapConfig",
    "HeapKVCache",
    "POLICIES",
    "install",
    "load_heap_cache",
    "make_heap_cache",
    "parse_bytes",
    "uninstall",
]
__version__ = "0.1.0"
