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


def test_valuenorm_keeps_the_largest_values():
    values = np.array([[[3.0, 4.0], [0.1, 0.0], [0.0, 1.0]]])  # (H=1, L=3, D=2)
    view = SlotView({"values": values, "positions": np.array([[0, 1, 2]])}, tokens_seen=3)
    np.testing.assert_allclose(POLICIES["valuenorm"]().score(view), [[5.0, 0.1, 1.0]], rtol=1e-6)


def _expected_setup(positions_mode: str):
    import mlx.core as mx
    import mlx.nn as nn

    rope = nn.RoPE(16, base=10000)
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(1, 4, 40, 16)).astype(np.float32) + 1.0  # (1, Hq=4, n, D) before RoPE
    policy = POLICIES["expected"](future=8, covariance=False, vnorm=False, skip=0)
    queries = rope(mx.array(raw), offset=10)  # rotated at positions 10..49, fed in two calls
    policy.observe_queries(queries[:, :, :25], 10, rope, positions_mode)
    policy.observe_queries(queries[:, :, 25:], 35, rope, positions_mode)
    return rope, rng, raw[0].mean(axis=1), policy


def _softmax_over_future_queries(rope, mean, keys, start, future=8):
    """The brute-force expected attention: the mean query rotated to each future position, averaged."""
    import mlx.core as mx

    H, _, D = keys.shape
    q = mx.broadcast_to(mx.array(mean)[:, None, :], (mean.shape[0], future, D))[None]
    ahead = np.array(rope(q, offset=start)[0]).mean(axis=1)  # (Hq, D)
    k = np.repeat(keys, mean.shape[0] // H, axis=0)
    logits = np.einsum("hld,hd->hl", k, ahead) / np.sqrt(D)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (w / w.sum(axis=1, keepdims=True)).reshape(H, -1, keys.shape[1]).mean(axis=1)


def test_expected_attention_rotates_the_mean_query_to_the_positions_ahead():
    import mlx.core as mx

    rope, rng, mean, policy = _expected_setup("absolute")
    stats = policy._stats
    np.testing.assert_allclose(np.array(stats["sum"]) / stats["count"], mean, atol=1e-5)  # un-rotated first
    keys = np.array(rope(mx.array(rng.normal(size=(1, 2, 30, 16)).astype(np.float32)))[0])
    positions = np.tile(np.arange(30), (2, 1))
    positions[1, 7] = -1  # a dead slot: no weight, and it takes none from the live ones
    view = SlotView({"keys": keys, "values": np.ones_like(keys), "positions": positions}, tokens_seen=50)
    got = policy.score(view)
    want = _softmax_over_future_queries(rope, mean, keys, start=50)
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    assert got[1, 7] == 0.0 and abs(got[1].sum() - 1.0) < 1e-5


def test_expected_attention_scores_cache_positions_where_attention_rotates_the_keys():
    import mlx.core as mx

    rope, rng, mean, policy = _expected_setup("cache")
    raw_keys = mx.array(rng.normal(size=(1, 2, 30, 16)).astype(np.float32))
    rot = np.tile(np.arange(30, dtype=np.int32) + 20, (2, 1))  # stored as rotated at 20.., now ranked 0..
    rank = np.tile(np.arange(30, dtype=np.int32), (2, 1))
    stored = np.array(rope(raw_keys, offset=20)[0])
    view = SlotView({"keys": stored, "values": np.ones_like(stored), "positions": rot.astype(np.int64),
                     "rot": rot, "rank": rank}, tokens_seen=50)
    want = _softmax_over_future_queries(rope, mean, np.array(rope(raw_keys)[0]), start=50)
    np.testing.assert_allclose(policy.score(view), want, atol=1e-5)


def test_expected_attention_keeps_its_query_model_in_a_cloned_heap_and_not_in_its_settings():
    import mlx.core as mx

    from conftest import build_model
    from mlx_kv import HeapConfig, make_heap_cache, uninstall
    from mlx_kv.heap.prompt_cache import clone_heap

    model = build_model("llama")
    cache = make_heap_cache(model, HeapConfig(budget=48, sinks=4, window=8, policy="expected"))
    try:
        mx.eval(model(mx.array(np.arange(100) % 97)[None], cache=cache))
        clone = clone_heap(cache)
    finally:
        uninstall(model)
    assert cache[0].rope is not None  # absolute positions too: the policy rotates its queries with it
    assert all(layer.live <= 48 for layer in cache)
    assert clone[0].policy._stats["count"] == cache[0].policy._stats["count"] == 100 - 4
    assert "_stats" not in cache[0]._meta_json()


def test_expected_attention_gives_each_split_head_its_own_query_group():
    import mlx.core as mx

    _, _, mean, policy = _expected_setup("absolute")  # 4 query heads over 2 KV heads
    second = policy.for_head(1, 2)
    np.testing.assert_allclose(np.array(second._stats["sum"]) / second._stats["count"], mean[2:], atol=1e-5)
    assert second._stats["next"] == policy._stats["next"] and isinstance(second._stats["outer"], mx.array)
