"""With a budget that evicts nothing, the heap must reproduce KVCache's logits."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache

from conftest import build_model
from mlx_kv import HeapConfig, make_heap_cache, uninstall


def run(model, cache, tokens, chunk=64, decode=20):
    logits = []
    for start in range(0, len(tokens), chunk):
        out = model(mx.array(tokens[start:start + chunk])[None], cache=cache)
        mx.eval(out)
    logits.append(np.array(out[0, -1]))
    y = int(np.argmax(logits[-1]))
    for _ in range(decode):
        out = model(mx.array([[y]]), cache=cache)
        logits.append(np.array(out[0, -1]))
        y = int(np.argmax(logits[-1]))
    return np.stack(logits)


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
@pytest.mark.parametrize("policy", ["h2o", "tova", "snapkv", "streaming"])
def test_heap_logits_equal_kvcache_when_nothing_is_evicted(model_type, policy):
    model = build_model(model_type)
    tokens = np.random.default_rng(1).integers(0, 101, size=300).tolist()
    reference = run(model, [KVCache() for _ in model.layers], tokens)
    heap = make_heap_cache(model, HeapConfig(budget=512, policy=policy))
    try:
        got = run(model, heap, tokens)
    finally:
        uninstall(model)
    assert np.max(np.abs(got - reference)) <= 1e-4
    assert all(c.evictions == 0 for c in heap)
    assert all(c.offset == 320 for c in heap)


def test_uninstall_restores_the_original_attention():
    import mlx_lm.models.llama as llama_module
    from mlx_lm.models.base import scaled_dot_product_attention as original

    model = build_model("llama")
    make_heap_cache(model, HeapConfig(budget=128))
    make_heap_cache(model, HeapConfig(budget=128))  # idempotent
    assert llama_module.scaled_dot_product_attention is not original
    uninstall(model)
    assert llama_module.scaled_dot_product_attention is original
