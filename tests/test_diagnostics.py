"""Diagnostics: known entropy and pillars on crafted patterns; no drift without eviction."""

import mlx.core as mx
import numpy as np

from mlx_kv.diagnostics import entropy, kl_divergence, pillar_positions, top_share
from mlx_kv.engine import Session
from mlx_kv.attention import attention_summary

DOC = " ".join(f"w{i % 90}" for i in range(700))


def test_entropy_and_sparsity_of_known_distributions():
    uniform = np.full((1, 100), 0.01)
    assert np.isclose(entropy(uniform)[0], np.log(100))
    peaked = np.zeros((1, 100))
    peaked[0, 7] = 1.0
    assert np.isclose(entropy(peaked)[0], 0.0)
    assert np.isclose(top_share(uniform, 0.05)[0], 0.05)
    assert np.isclose(top_share(peaked, 0.01)[0], 1.0)
    stats = attention_summary(mx.array(np.stack([uniform, peaked])[:, None, 0, :]), 100)
    np.testing.assert_allclose(np.array(stats["entropy"]), [np.log(100), 0.0], atol=1e-5)
    np.testing.assert_allclose(np.array(stats["top1"]), [0.01, 1.0], atol=1e-6)


def test_pillars_are_the_tokens_most_heads_rank_highest():
    positions = np.tile(np.arange(200), (2, 1))
    scores = np.random.default_rng(0).uniform(0, 0.1, size=(2, 200))
    scores[:, [50, 120]] = 1.0  # every head attends to 50 and 120
    scores[0, 0:4] = 5.0  # sinks are excluded
    scores[1, 190:200] = 5.0  # the young window is excluded
    found = pillar_positions([(positions, scores), (positions, scores)], sinks=4, recent_from=190, top_fraction=0.01)
    assert [p for p, _ in found[:2]] == [50, 120]
    assert found[0][1] == 4  # 2 layers x 2 heads


def test_drift_is_zero_when_nothing_is_evicted(tiny_model_dir):
    session = Session.load(str(tiny_model_dir), budget=2048, positions="absolute")
    session.ingest(DOC)
    list(session.chat("w3 w4", max_tokens=5))
    drift = session.drift(window=4096)
    assert drift["exact"] and drift["kl"] < 1e-6 and drift["top1_agree"] == 1.0


def test_drift_is_measured_when_the_heap_evicts(tiny_model_dir):
    session = Session.load(str(tiny_model_dir), budget=80, window=16)
    session.ingest(DOC)
    drift = session.drift(window=4096)
    assert drift["kl"] > 0 and drift["seconds"] > 0
    assert kl_divergence(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
