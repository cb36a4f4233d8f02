"""The generational KV heap: per-layer caches, tiers, collection, compaction."""

from mlx_kv.heap.layer import HeapKVCache

__all__ = ["HeapKVCache"]
