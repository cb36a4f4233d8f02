"""The surprise policy: information signals reach the heap and steer eviction."""

import mlx.core as mx
import numpy as np

from conftest import build_model
from mlx_kv import HeapConfig, make_heap_cache, uninstall
from mlx_kv.generate import prefill
from mlx_kv.information import token_information
from mlx_kv.policies import SlotView
from mlx_kv.policies.surprise import Surprise, percentiles


def test_token_information_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 11)).astype(np.float32)
    previous = rng.normal(size=11).astype(np.float32)
    tokens = [3, 1, 4, 1, 5]
    surprisal, entropy = token_information(mx.array(logits), tokens, mx.array(previous))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    prev = previous - np.log(np.exp(previous).sum())
    expected = [-prev[3]] + [-logp[i - 1, tokens[i]] for i in range(1, 5)]
    np.testing.assert_allclose(surprisal, expected, rtol=1e-5)
    np.testing.assert_allclose(entropy, -(np.exp(logp) * logp).sum(-1), rtol=1e-5)


def test_alpha_one_keeps_the_most_surprising_tokens():
    policy = Surprise(alpha=1.0)
    positions = np.array([[0, 1, 2, 3, 4]])
    info = np.stack([np.array([[0.1, 9.0, 0.2, 5.0, np.nan]]), np.zeros((1, 5))])
    attention = np.array([[0.5, 0.4, 0.3, 0.2, 0.1]])  # token 4 (no signal yet) is also the least attended
    scores = policy.score(SlotView({"acc": attention, "seen": np.ones((1, 5)), "positions": positions, "info": info}, 5))
    assert list(np.argsort(-scores[0])[:2]) == [1, 3]
    assert percentiles(np.array([[3.0, 1.0, 2.0]]), np.ones((1, 3), bool)).tolist() == [[1.0, 0.0, 0.5]]


def test_surprise_heap_gets_signals_and_stays_within_budget():
    model = build_model("llama")
    cache = make_heap_cache(model, HeapConfig(budget=64, window=8, policy="surprise", policy_args={"alpha": 1.0}))
    try:
        tokens = np.random.default_rng(3).integers(0, 101, size=700).tolist()
        seen_sizes = []
        prefill(model, cache, tokens, chunk=128, on_chunk=lambda n: seen_sizes.append(max(c.live for c in cache)))
    finally:
        uninstall(model)
    assert max(seen_sizes) <= 64  # collected once the chunk's surprisal arrived
    layer = cache[0]
    alive = layer.slots.positions[:, : layer.end] >= 0
    assert np.isfinite(layer.slots.info[0, :, : layer.end][alive]).mean() > 0.9
    # Old kept tokens are the surprising ones: their surprisal beats the evicted average.
    kept_old = alive & (layer.slots.positions[:, : layer.end] >= 4) & (layer.slots.positions[:, : layer.end] < 700 - 8)
    assert np.nanmean(layer.slots.info[0, :, : layer.end][kept_old]) > np.log(101) - 0.5
