"""Building a model's heap: one HeapKVCache per layer, hook installed."""

from __future__ import annotations

from typing import Any

import mlx_lm.models.cache as mlx_cache

from mlx_kv.hook import install
from mlx_kv.budget import kv_geometry, tokens_per_layer
from mlx_kv.config import HeapConfig
from mlx_kv.heap.cold import group_size_for
from mlx_kv.heap.layer import HeapKVCache


def register_cache_class() -> None:
    """mlx-lm's load_prompt_cache finds cache classes by name in its own module."""
    if getattr(mlx_cache, HeapKVCache.__name__, None) is not HeapKVCache:
        setattr(mlx_cache, HeapKVCache.__name__, HeapKVCache)


def make_heap_cache(model: Any, config: HeapConfig | None = None, *, available: int | None = None) -> list[HeapKVCache]:
    """One heap cache per layer, usable as `prompt_cache=` in mlx-lm's generators."""
    config = config or HeapConfig()
    config.validate()
    install(model)
    register_cache_class()
    budgets = tokens_per_layer(config, model, available)
    if config.cold_bits:
        group_size_for(kv_geometry(model).head_dim)  # fails early, with the reason, if MLX cannot quantize it
    recovery = config.recovery_settings()
    if recovery:  # the allowance is for the whole model: each layer's store gets its share
        recovery["max_bytes"] = max(1, recovery["max_bytes"] // len(budgets))
    return [
        HeapKVCache(
            budget,
            sinks=config.sinks,
            window=config.window,
            tenured=config.tenured,
            promote_after=config.promote_after,
            major_every=config.major_every,
            collect_batch=config.collect_batch,
            policy=config.make_policy(),
            compact_threshold=config.compact_threshold,
            rank_noise=config.rank_noise,
            score_block=config.score_block,
            seed=config.seed + layer,
            positions=config.positions,
            rope=_layer_rope(model, layer) if config.positions == "cache" else None,
            recovery=recovery,
            cold_bits=config.cold_bits,
        )
        for layer, budget in enumerate(budgets)
    ]


def _layer_rope(model: Any, layer: int) -> Any:
    attn = getattr(model.layers[layer], "self_attn", None)
    rope = getattr(attn, "rope", None)
    if rope is None:
        raise ValueError("positions: 'cache' needs the model's rope object, which this architecture does not expose")
    return rope


def load_heap_cache(path: str, return_metadata: bool = False, model: Any = None):
    """load_prompt_cache for files holding heap caches; pass the model to
    re-attach its rope objects (needed with positions="cache")."""
    register_cache_class()
    loaded = mlx_cache.load_prompt_cache(path, return_metadata=return_metadata)
    caches = loaded[0] if return_metadata else loaded
    if model is not None:
        install(model)
        for layer, cache in enumerate(caches):
            if isinstance(cache, HeapKVCache) and cache.position_mode == "cache":
                cache.rope = _layer_rope(model, layer)
    return loaded
