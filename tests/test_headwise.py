"""allocation="headwise": every KV head its own heap, budgets moved between (layer, head) pairs."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache, save_prompt_cache

from conftest import REPLAY, assert_continues_as_eager_split, build_model, replayed_logits
from mlx_kv import HeapConfig, make_heap_cache, uninstall
from mlx_kv.generate import prefill
from mlx_kv.heap.headwise import HeadwiseKVCache, heaps
from mlx_kv.heap.prompt_cache import clone_heap, counters, load_heap_cache, rebalance, total_bytes


@pytest.mark.parametrize("positions", ["absolute", "cache"])
def test_a_headwise_heap_that_evicts_nothing_gives_kvcache_logits(positions):
    model = build_model("llama")
    tokens = np.random.default_rng(1).integers(0, 101, size=300).tolist()
    reference = replayed_logits(model, [KVCache() for _ in model.layers], tokens, None)
    heap = make_heap_cache(model, HeapConfig(budget=512, policy="kvzip", positions=positions, allocation="headwise"))
    try:
        got = replayed_logits(model, heap, tokens, REPLAY)
    finally:
        uninstall(model)
    # evicting nothing, each layer stayed one heap of its two KV heads (one attention call, as a plain heap)
    assert all(isinstance(layer, HeadwiseKVCache) and layer.joint and layer.kv_heads == 2 for layer in heap)
    assert np.max(np.abs(got - reference)) <= 1e-4
    assert all(head.live == 320 and head.evictions == 0 for head in heaps(heap))


@pytest.mark.parametrize("positions", ["absolute", "cache"])
def test_a_headwise_layer_is_one_heap_until_its_first_eviction_then_continues_as_its_split_heads(positions):
    model = build_model("llama")
    config = HeapConfig(budget=120, window=8, policy="kvzip", positions=positions, allocation="headwise")
    lazy, eager = make_heap_cache(model, config), make_heap_cache(model, config)
    eager = [HeadwiseKVCache(layer.heads[0].split_heads(layer.kv_heads)) for layer in eager]
    tokens = np.random.default_rng(12).integers(0, 101, size=320).tolist()
    try:
        first = [prefill(model, cache, tokens[:100], chunk=50, replay=REPLAY, history=[])[0] for cache in (lazy, eager)]
        assert all(layer.joint for layer in lazy) and not any(layer.joint for layer in eager)
        assert np.max(np.abs(np.array(first[0]) - np.array(first[1]))) <= 1e-5
        for cache in (lazy, eager):
            prefill(model, cache, tokens[100:300], chunk=50, replay=REPLAY, history=tokens[:100])
        rows = [replayed_logits(model, cache, tokens[300:], None, chunk=50) for cache in (lazy, eager)]
    finally:
        uninstall(model)
    assert_continues_as_eager_split(lazy, eager, rows)


def test_heads_of_one_layer_end_with_different_counts_and_the_bytes_follow_them():
    model = build_model("llama", num_hidden_layers=4)
    heap = make_heap_cache(model, HeapConfig(budget=120, window=16, policy="kvzip", allocation="headwise"))
    tokens = np.random.default_rng(5).integers(0, 101, size=400).tolist()
    try:
        prefill(model, heap, tokens, chunk=100, replay=REPLAY)
    finally:
        uninstall(model)
    units = heaps(heap)
    budgets = [unit.budget for unit in units]
    assert len(units) == 8 and sum(budgets) == 8 * 120 and min(budgets) >= 4 + 16 + 1
    assert all(unit.live <= unit.budget for unit in units)
    assert any(len({head.budget for head in layer.heads}) > 1 for layer in heap)  # within a layer, not only across
    widths = [[head.slots.keys.shape[2] for head in layer.heads] for layer in heap]
    assert any(len(set(w)) > 1 for w in widths)  # each head's arrays its own count wide, not the layer's longest
    for layer, w in zip(heap, widths):
        assert all(width <= head.budget for width, head in zip(w, layer.heads))
        assert layer.nbytes == sum(head.nbytes for head in layer.heads)
        assert [len(p) for p in layer.kept_positions()] == [head.live for head in layer.heads]
    assert counters(heap)["budget"] == 4 * 120 and total_bytes(heap) == sum(u.nbytes for u in units)


def test_rebalance_to_a_mean_keeps_that_many_per_head_on_average():
    model = build_model("llama")
    heap = make_heap_cache(model, HeapConfig(budget=400, window=8, policy="kvzip", allocation="headwise"))
    tokens = np.random.default_rng(6).integers(0, 101, size=300).tolist()
    try:
        prefill(model, heap, tokens, chunk=300, replay=REPLAY)
        rebalance(heap, 60)
    finally:
        uninstall(model)
    units = heaps(heap)
    assert sum(unit.budget for unit in units) == 60 * len(units)
    assert sum(unit.live for unit in units) <= 60 * len(units) and len({unit.live for unit in units}) > 1


def test_a_headwise_heap_saved_and_cloned_continues_as_the_original(tmp_path):
    model = build_model("llama")
    heap = make_heap_cache(model, HeapConfig(budget=100, window=8, policy="kvzip", allocation="headwise"))
    tokens = np.random.default_rng(7).integers(0, 101, size=250).tolist()
    try:
        logits, _ = prefill(model, heap, tokens, chunk=100, replay=REPLAY)
        path = str(tmp_path / "heap.safetensors")
        save_prompt_cache(path, heap)
        copies = [clone_heap(heap), load_heap_cache(path, model=model)]
        for copy in copies:
            assert all(isinstance(layer, HeadwiseKVCache) for layer in copy)
            assert [[h.live for h in layer.heads] for layer in copy] == [[h.live for h in layer.heads] for layer in heap]
        want = np.array(model(mx.array([[7]]), cache=heap))
        for copy in copies:
            assert np.max(np.abs(np.array(model(mx.array([[7]]), cache=copy)) - want)) <= 1e-5
    finally:
        uninstall(model)


@pytest.mark.parametrize("settings", [
    {"cold_bits": 4},
    {"recovery": "4MB", "positions": "cache"},
], ids=["cold4", "recovery-cache"])
def test_headwise_composes_with_the_cold_tier_recovery_and_cache_positions(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_KV_CACHE_DIR", str(tmp_path))
    model = build_model("llama", hidden_size=128, intermediate_size=256)  # head_dim 32: quantizable
    tokens = np.random.default_rng(4).integers(0, 101, size=360).tolist()
    heap = make_heap_cache(model, HeapConfig(budget=120, window=16, policy="kvzip", allocation="headwise", **settings))
    try:
        out = replayed_logits(model, heap, tokens, REPLAY, chunk=90)
    finally:
        uninstall(model)
    units = heaps(heap)
    assert np.isfinite(out).all() and all(unit.tokens_seen == 380 for unit in units)
    assert sum(unit.live for unit in units) <= 120 * len(units) + sum(unit.collect_batch for unit in units)
    if settings.get("cold_bits"):
        assert sum(unit.cold_tokens for unit in units) > 0
    else:
        assert sum(unit.store.stats()["spilled"] for unit in units) > 0


def test_headwise_with_a_policy_that_never_replays_is_refused():
    with pytest.raises(ValueError, match="allocation: 'headwise'.*'h2o' does not replay"):
        HeapConfig(policy="h2o", allocation="headwise").validate()


def test_a_headwise_session_chats_saves_and_restores(tiny_model_dir, tmp_path):
    from mlx_kv.engine import Session

    session = Session.load(str(tiny_model_dir), budget=96, policy="kvzip", window=16, allocation="headwise")
    session.ingest(" ".join(f"w{i % 90}" for i in range(400)))
    list(session.chat("w1 w2", max_tokens=5))
    units = heaps(session.cache)
    assert all(isinstance(layer, HeadwiseKVCache) for layer in session.cache)
    assert sum(unit.budget for unit in units) == 96 * len(units) and len({unit.budget for unit in units}) > 1
    from mlx_kv.diagnostics import layer_report

    rows = layer_report(session.cache)  # the TUI's per-layer readings: the heads' means
    assert len(rows) == len(session.cache) and all(row["kept"] <= row["budget"] for row in rows)
    path = tmp_path / "s.safetensors"
    session.save(str(path))
    restored = Session.restore(str(path))
    assert [u.budget for u in heaps(restored.cache)] == [u.budget for u in heaps(session.cache)]
    assert "".join(restored.chat("w7 w8", max_tokens=8)) == "".join(session.chat("w7 w8", max_tokens=8))


def test_a_headwise_session_can_roll_and_come_back_to_its_replaying_policy(tiny_model_dir):
    from mlx_kv.engine import Session

    session = Session.load(str(tiny_model_dir), budget=96, policy="kvzip", window=16, allocation="headwise")
    session.ingest(" ".join(f"w{i % 90}" for i in range(300)))
    budgets = [unit.budget for unit in heaps(session.cache)]
    session.set_overflow("rolling")  # the streaming policy, which does not replay
    assert session.config.policy == "streaming" and [unit.budget for unit in heaps(session.cache)] == budgets
    list(session.chat("w1 w2", max_tokens=4))
    session.set_overflow("heap")
    assert session.config.policy == "kvzip" and session.config.allocation == "headwise"
    session.ingest(" ".join(f"w{i % 70}" for i in range(300)))
    units = heaps(session.cache)
    assert sum(unit.budget for unit in units) == 96 * len(units) and all(u.live <= u.budget for u in units)
