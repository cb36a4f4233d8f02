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
@pytest.mark.parametrize("policy", ["h2o", "tova", "snapkv", "streaming", "keydiff", "expected", "valuenorm"])
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


def test_a_cpu_decode_step_attends_as_the_fused_kernel_with_dead_slots_masked():
    # On the CPU a blind policy's decode step takes matmul-softmax-matmul (faster there than the fused kernel)
    from mlx_kv.attention import masked_attention

    rng = np.random.default_rng(2)
    q, k, v = (mx.array(rng.normal(size=s).astype(np.float32)) for s in ((1, 6, 1, 16), (1, 2, 50, 16), (1, 2, 50, 16)))
    dead = np.zeros((2, 50), np.float32)
    dead[0, 10:20] = dead[1, 30:45] = -np.inf
    for bias in (None, mx.array(dead)):
        mask = None if bias is None else mx.repeat(bias, 3, axis=0)[None, :, None, :]
        fused = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
        assert np.max(np.abs(np.array(masked_attention(q, k, v, 0.25, bias)) - np.array(fused))) <= 1e-5
