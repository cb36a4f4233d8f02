"""Save, load, continue: the same tokens as without the round trip."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import load_prompt_cache, save_prompt_cache

from conftest import build_model
from mlx_kv import HeapConfig, make_heap_cache, uninstall


def greedy(model, cache, first, n):
    out, y = [], first
    for _ in range(n):
        logits = model(mx.array([[y]]), cache=cache)
        y = int(mx.argmax(logits[0, -1]).item())
        out.append(y)
    return out


@pytest.mark.parametrize("policy", ["h2o", "snapkv", "random"])
def test_save_load_continue_gives_the_same_tokens(tmp_path, policy):
    model = build_model("llama")
    cache = make_heap_cache(model, HeapConfig(budget=80, window=16, policy=policy))
    try:
        prompt = np.random.default_rng(5).integers(0, 101, size=300)
        for start in range(0, 300, 64):
            mx.eval(model(mx.array(prompt[start:start + 64])[None], cache=cache))
        greedy(model, cache, 3, 7)  # leave dead slots and a partly filled batch behind
        path = str(tmp_path / "heap.safetensors")
        save_prompt_cache(path, cache)
        restored = load_prompt_cache(path)
        assert [type(c).__name__ for c in restored] == ["HeapKVCache"] * len(cache)
        for a, b in zip(cache, restored):
            assert a.offset == b.offset and a.live == b.live
            assert all(np.array_equal(x, y) for x, y in zip(a.kept_positions(), b.kept_positions()))
            assert a.tier_counts() == b.tier_counts() and a.evictions == b.evictions
        expected = greedy(model, cache, 9, 40)
        got = greedy(model, restored, 9, 40)
    finally:
        uninstall(model)
    assert got == expected
