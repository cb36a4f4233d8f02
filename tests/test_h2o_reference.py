"""H2O on a crafted attention pattern keeps exactly what a brute-force numpy simulation keeps."""

import mlx.core as mx
import numpy as np

from mlx_kv.heap.layer import HeapKVCache
from mlx_kv.policies import H2O

H, G, D = 2, 2, 8
BUDGET, SINKS, WINDOW, STEPS = 24, 2, 4, 80


def crafted_stream(seed=0):
    """Keys are noise except a few 'pillars' aligned with each head's query direction."""
    rng = np.random.default_rng(seed)
    keys = rng.normal(0, 0.3, size=(STEPS, H, D))
    direction = rng.normal(size=(H, D))
    for head, pillars in enumerate([(7, 19, 33, 50), (11, 12, 40, 61)]):
        keys[list(pillars), head] += 2.0 * direction[head]
    queries = rng.normal(0, 0.3, size=(STEPS, H, G, D)) + direction[None, :, None, :]
    values = rng.normal(size=(STEPS, H, D))
    return queries, keys, values


def brute_force_h2o(queries, keys, scale):
    """Token by token: when full, drop the unprotected token with the lowest mean attention."""
    kept = [list() for _ in range(H)]
    acc = [dict() for _ in range(H)]
    seen = [dict() for _ in range(H)]
    for t in range(STEPS):
        for h in range(H):
            if len(kept[h]) + 1 > BUDGET:
                candidates = [p for p in kept[h] if p >= SINKS and p < t - WINDOW]
                victim = min(candidates, key=lambda p: acc[h][p] / max(seen[h][p], 1))
                kept[h].remove(victim)
            kept[h].append(t)
            acc[h][t] = seen[h][t] = 0.0
            k = keys[kept[h], h]
            for g in range(G):
                logits = k @ queries[t, h, g] * scale
                w = np.exp(logits - logits.max())
                w /= w.sum()
                for p, wp in zip(kept[h], w):
                    acc[h][p] += wp
                    seen[h][p] += 1
    return [sorted(k) for k in kept]


def decode(layer, queries, keys, values, scale):
    """The stream fed to the layer one token at a time, as decoding feeds it."""
    for t in range(STEPS):
        k = mx.array(keys[t][None, :, None, :].astype(np.float32))
        v = mx.array(values[t][None, :, None, :].astype(np.float32))
        q = mx.array(queries[t].reshape(1, H * G, 1, D).astype(np.float32))
        kk, vv = layer.update_and_fetch(k, v)
        mx.eval(layer.attend(q, kk, vv, scale=scale))


def test_h2o_keeps_what_the_brute_force_reference_keeps():
    queries, keys, values = crafted_stream()
    scale = D ** -0.5
    layer = HeapKVCache(BUDGET, sinks=SINKS, window=WINDOW, tenured=0, collect_batch=1,
                        policy=H2O(), compact_threshold=0.5)
    decode(layer, queries, keys, values, scale)
    expected = brute_force_h2o(queries, keys, scale)
    got = [list(map(int, row)) for row in layer.kept_positions()]
    assert got == expected
    assert layer.evictions == STEPS - BUDGET
    # the pillars each head was built around survive
    assert {7, 19, 33, 50} <= set(got[0]) and {11, 12, 40, 61} <= set(got[1])


def test_decode_steps_schedule_their_attention_sums_once_in_sixteen_and_keep_what_eager_sums_keep(monkeypatch):
    import mlx_kv.heap.slots as slots
    from mlx_kv.heap.layer import SETTLE_FOLDS_EVERY

    scheduled = []
    monkeypatch.setattr(slots.mx, "async_eval", lambda arrays: (scheduled.append(1), mx.eval(arrays))[1])
    queries, keys, values = crafted_stream(seed=1)
    scale = D ** -0.5
    layer = HeapKVCache(BUDGET, sinks=SINKS, window=WINDOW, tenured=0, collect_batch=1, policy=H2O())
    decode(layer, queries, keys, values, scale)
    assert len(scheduled) == STEPS // SETTLE_FOLDS_EVERY
    assert [list(map(int, row)) for row in layer.kept_positions()] == brute_force_h2o(queries, keys, scale)
