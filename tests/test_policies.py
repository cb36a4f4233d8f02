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


def test_keydiff_keeps_the_key_least_like_the_heads_average_and_ignores_dead_slots():
    keydiff = POLICIES["keydiff"]()
    keys = np.array([[[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [-50.0, 0.0]]])  # (H=1, L=4, D=2); slot 3 is dead
    positions = np.array([[0, 1, 2, -1]])
    scores = keydiff.score(SlotView({"keys": keys, "positions": positions}, tokens_seen=4))
    # the anchor is the mean unit key of the live slots (~(0.67, 0.35)): the lone key along y is the most distinct
    assert int(np.argmax(scores[0, :3])) == 2
    # and a norm does not make a key distinct: slot 1 (twice slot 0's length) scores like slot 0
    assert abs(scores[0, 0] - scores[0, 1]) < 0.05


def test_keydiff_reads_the_cached_keys_through_the_heap_and_needs_no_attention():
    import mlx.core as mx

    from conftest import build_model
    from mlx_kv import HeapConfig, make_heap_cache, uninstall

    model = build_model("llama")
    cache = make_heap_cache(model, HeapConfig(budget=48, sinks=4, window=8, policy="keydiff"))
    seen = []
    real = POLICIES["keydiff"].score
    try:
        POLICIES["keydiff"].score = lambda self, view: (seen.append(view.keys.shape), real(self, view))[1]
        mx.eval(model(mx.array(np.arange(100) % 97)[None], cache=cache))
    finally:
        POLICIES["keydiff"].score = real
        uninstall(model)
    assert seen and all(shape[0] == cache[0].slots.keys.shape[1] and shape[1] >= 48 for shape in seen)
    assert all(layer.live <= 48 for layer in cache)
    assert float(mx.abs(cache[0].slots.acc).sum()) == 0.0  # nothing folded: the fused kernel served every call
