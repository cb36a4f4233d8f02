"""Each policy's score on hand-made inputs."""

import numpy as np

from mlx_kv.policies import POLICIES, SlotView
from mlx_kv.policies.random import hashed_uniform
from mlx_kv.policies.snapkv import max_pool_by_position


def test_h2o_normalises_by_the_queries_that_could_see_a_key():
    h2o = POLICIES["h2o"]()
    acc = np.array([[4.0, 1.0, 1.0]])
    seen = np.array([[8.0, 1.0, 0.0]])
    view = SlotView({"acc": acc, "seen": seen, "positions": np.array([[0, 1, 2]])}, tokens_seen=3)
    np.testing.assert_allclose(h2o.score(view), [[0.5, 1.0, 1.0]])


def test_tova_keeps_only_the_latest_querys_view():
    tova = POLICIES["tova"]()
    import mlx.core as mx

    folded = {"acc": mx.array([[9.0, 9.0]]), "seen": mx.array([[1.0, 1.0]])}
    acc = tova.accumulate(folded, mx.array([[0.1, 0.7]]), mx.array([[1.0, 1.0]]))["acc"]
    assert np.array(acc).tolist() == [[np.float32(0.1), np.float32(0.7)]]


def test_snapkv_pools_over_positions_not_slots_and_skips_dead_slots():
    # slots hold positions out of order; position 5 is a peak, slot 3 is dead
    positions = np.array([[7, 5, 6, -1, 4]])
    votes = np.array([[0.0, 1.0, 0.0, 9.0, 0.0]])
    pooled = max_pool_by_position(votes, positions, kernel=3)
    # neighbours of position 5 (4 and 6) inherit its vote; 7 is two away; the dead slot changes nothing
    assert pooled[0].tolist() == [0.0, 1.0, 1.0, 9.0, 1.0]


def test_streaming_prefers_recent_and_random_is_seeded():
    streaming = POLICIES["streaming"]()
    pos = np.array([[10, 3, 7]])
    assert np.argsort(-streaming.score(SlotView({"positions": pos}, tokens_seen=11)))[0].tolist() == [0, 2, 1]
    a, b = hashed_uniform(np.arange(1000), 1), hashed_uniform(np.arange(1000), 2)
    assert np.array_equal(a, hashed_uniform(np.arange(1000), 1)) and not np.array_equal(a, b)
    assert 0.45 < a.mean() < 0.55 and a.min() >= 0 and a.max() < 1
