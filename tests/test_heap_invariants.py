"""What must hold after every call, whatever the policy evicts."""

import mlx.core as mx
import numpy as np
import pytest

from conftest import build_model
from mlx_kv import HeapConfig, make_heap_cache, uninstall
from mlx_kv.budget import kv_geometry


def check_invariants(cache, budget, sinks, window):
    for layer in cache:
        assert layer.live <= budget
        assert layer.slots.keys.shape[2] <= budget
        for kept in layer.kept_positions():
            assert len(kept) == layer.live
            assert np.all(np.diff(kept) > 0), "positions strictly increasing"
            expected_sinks = np.arange(min(sinks, layer.offset))
            assert np.isin(expected_sinks, kept).all(), "sinks present"
            young = np.arange(max(0, layer.offset - window), layer.offset)
            assert np.isin(young, kept).all(), "young window present"


@pytest.mark.parametrize("policy", ["h2o", "tova", "snapkv", "streaming", "random", "surprise", "keydiff", "expected", "valuenorm"])
@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_budget_sinks_window_and_order_hold_after_every_call(policy, threshold):
    model = build_model("llama")
    budget, sinks, window = 96, 4, 16
    cache = make_heap_cache(model, HeapConfig(budget=budget, sinks=sinks, window=window,
                                              policy=policy, compact_threshold=threshold))
    try:
        tokens = np.random.default_rng(2).integers(0, 101, size=300)
        for start in range(0, 300, 64):
            mx.eval(model(mx.array(tokens[start:start + 64])[None], cache=cache))
            check_invariants(cache, budget, sinks, window)
        y = 5
        for _ in range(60):
            out = model(mx.array([[y]]), cache=cache)
            y = int(mx.argmax(out[0, -1]).item())
            check_invariants(cache, budget, sinks, window)
    finally:
        uninstall(model)
    assert all(layer.evictions > 0 for layer in cache)
    assert all(layer.offset == 360 for layer in cache)
    # Heads choose independently: some layer keeps different tokens per KV head.
    if policy in ("h2o", "tova", "snapkv"):
        assert any(not np.array_equal(*layer.kept_positions()) for layer in cache)


def test_each_tier_is_populated_and_counts_add_up():
    model = build_model("llama")
    cache = make_heap_cache(model, HeapConfig(budget=96, sinks=4, window=16, tenured=20, promote_after=1))
    try:
        tokens = np.random.default_rng(3).integers(0, 101, size=400)
        for start in range(0, 400, 32):
            mx.eval(model(mx.array(tokens[start:start + 32])[None], cache=cache))
    finally:
        uninstall(model)
    for layer in cache:
        tiers = layer.tier_counts()
        assert sum(tiers.values()) == layer.live
        assert tiers["sinks"] == 4 and tiers["young"] >= 16
        assert tiers["tenured"] > 0 and tiers["intermediate"] > 0
        assert layer.promotions > 0


def test_generate_with_small_budget_over_2000_tokens_stays_under_budget():
    from mlx_lm.generate import generate_step

    model = build_model("llama")
    budget = 128
    cache = make_heap_cache(model, HeapConfig(budget=budget, window=32))
    per_token = kv_geometry(model).heap_bytes_per_token_layer
    prompt = mx.array(np.random.default_rng(4).integers(0, 101, size=2000))
    try:
        steps = 0
        for _token, _ in generate_step(prompt, model, prompt_cache=cache, max_tokens=40, prefill_step_size=512):
            steps += 1
            assert all(layer.nbytes <= budget * per_token for layer in cache)
    finally:
        uninstall(model)
    assert steps == 40
    assert all(layer.offset in (2039, 2040) for layer in cache)  # generate_step runs one step ahead


def test_mlx_lm_generate_accepts_the_heap_as_prompt_cache(tiny_model_dir):
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(tiny_model_dir))
    cache = make_heap_cache(model, HeapConfig(budget=96, window=16))
    prompt = " ".join(f"w{i % 97}" for i in range(400))
    try:
        text = mlx_lm.generate(model, tokenizer, prompt=prompt, max_tokens=12, prompt_cache=cache)
    finally:
        uninstall(model)
    assert isinstance(text, str)
    assert cache[0].live <= 96 and cache[0].offset > 400


def test_score_every_n_decode_steps_folds_attention_only_on_those_steps_and_saves_the_setting():
    model = build_model("llama")
    cache = make_heap_cache(model, HeapConfig(budget=400, sinks=4, window=16, policy="h2o", score_every=4))
    try:
        mx.eval(model(mx.array(np.arange(40) % 101)[None], cache=cache))
        seen_after_prefill = float(cache[0].slots.seen[0, 0])
        y, seen = 5, []
        for _ in range(8):
            out = model(mx.array([[y]]), cache=cache)
            y = int(mx.argmax(out[0, -1]).item())
            seen.append(float(cache[0].slots.seen[0, 0]) - seen_after_prefill)
    finally:
        uninstall(model)
    group = 2  # build_model's query heads per KV head
    # calls 2..9 are decode steps; calls 4 and 8 score (each adds one query per query head of the group)
    assert seen == [0.0, 0.0, group, group, group, group, 2 * group, 2 * group]
    from mlx_kv.heap.layer import HeapKVCache

    assert HeapKVCache.from_state(cache[0].state).score_every == 4
