"""The cold tier: intermediate tokens stored at 8 or 4 bits."""

import mlx.core as mx
import numpy as np
import pytest

from conftest import build_model
from mlx_kv import HeapConfig, make_heap_cache, uninstall
from mlx_kv.heap.cold import ColdTier, group_size_for


def _model():
    # head_dim 32: MLX quantizes in groups of 32 or 64 channels
    return build_model("llama", hidden_size=128, num_attention_heads=4, num_key_value_heads=2)


def _run(model, config, tokens, decode=0, chunk=64, record=None):
    cache = make_heap_cache(model, config)
    logits = []
    try:
        for start in range(0, len(tokens), chunk):
            logits.append(model(mx.array(tokens[start:start + chunk])[None], cache=cache)[0, -1])
            mx.eval(logits[-1])
            if record is not None:
                record(cache)
        y = int(mx.argmax(logits[-1]).item())
        for _ in range(decode):
            logits.append(model(mx.array([[y]]), cache=cache)[0, -1])
            mx.eval(logits[-1])
            if record is not None:
                record(cache)
    finally:
        uninstall(model)
    return cache, np.stack([np.array(x) for x in logits])


@pytest.mark.parametrize("bits", [8, 4])
def test_round_trip_error_is_within_one_quantization_step(bits):
    rows = mx.random.normal((1, 2, 50, 64), key=mx.random.key(0)) * 3
    tier = ColdTier(bits)
    w, scales, biases = tier.quantize(rows)
    back = mx.dequantize(w, scales, biases, group_size=group_size_for(64), bits=bits)
    groups = np.array(rows).reshape(1, 2, 50, -1, group_size_for(64))
    step = (groups.max(-1) - groups.min(-1)) / (2**bits - 1)
    err = np.abs(np.array(back) - np.array(rows)).reshape(groups.shape).max(-1)
    assert np.all(err <= step * 1.01 + 1e-6)
    assert err.max() > 0  # it really is lossy


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("positions", ["absolute", "cache"])
def test_cold_heap_keeps_the_invariants_and_holds_fewer_bytes(bits, positions):
    model = _model()
    tokens = np.random.default_rng(1).integers(0, 101, size=400)
    budget = 160
    settings = dict(budget=budget, sinks=4, window=16, positions=positions)
    plain, _ = _run(model, HeapConfig(**settings), tokens, decode=40)
    cold, _ = _run(model, HeapConfig(**settings, cold_bits=bits), tokens, decode=40)
    for layer in cold:
        assert layer.live <= budget
        assert 0 < layer.cold_tokens <= layer.live
        tiers = layer.tier_counts()
        assert layer.cold_tokens <= tiers["intermediate"]  # only intermediate tokens turn cold
        for kept in layer.kept_positions():
            assert len(kept) == layer.live and np.all(np.diff(kept) > 0)
            assert np.isin(np.arange(4), kept).all()
            assert np.isin(np.arange(layer.tokens_seen - 16, layer.tokens_seen), kept).all()
    assert sum(c.nbytes for c in cold) < sum(c.nbytes for c in plain)


def test_with_a_position_only_policy_8_bit_logits_stay_close_to_the_fp_heap():
    model = _model()
    tokens = np.random.default_rng(2).integers(0, 101, size=300)
    config = dict(budget=128, sinks=4, window=16, policy="streaming", tenured=0)
    _, fp = _run(model, HeapConfig(**config), tokens, decode=20)
    _, q8 = _run(model, HeapConfig(**config, cold_bits=8), tokens, decode=20)
    _, q4 = _run(model, HeapConfig(**config, cold_bits=4), tokens, decode=20)
    err8, err4 = np.abs(q8 - fp).max(), np.abs(q4 - fp).max()
    assert 0 < err8 < 0.05
    assert err8 < err4 < 0.5


def test_a_cold_token_is_quantized_once_and_then_moved_exactly():
    model = _model()
    tokens = np.random.default_rng(3).integers(0, 101, size=400)
    seen: dict[int, np.ndarray] = {}
    changed = []

    def record(cache):
        layer = cache[0]
        if not layer.cold_tokens:
            return
        keys = layer.slots.cold.dequantized("keys")
        pos = layer.slots.positions[0, : layer.cold_tokens]
        for slot, p in enumerate(pos):
            row = np.array(keys[0, 0, slot])
            if p in seen and not np.array_equal(seen[p], row):
                changed.append(int(p))
            seen.setdefault(int(p), row)

    _run(model, HeapConfig(budget=128, sinks=4, window=16, tenured=0, cold_bits=4), tokens, decode=60,
         chunk=32, record=record)
    assert len(seen) > 50
    assert changed == []


def test_every_stored_row_is_its_token_key_exact_when_hot_and_quantized_once_when_cold():
    """Layer 0's keys depend only on the token and its position, so a KVCache
    fed the same tokens gives the reference row for every slot of every head,
    including tokens that were cold and were then promoted to tenured."""
    from mlx_lm.models.cache import KVCache

    model = _model()
    tokens = np.random.default_rng(4).integers(0, 101, size=460)
    reference = [KVCache() for _ in model.layers]
    model(mx.array(tokens)[None], cache=reference)
    ref_keys = np.array(reference[0].keys[0, :, : len(tokens)])  # (H, T, D)
    tier = ColdTier(4)
    ref_cold = tier._dequantize(tier.quantize(reference[0].keys[..., : len(tokens), :]))
    ref_twice = np.array(tier._dequantize(tier.quantize(ref_cold)))[0]
    ref_cold = np.array(ref_cold)[0]
    cold_then_hot, requantized, checked = set(), set(), 0

    cache = make_heap_cache(model, HeapConfig(budget=128, sinks=4, window=16, cold_bits=4, positions="absolute"))
    try:
        steps = [tokens[i:i + 32] for i in range(0, 384, 32)] + [tokens[i:i + 1] for i in range(384, 460)]
        for chunk in steps:
            mx.eval(model(mx.array(chunk)[None], cache=cache))
            layer = cache[0]
            keys, _ = layer._full_kv()
            keys = np.array(keys[0])
            for h in range(keys.shape[0]):
                for slot in range(layer.end):
                    p = layer.slots.positions[h, slot]
                    if p < 0:
                        continue
                    row = keys[h, slot]
                    if slot < layer.cold_tokens:
                        if not np.allclose(row, ref_cold[h, p], atol=1e-5):
                            # cold, tenured, demoted: quantized a second time (MLX's quantize is not idempotent)
                            np.testing.assert_allclose(row, ref_twice[h, p], atol=1e-5, err_msg=f"cold: head {h} pos {p}")
                            requantized.add((h, p))
                    elif not np.allclose(row, ref_keys[h, p], atol=1e-5):
                        # a token that left the cold tier keeps its quantized value
                        np.testing.assert_allclose(row, ref_cold[h, p], atol=1e-5, err_msg=f"hot: head {h} pos {p}")
                        cold_then_hot.add((h, p))
                    checked += 1
    finally:
        uninstall(model)
    assert checked > 1000
    assert cold_then_hot  # the path where a cold token leaves the tier ran
    assert len(requantized) < len(cold_then_hot)


def test_under_cache_positions_every_cold_row_is_its_token_key_rotated_where_the_slot_table_says():
    """positions="cache" rotates a key to its rank as it turns cold and moves
    `rot` with it: rotating any stored row from `rot` to the token's own
    position gives KVCache's key, to within a 4-bit step when cold (two if the
    tier was re-stamped since: quantized twice)."""
    from mlx_lm.models.cache import KVCache

    model = _model()
    tokens = np.random.default_rng(4).integers(0, 101, size=400)
    reference = [KVCache() for _ in model.layers]
    model(mx.array(tokens)[None], cache=reference)
    ref_keys = np.array(reference[0].keys[0, :, : len(tokens)])  # (H, T, D)
    cache = make_heap_cache(model, HeapConfig(budget=128, sinks=4, window=16, cold_bits=4, positions="cache"))
    restamped_rot, checked = set(), 0
    try:
        steps = [tokens[i:i + 32] for i in range(0, 320, 32)] + [tokens[i:i + 1] for i in range(320, 400)]
        for chunk in steps:
            mx.eval(model(mx.array(chunk)[None], cache=cache))
            layer = cache[0]
            n_cold, keys = layer.cold_tokens, layer._full_kv()[0]
            pos, rot = layer.slots.positions[:, : layer.end], layer.slots.rot[:, : layer.end]
            live = pos >= 0
            back = layer.rope(keys[0][:, :, None, :].reshape(-1, 1, 1, keys.shape[-1]),
                              offset=mx.array((pos - rot).reshape(-1).astype(np.int32)))
            back = np.array(back).reshape(keys.shape[1:])
            for h in range(keys.shape[1]):
                for slot in np.nonzero(live[h])[0]:
                    want, got = ref_keys[h, pos[h, slot]], back[h, slot]
                    row = np.array(keys[0, h, slot])
                    error = np.linalg.norm(got - want)
                    if slot < n_cold or error > 1e-3 * (1 + np.linalg.norm(want)):  # (hot: a token that left the tier)
                        assert error <= np.sqrt(len(row)) * (row.max() - row.min()) / 15 * 1.05 + 1e-5
                        restamped_rot.add(int(rot[h, slot]) - int(pos[h, slot]))
                    checked += 1
    finally:
        uninstall(model)
    assert checked > 1000 and len(restamped_rot) > 5  # cold keys sat at many shifts from their position


def test_a_cold_heap_saves_and_restores(tmp_path):
    from mlx_lm.models.cache import save_prompt_cache

    from mlx_kv.heap.prompt_cache import load_heap_cache

    model = _model()
    tokens = np.random.default_rng(4).integers(0, 101, size=300)
    cache, _ = _run(model, HeapConfig(budget=128, sinks=4, window=16, cold_bits=8), tokens)
    path = str(tmp_path / "cold.safetensors")
    save_prompt_cache(path, cache)
    restored = load_heap_cache(path, model=model)
    assert [c.cold_bits for c in restored] == [8, 8]
    assert [c.offset for c in restored] == [c.offset for c in cache]
    for a, b in zip(cache, restored):
        assert [list(k) for k in a.kept_positions()] == [list(k) for k in b.kept_positions()]
    out = model(mx.array([[5]]), cache=restored)
    uninstall(model)
    assert np.isfinite(np.array(out)).all()
    assert all(c.cold_tokens > 0 for c in restored)  # the next collection turned tokens cold again


def test_cold_bits_must_be_4_or_8():
    with pytest.raises(ValueError, match="cold_bits"):
        HeapConfig(cold_bits=3)
    with pytest.raises(ValueError, match="head_dim 48"):
        group_size_for(48)


@pytest.mark.parametrize("bits", [8, 4])
def test_packed_cold_attention_equals_attention_over_the_dequantized_tier(bits):
    from mlx_kv.attention import grouped_attention, packed_cold_attention

    rng = mx.random.key(7)
    k1, k2, k3, k4 = mx.random.split(rng, 4)
    H, G, D, n_cold, n_hot = 2, 3, 64, 40, 25
    queries = mx.random.normal((1, H * G, 1, D), key=k1)
    cold_k, cold_v = (mx.random.normal((1, H, n_cold, D), key=k) for k in (k2, k3))
    hot_k, hot_v = mx.split(mx.random.normal((1, H, 2 * n_hot, D), key=k4), 2, axis=2)
    tier = ColdTier(bits)
    packed_k, packed_v = tier.quantize(cold_k), tier.quantize(cold_v)
    keys = mx.concatenate([tier._dequantize(packed_k), hot_k], axis=2)
    values = mx.concatenate([tier._dequantize(packed_v), hot_v], axis=2)
    bias = mx.array(np.where(np.random.default_rng(0).random((H, n_cold + n_hot)) < 0.2, -np.inf, 0).astype(np.float32))
    want = grouped_attention(queries, keys, values, 0.125, first_query_slot=None, dead_bias=bias, score_rows=(0, 1),
                             keep_last_row=True)
    got = packed_cold_attention(queries, packed_k, packed_v, hot_k, hot_v, 0.125, bits=bits, group_size=64,
                                dead_bias=bias, scored=True, keep_last_row=True)
    for name in ("output", "weights", "count", "last_row"):
        np.testing.assert_allclose(np.array(getattr(got, name)), np.array(getattr(want, name)), atol=2e-5, err_msg=name)
    assert packed_cold_attention(queries, packed_k, packed_v, hot_k, hot_v, 0.125, bits=bits, group_size=64).weights is None


@pytest.mark.parametrize("positions", ["absolute", "cache"])
def test_decoding_over_the_packed_cold_tier_gives_the_dequantizing_path_logits(monkeypatch, positions):
    """Decode steps attend the packed rows; the logits and the kept tokens are
    those of attending the dequantized tier with every key at its own shift.
    (positions="cache" with no drift allowed: the queries' one rotation per
    head is then exactly each cold key's.)"""
    from mlx_kv import positions as positions_module
    from mlx_kv.attention import grouped_attention
    from mlx_kv.heap import layer as layer_module

    monkeypatch.setattr(positions_module, "COLD_DRIFT", 0)
    model = _model()
    tokens = np.random.default_rng(5).integers(0, 101, size=300)
    config = HeapConfig(budget=128, sinks=4, window=16, cold_bits=4, positions=positions)
    calls = []
    packed = layer_module.packed_cold_attention
    monkeypatch.setattr(layer_module, "packed_cold_attention", lambda *a, **k: calls.append(1) or packed(*a, **k))
    fast_cache, fast = _run(model, config, tokens, decode=30)
    assert len(calls) >= 30 * len(model.layers) * 0.9  # nearly every decode step had cold tokens
    if positions == "cache":
        assert all(layer.shifts.restamps for layer in fast_cache)  # the tier drifted and was re-stamped

    def dequantizing(self, queries, scale, dead_bias, scored, sample, base):
        keys, values = self._full_kv()
        keys = self.shifts.keys(self.rope, self.slots, keys, self.end, base)
        return grouped_attention(queries, keys, values, scale, first_query_slot=None, dead_bias=dead_bias,
                                 score_rows=(0, 1) if scored else (0, 0), keep_last_row=sample)

    monkeypatch.setattr(layer_module.HeapKVCache, "_attend_packed_cold", dequantizing)
    slow_cache, slow = _run(model, config, tokens, decode=30)
    np.testing.assert_allclose(fast, slow, atol=1e-4)
    for a, b in zip(fast_cache, slow_cache):
        assert [list(k) for k in a.kept_positions()] == [list(k) for k in b.kept_positions()]


def test_a_packed_cold_key_under_cache_positions_is_never_more_than_the_drift_from_its_rank():
    """Keys are rotated to their rank as they turn cold; evictions before them
    then owe them shifts the queries' one rotation per head covers to within
    COLD_DRIFT positions, and the tier is re-stamped only when that fails."""
    from mlx_kv.positions import COLD_DRIFT

    model = _model()
    tokens = np.random.default_rng(6).integers(0, 101, size=400)
    config = HeapConfig(budget=128, sinks=4, window=16, cold_bits=4, positions="cache")
    worst, drifted = [], []

    def record(cache):
        for layer in cache:
            slots = layer.slots
            if not slots.hot0:
                continue
            layer.shifts._owed(slots)
            owed = (slots.rank - slots.rot)[:, : slots.hot0]
            drifted.append(bool(owed.any()))
            worst.append(int(np.abs(owed - np.array(layer.shifts._cold_shift)[:, None]).max()))

    cache, _ = _run(model, config, tokens, decode=60, chunk=16, record=record)
    assert any(drifted)  # cold keys were owed shifts after they were quantized
    assert max(worst) <= COLD_DRIFT
    assert all(layer.shifts.restamps < layer.compactions / 2 for layer in cache)
