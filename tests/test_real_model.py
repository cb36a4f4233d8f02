"""The model of record, SmolLM2-135M-Instruct, as setup fetches and converts it.

Few and short on purpose (30 layers are slow on a CPU): it loads through the
GGUF path, agrees with an independent implementation, chats, and the heap at a
budget that evicts nothing gives KVCache's logits on it.
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache

REFERENCE = Path(__file__).parent / "data" / "smollm2_reference.npz"


@pytest.fixture(scope="module")
def real_model_dir():
    from mlx_kv.default_model import fetch_default

    return fetch_default()


@pytest.fixture(scope="module")
def float32_model(real_model_dir):
    from mlx_kv.models import load_model

    model, tokenizer, _ = load_model(str(real_model_dir), weights="float32")
    return model, tokenizer


def test_the_converted_default_model_keeps_the_gguf_quantization(real_model_dir):
    config = json.loads((real_model_dir / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["quantization"]["model.embed_tokens"]["bits"] == 8
    assert config["num_hidden_layers"] == 30 and config["num_key_value_heads"] == 3
    assert config["mlx_kv_source"]["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}


def test_a_short_chat_on_the_default_model(real_model_dir):
    from mlx_kv.engine import Session

    session = Session.load(str(real_model_dir), budget=512)
    reply = "".join(session.chat("What is the capital of France?", max_tokens=12))
    assert "Paris" in reply


def test_heap_that_evicts_nothing_gives_kvcache_logits(float32_model):
    from mlx_kv import HeapConfig, make_heap_cache, uninstall

    model, tokenizer = float32_model
    text = ("The lighthouse keeper counted the boats every evening and wrote the number in a ledger. " * 20)
    tokens = tokenizer.encode(text, add_special_tokens=False)[:300]
    assert len(tokens) == 300

    def run(cache):
        for start in range(0, 300, 64):
            out = model(mx.array(tokens[start:start + 64])[None], cache=cache)
        rows = [out[0, -1]]
        for _ in range(20):
            out = model(mx.array([[int(mx.argmax(rows[-1]))]]), cache=cache)
            rows.append(out[0, -1])
        return np.array(mx.stack(rows).astype(mx.float32))

    reference = run([KVCache() for _ in model.layers])
    heap = make_heap_cache(model, HeapConfig(budget=512, policy="h2o"))
    try:
        got = run(heap)
    finally:
        uninstall(model)
    assert all(layer.evictions == 0 for layer in heap)
    assert np.max(np.abs(got - reference)) <= 1e-4
