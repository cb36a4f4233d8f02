"""The recovery tier: bounded disk, sound page bounds, a needle brought back."""

import mlx.core as mx
import numpy as np

from mlx_kv.heap.layer import HeapKVCache
from mlx_kv.heap.recovery import RecoveryStore, dequantize_rows, quantize_rows
from mlx_kv.policies import H2O


def test_int8_round_trip_error_is_bounded():
    x = np.random.default_rng(0).normal(size=(100, 32)).astype(np.float32)
    q, s = quantize_rows(x)
    err = np.abs(dequantize_rows(q, s) - x)
    assert (err <= s / 2 + 1e-6).all()


def test_page_bounds_are_upper_bounds_and_disk_stays_bounded(tmp_path):
    rng = np.random.default_rng(1)
    H, D = 2, 16
    store = RecoveryStore(H, D, D, page_size=8, max_bytes=20 * 8 * (2 * D + 8), folder=str(tmp_path))
    seen = 0
    for step in range(60):
        n = 5
        pos = np.tile(np.arange(seen, seen + n), (H, 1))
        store.spill(pos, pos, rng.normal(size=(H, n, D)), rng.normal(size=(H, n, D)))
        seen += n
        assert store.file_bytes <= store.max_bytes
        assert store.live_bytes <= store.max_bytes
    assert store.dropped > 0 and store.page_count
    # in memory per page: head, offset and the key summary, nothing that grows with page size
    assert store.table.nbytes <= 2 * max(64, store.page_count) * (12 + 8 * D)
    queries = rng.normal(size=(3, D)).astype(np.float32)
    for head in range(H):
        rows, bounds = store.upper_bounds(head, queries)
        for row, bound in zip(rows, bounds):
            keys, _, positions, _ = store._read_page(row)
            assert (queries @ keys.T).max() <= bound + 1e-4
            assert np.all(np.diff(positions) == 1)  # a page's tokens come back with their own positions
            assert positions[0] >= store.dropped // H - store.page_size  # the oldest pages were the ones dropped


def test_an_evicted_needle_is_recalled_by_a_matching_question(tmp_path):
    rng = np.random.default_rng(2)
    H, G, D = 2, 2, 16
    direction = rng.normal(size=D).astype(np.float32)
    direction /= np.linalg.norm(direction)
    layer = HeapKVCache(48, sinks=2, window=8, policy=H2O(),
                        recovery={"max_bytes": 1 << 20, "page_size": 8, "recall_pages": 2,
                                  "recall_max_chunk": 64, "query_rows": 4, "folder": str(tmp_path)})
    needle = 100
    scale = D ** -0.5
    for t in range(400):
        k = rng.normal(0, 0.5, size=(1, H, 1, D)).astype(np.float32)
        if t == needle:
            k[0, :, 0] = 6.0 * direction
        q = rng.normal(0, 0.5, size=(1, H * G, 1, D)).astype(np.float32)
        q -= (q @ direction)[..., None] * direction  # the stream never asks about the needle
        keys, values = layer.update_and_fetch(mx.array(k), mx.array(rng.normal(size=(1, H, 1, D)).astype(np.float32)))
        mx.eval(layer.attend(mx.array(q), keys, values, scale=scale))
    assert all(needle not in kept for kept in layer.kept_positions())
    assert layer.store.spilled > 0
    # The question: queries pointing at the needle's key.
    S = 6
    q = np.tile(4.0 * direction, (1, H * G, S, 1)).astype(np.float32)
    k = rng.normal(0, 0.5, size=(1, H, S, D)).astype(np.float32)
    keys, values = layer.update_and_fetch(mx.array(k), mx.array(rng.normal(size=(1, H, S, D)).astype(np.float32)))
    mx.eval(layer.attend(mx.array(q), keys, values, scale=scale))
    assert all(needle in kept for kept in layer.kept_positions())
    assert layer.recalls > 0 and layer.live <= 48


def test_the_disk_allowance_is_for_the_whole_model():
    from conftest import build_model
    from mlx_kv import HeapConfig, make_heap_cache, uninstall

    model = build_model("llama")
    allowance = 16 * 1024
    cache = make_heap_cache(model, HeapConfig(budget=40, sinks=2, window=8, recovery=allowance))
    try:
        tokens = np.random.default_rng(5).integers(0, 101, size=700)
        for start in range(0, len(tokens), 20):
            mx.eval(model(mx.array(tokens[start:start + 20])[None], cache=cache))
    finally:
        uninstall(model)
    stores = [layer.store for layer in cache]
    assert all(s.max_bytes == allowance // len(cache) for s in stores)
    assert sum(s.file_bytes for s in stores) <= allowance
    assert all(s.dropped > 0 for s in stores)  # the allowance really was reached
