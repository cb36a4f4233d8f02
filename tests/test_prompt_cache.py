"""Functions over a model's list of heap caches, and the shared prefill/decode loop."""

import numpy as np
from mlx_lm.models.cache import KVCache

from conftest import build_model
from mlx_kv import HeapConfig, heap_hook, make_heap_cache
from mlx_kv.generate import decode, prefill
from mlx_kv.heap.prompt_cache import (clone_heap, counters, recovery_stats, set_budgets, tier_totals, tokens_seen,
                                      total_bytes)

TOKENS = np.random.default_rng(0).integers(0, 101, size=400).tolist()


def test_a_clone_is_independent_of_its_heap():
    model = build_model("llama")
    with heap_hook(model):
        cache = make_heap_cache(model, HeapConfig(budget=96, window=16))
        logits, _ = prefill(model, cache, TOKENS, chunk=64)
        kept = [[list(k) for k in layer.kept_positions()] for layer in cache]
        probe = clone_heap(cache)
        assert [[list(k) for k in layer.kept_positions()] for layer in probe] == kept
        list(decode(model, probe, logits, max_tokens=40))
    assert [[list(k) for k in layer.kept_positions()] for layer in cache] == kept
    assert tokens_seen(cache) == 400 and tokens_seen(probe) == 440


def test_counts_are_sums_over_layers():
    model = build_model("llama")
    with heap_hook(model):
        cache = make_heap_cache(model, HeapConfig(budget=96, window=16))
        prefill(model, cache, TOKENS, chunk=64)
        set_budgets(cache, [80, 90])
    totals = counters(cache)
    assert totals["evictions"] == sum(layer.evictions for layer in cache) > 0
    assert totals["budget"] == 170 and totals["live"] == sum(layer.live for layer in cache)
    assert sum(tier_totals(cache).values()) == totals["live"]
    assert total_bytes(cache) == sum(layer.nbytes for layer in cache)
    assert recovery_stats(cache) is None


def test_decode_feeds_each_token_before_yielding_it_and_stops_unfed_at_a_stop_token():
    model = build_model("llama")
    reference = [KVCache() for _ in model.layers]
    logits, _ = prefill(model, reference, TOKENS[:50])
    greedy = [token for token, _ in decode(model, reference, logits, max_tokens=6)]
    assert reference[0].offset == 56
    stop = next(i for i in range(1, 6) if greedy[i] not in greedy[:i])
    cache = [KVCache() for _ in model.layers]
    logits, _ = prefill(model, cache, TOKENS[:50])
    steps = decode(model, cache, logits, max_tokens=6, stop_tokens={greedy[stop]})
    assert [token for token, _ in steps] == greedy[:stop] and cache[0].offset == 50 + stop


def test_decode_gives_information_aware_policies_each_tokens_signals():
    model = build_model("llama")
    with heap_hook(model):
        cache = make_heap_cache(model, HeapConfig(budget=96, window=16, policy="surprise"))
        logits, _ = prefill(model, cache, TOKENS[:80])
        list(decode(model, cache, logits, max_tokens=5))
    layer = cache[0]
    newest = layer.slots.positions[:, : layer.end] >= 80
    assert newest.sum() == 5 * layer.slots.n_heads
    assert np.isfinite(layer.slots.info[:, :, : layer.end][:, newest]).all()
