"""positions="cache": attention equals attention recomputed with re-indexed positions."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.models.rope_utils import initialize_rope

from conftest import build_model
from mlx_kv import HeapConfig, make_heap_cache, uninstall
from mlx_kv.heap.headwise import HeadwiseKVCache
from mlx_kv.heap.layer import HeapKVCache
from mlx_kv.policies import H2O
from mlx_kv.positions import shift_keys

H, G, D = 2, 2, 16
LLAMA3 = initialize_rope(D, 500000.0, False, {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                              "original_max_position_embeddings": 64, "rope_type": "llama3"}, 4096)


def reference(rope, q_raw, k_raw, v, kept, q_ranks, scale):
    """softmax over the kept tokens, each rotated at its rank in the cache."""
    outs = [reference_head(rope, q_raw[:, h:h + 1], k_raw[:, h:h + 1], v[:, h:h + 1], kept[h], q_ranks, scale)
            for h in range(H)]
    return np.stack(outs).reshape(H * G, len(q_ranks), D)


def reference_head(rope, q_raw, k_raw, v, kept, q_ranks, scale):
    """`reference` for one KV head (q_raw (S, 1, G, D), k_raw and v (T, 1, D)): (G, S, D)."""
    keys = rope(mx.array(k_raw[kept, 0])[None, None], offset=0)[0, 0]  # ranks 0..n-1
    rows = []
    for i, r in enumerate(q_ranks):
        q = rope(mx.array(q_raw[i, 0])[None, :, None, :], offset=int(r))[0, :, 0]  # (G, D)
        logits = np.array(q @ keys.T) * scale
        logits[:, np.arange(len(kept)) > r] = -np.inf  # causal within a chunk
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        rows.append(w @ v[kept, 0])
    return np.stack(rows, 1)


@pytest.mark.parametrize("rope", [nn.RoPE(D, base=10000.0),
                                  LLAMA3],
                         ids=["plain", "llama3"])
@pytest.mark.parametrize("settings", [{}, {"collect_batch": 4, "compact_threshold": 0.9}],
                         ids=["compacting", "reusing-dead-slots"])
def test_cache_positions_match_attention_recomputed_from_scratch(rope, settings):
    rng = np.random.default_rng(0)
    T = 120
    k_raw = rng.normal(size=(T, H, D)).astype(np.float32)
    v = rng.normal(size=(T, H, D)).astype(np.float32)
    q_all = rng.normal(size=(T, H, G, D)).astype(np.float32)
    layer = HeapKVCache(24, sinks=2, window=4, policy=H2O(), positions="cache", rope=rope, **settings)
    scale = D ** -0.5
    t = reused = 0
    for n_new in [30] + [1] * 50 + [16] + [1] * 24:
        off, end_before = layer.offset, layer.end
        q = rope(mx.array(q_all[t:t + n_new].transpose(1, 2, 0, 3).reshape(1, H * G, n_new, D)), offset=off)
        k = rope(mx.array(k_raw[t:t + n_new].transpose(1, 0, 2)[None]), offset=off)
        vv = mx.array(v[t:t + n_new].transpose(1, 0, 2)[None])
        keys, values = layer.update_and_fetch(k, vv)
        kept = layer.kept_positions()
        out = np.array(layer.attend(q, keys, values, scale=scale))
        n = len(kept[0])
        q_ranks = np.arange(n - n_new, n)
        expected = reference(rope, q_all[t:t + n_new].transpose(1, 0, 2, 3).transpose(1, 0, 2, 3)
                             .reshape(n_new, H, G, D), k_raw, v, kept, q_ranks, scale)
        np.testing.assert_allclose(out[0], expected, atol=2e-4, rtol=1e-3)
        assert layer.offset == layer.live <= 24
        reused += n_new == 1 and layer.end == end_before
        t += n_new
    assert layer.evictions > 0 and layer.tokens_seen == T
    assert (reused > 10) == bool(settings)  # decode tokens landed in dead slots


def test_heads_keeping_different_counts_each_attend_as_if_numbering_their_own_cache():
    """A layer split per head: mlx-lm rotates every head's query and keys at
    the first head's count, so the others owe their keys the difference at
    every step (kept between collections, not rebuilt per token)."""
    rope = nn.RoPE(D, base=10000.0)
    rng = np.random.default_rng(1)
    T = 110
    k_raw = rng.normal(size=(T, H, D)).astype(np.float32)
    v = rng.normal(size=(T, H, D)).astype(np.float32)
    q_all = rng.normal(size=(T, H, G, D)).astype(np.float32)
    heads = [HeapKVCache(budget, sinks=2, window=4, policy=H2O(), positions="cache", rope=rope, collect_batch=3)
             for budget in (24, 15)]
    layer = HeadwiseKVCache(heads)
    scale, t, differed = D ** -0.5, 0, 0
    for n_new in [30] + [1] * 50 + [8] + [1] * 22:
        off = layer.offset
        q = rope(mx.array(q_all[t:t + n_new].transpose(1, 2, 0, 3).reshape(1, H * G, n_new, D)), offset=off)
        k = rope(mx.array(k_raw[t:t + n_new].transpose(1, 0, 2)[None]), offset=off)
        keys, values = layer.update_and_fetch(k, mx.array(v[t:t + n_new].transpose(1, 0, 2)[None]))
        held = [head.kept_positions()[0] for head in heads]
        out = np.array(layer.attend(q, keys, values, scale=scale))[0].reshape(H, G, n_new, D)
        for h, kept in enumerate(held):
            n = len(kept)
            q_h = q_all[t:t + n_new, h:h + 1]  # (n_new, 1, G, D)
            expected = reference_head(rope, q_h, k_raw[:, h:h + 1], v[:, h:h + 1], kept, np.arange(n - n_new, n), scale)
            np.testing.assert_allclose(out[h], expected, atol=2e-4, rtol=1e-3)
        differed += len(held[0]) != len(held[1])
        t += n_new
    assert differed > 50 and all(head.evictions > 0 for head in heads)


def test_cache_positions_keep_rope_offsets_inside_the_budget_in_a_real_model():
    model = build_model("llama")
    cache = make_heap_cache(model, HeapConfig(budget=64, window=16, positions="cache"))
    try:
        tokens = np.random.default_rng(1).integers(0, 101, size=500)
        for start in range(0, 500, 100):
            mx.eval(model(mx.array(tokens[start:start + 100])[None], cache=cache))
            assert all(c.offset <= 64 for c in cache)
        for _ in range(40):
            mx.eval(model(mx.array([[3]]), cache=cache))
            assert all(c.offset <= 64 and c.tokens_seen > 500 for c in cache)
    finally:
        uninstall(model)


def test_cache_positions_equal_absolute_when_nothing_is_evicted():
    model = build_model("llama")
    tokens = mx.array(np.random.default_rng(2).integers(0, 101, size=200))[None]
    outs = []
    for mode in ("absolute", "cache"):
        cache = make_heap_cache(model, HeapConfig(budget=256, positions=mode))
        outs.append(np.array(model(tokens, cache=cache)))
        uninstall(model)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


@pytest.mark.parametrize("rope", [nn.RoPE(D, base=10000.0), nn.RoPE(D, traditional=True, base=10000.0),
                                  nn.RoPE(D // 2, base=10000.0, scale=0.5),
                                  LLAMA3],
                         ids=["plain", "traditional", "partial-scaled", "llama3"])
def test_keys_turned_through_the_rotation_table_equal_the_ropes_own_rotation(rope):
    rng = np.random.default_rng(1)
    keys = mx.array(rng.normal(size=(1, H, 50, D)).astype(np.float32))
    for lo, hi in ((-40, 5), (-3000, -2900), (700, 900)):  # the last two lie outside the table built for the first
        shifts = mx.array(rng.integers(lo, hi + 1, size=(H, 50)).astype(np.int32))
        looked_up = shift_keys(rope, keys, shifts, (lo, hi))
        computed = shift_keys(rope, keys, shifts)
        np.testing.assert_allclose(np.array(looked_up), np.array(computed), atol=1e-5)
