"""A model's heap: the list of per-layer HeapKVCaches mlx-lm takes as `prompt_cache=`.

What is done to the whole list (building, loading, cloning, budgets, policy,
feeding information signals, counting) is a plain function over it here, as
mlx-lm's cache.py keeps its list functions, so no caller loops over layers.
Functions that only read tolerate mlx-lm's own caches in the list (a full
KVCache reference, say) wherever there is a sensible answer.
"""

from __future__ import annotations

from typing import Any, Callable

import mlx_lm.models.cache as mlx_cache
import numpy as np

from mlx_kv.budget import allocate_by_scores, kv_geometry, tokens_per_layer
from mlx_kv.config import HeapConfig
from mlx_kv.heap.cold import group_size_for
from mlx_kv.heap.collector import protected_mask
from mlx_kv.heap.headwise import HEAP_LAYERS, HeadPlan, HeadwiseKVCache, heaps
from mlx_kv.heap.layer import COUNTERS, HeapKVCache
from mlx_kv.hook import install
from mlx_kv.policies import Policy


def register_cache_class() -> None:
    """mlx-lm's load_prompt_cache finds cache classes by name in its own module."""
    for cls in (HeapKVCache, HeadwiseKVCache):
        if getattr(mlx_cache, cls.__name__, None) is not cls:
            setattr(mlx_cache, cls.__name__, cls)


def make_heap_cache(model: Any, config: HeapConfig | None = None, *, available: int | None = None) -> list[HeapKVCache]:
    """One heap cache per layer, usable as `prompt_cache=` in mlx-lm's generators
    (allocation="headwise": one per KV head of each layer, mlx_kv.heap.headwise)."""
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
    def layer_heap(layer: int, budget: int, seed: int) -> HeapKVCache:
        return HeapKVCache(
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
            score_every=config.score_every,
            seed=seed,
            positions=config.positions,
            rope=_heap_rope(model, layer, config.positions),
            recovery=recovery,
            cold_bits=config.cold_bits,
            adaptive=config.allocation in ("adaptive", "headwise"),
        )

    if config.allocation not in ("headwise", "retrieval"):
        return [layer_heap(layer, budget, config.seed + layer) for layer, budget in enumerate(budgets)]
    n_heads = kv_geometry(model).n_kv_heads
    if recovery:
        recovery["max_bytes"] = max(1, recovery["max_bytes"] // n_heads)
    if config.allocation == "retrieval":  # one heap per layer until a head must evict (HeadwiseKVCache.joint)
        weights = head_weights(config, len(budgets), n_heads)
        return [HeadwiseKVCache([layer_heap(layer, budget, config.seed + layer * n_heads)], HeadPlan(weights, layer))
                for layer, budget in enumerate(budgets)]
    # allocation="headwise": every head keeps the same count until the first replay moves the budgets
    # (rebalance), so each layer is one heap of all its heads until then, too
    return [HeadwiseKVCache([layer_heap(layer, budget, config.seed + layer * n_heads)], kv_heads=n_heads)
            for layer, budget in enumerate(budgets)]


def head_weights(config: HeapConfig, n_layers: int, n_heads: int) -> tuple[tuple[float, ...], ...]:
    """allocation="retrieval": each KV head's share, its profiled retrieval
    score (mlx_kv.retrieval; a small floor keeps an all-zero layer defined)."""
    from mlx_kv.profile import load_profile, retrieval_rows

    scores = retrieval_rows(load_profile(config.profile))
    if scores is None:
        raise ValueError(f"profile: {config.profile} has no retrieval scores; run `mlx-kv profile` again")
    if len(scores) != n_layers or any(len(s) != n_heads for s in scores):
        raise ValueError(f"profile: {config.profile} describes {len(scores)} layers of {len(scores[0])} KV heads, "
                         f"the model has {n_layers} of {n_heads}")
    return tuple(tuple(float(w) + 1e-3 for w in row) for row in scores)


def _model_rope(model: Any, layer: int) -> Any:
    """The layer's rope object where the architecture exposes one (a policy
    that models future queries rotates them with it), else None."""
    layers = getattr(model, "layers", None)
    attn = getattr(layers[layer], "self_attn", None) if layers is not None else None
    return getattr(attn, "rope", None)


def _heap_rope(model: Any, layer: int, positions: str) -> Any:
    """What a layer's heap rotates with: positions="cache" cannot do without it."""
    rope = _model_rope(model, layer)
    if rope is None and positions == "cache":
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
            if isinstance(cache, HEAP_LAYERS):
                cache.rope = _heap_rope(model, layer, cache.position_mode)
    return loaded


def clone_heap(cache: list[HeapKVCache]) -> list[HeapKVCache]:
    """An independent copy (a side question must not disturb the heap it asks):
    fresh slot arrays, the same rope, a fork of each recovery store."""
    clones = [type(layer).from_state(layer.state) for layer in cache]
    for clone, original in zip(heaps(clones), heaps(cache)):
        clone.rope, clone.policy = original.rope, original.policy.fork()
        clone.store = original.store.fork() if original.store is not None else None
    return clones


def rebalance(cache: list[HeapKVCache], keep: int | None = None) -> None:
    """Move the heap's budget (as it is, or `keep` tokens per layer and head
    on average) to the layers, or with allocation="headwise" the (layer, KV
    head) heaps, whose evictable tokens score highest
    (budget.allocate_by_scores); each collects down to its new budget now."""
    for layer in cache:
        if getattr(layer, "joint", False) and layer.plan is None:
            layer.split()  # (heads are about to keep different counts)
    units = heaps(cache)
    total = keep * len(units) if keep is not None else sum(unit.budget for unit in units)
    found = [unit.candidates() for unit in units]
    minimum = units[0].sinks + units[0].window + 1
    budgets = allocate_by_scores([f[0] for f in found], [f[1] for f in found], total, minimum)
    for unit, budget in zip(units, budgets):
        unit.set_budget(budget)


def over_budget(cache: list, room: int = 0) -> bool:
    """Whether a heap of the list holds more than its budget (a chunk just
    landed), or would after `room` more tokens."""
    return any(unit.live + room > unit.budget for unit in heaps(cache))


def hide_globally(cache: list[HeapKVCache], keep: int) -> int:
    """kvpress's KVzip protocol: every layer's (KV head, token) pairs ranked
    together by the policy's score, the best `keep` x layers x heads left
    visible (sinks and the young window always), the others masked in place
    (HeapKVCache.hide); heads and layers end with different counts and no
    byte is freed. Returns the pairs left visible."""
    found = []
    for layer in cache:
        pos, scores = layer.token_scores()
        protect = protected_mask(pos, layer.tokens_seen, layer.sinks, layer.window)
        found.append((protect, np.where((pos >= 0) & ~protect, scores, -np.inf)))  # -inf: not a candidate
    heads = sum(protect.shape[0] for protect, _ in found)
    room = keep * heads - sum(int(protect.sum()) for protect, _ in found)
    flat = np.concatenate([scores.reshape(-1) for _, scores in found])
    best = np.argsort(-flat, kind="stable")[: max(room, 0)]
    chosen = np.zeros(flat.shape, bool)
    chosen[best] = np.isfinite(flat[best])
    start, visible_total = 0, 0
    for layer, (protect, scores) in zip(cache, found):
        n = scores.size
        visible = protect | chosen[start:start + n].reshape(scores.shape)  # (protect counts live slots only)
        layer.hide(visible)
        visible_total += int(visible.sum())
        start += n
    return visible_total


def set_budgets(cache: list[HeapKVCache], budgets: list[int]) -> None:
    """Per-layer token budgets, applied at once (shrinking collects now)."""
    for layer, tokens in zip(cache, budgets):
        layer.set_budget(tokens)


def set_policy(cache: list[HeapKVCache], make_policy: Callable[[], Policy]) -> None:
    """A fresh policy object per layer; accumulated scores start from zero."""
    for layer in cache:
        layer.set_policy(make_policy())


def set_attention_sampling(cache: list[HeapKVCache], every: int) -> None:
    """Sample the last query's attention every `every` calls per layer (0: never)."""
    for layer in cache:
        layer.diagnostics_every = every


def wants_information(cache: list) -> bool:
    """Whether a policy in the list reads surprisal/entropy, which the driver must then compute."""
    return any(getattr(getattr(c, "policy", None), "uses_info", False) for c in cache)


def wants_replay(cache: list) -> bool:
    """Whether a policy in the list scores by replaying each chunk (mlx_kv.replay)."""
    return any(getattr(getattr(c, "policy", None), "replays", False) for c in cache)


def feed_token_info(cache: list[HeapKVCache], start: int, surprisal: np.ndarray, entropy: np.ndarray) -> None:
    """Information signals for the tokens at positions start.., to every layer."""
    for layer in cache:
        layer.set_token_info(start, surprisal, entropy)


def tokens_seen(cache: list) -> int | None:
    """Tokens the heap has consumed (every layer saw the same); None for caches that do not count them."""
    return getattr(cache[0], "tokens_seen", None) if cache else 0


def total_bytes(cache: list) -> int:
    """Every byte the caches hold (mlx-lm's caches count theirs too)."""
    return sum(c.nbytes for c in cache)


def counters(cache: list[HeapKVCache]) -> dict[str, float]:
    """The layers' counters summed: evictions, promotions, demotions,
    compactions, collections, ranked, recalls, the seconds spent collecting
    and ranking, tokens kept, the cold tier's tokens and the budgets."""
    names = (*COUNTERS, "collect_seconds", "rank_seconds", "live", "cold_tokens", "budget")
    return {name: sum(getattr(layer, name) for layer in cache) for name in names}


def tier_totals(cache: list[HeapKVCache]) -> dict[str, int]:
    """Tokens per tier summed over layers (each counted on its KV head 0)."""
    totals = {"sinks": 0, "young": 0, "intermediate": 0, "tenured": 0}
    for layer in cache:
        for tier, n in layer.tier_counts().items():
            totals[tier] += n
    return totals


def recovery_stats(cache: list[HeapKVCache]) -> dict[str, int] | None:
    """The recovery stores' stats summed over layers; None without the tier."""
    stores = [unit.store.stats() for unit in heaps(cache) if unit.store is not None]
    if not stores:
        return None
    return {key: sum(s[key] for s in stores) for key in stores[0]}


def take_notes(cache: list) -> list[str]:
    """The layers' one-line events since the last call, each once (every layer
    of a full disk says the same thing), in the order they happened."""
    notes: list[str] = []
    for layer in cache:
        pending = getattr(layer, "notes", None)
        if pending:
            notes.extend(note for note in pending if note not in notes)
            pending.clear()
    return notes
