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


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE), json.loads(REFERENCE.with_suffix(".json").read_text())


def test_tokenizer_ids_equal_the_reference_on_mixed_text(float32_model, reference):
    """English, code, accents, CJK, digits, emoji, odd whitespace (scripts/reference_logits.py)."""
    _, tokenizer = float32_model
    arrays, meta = reference
    assert tokenizer.encode(meta["mixed_text"], add_special_tokens=False) == arrays["mixed_ids"].tolist()
    for k, prompt in enumerate(meta["chat_prompts"]):
        rendered = tokenizer.apply_chat_template(prompt["messages"], add_generation_prompt=True, tokenize=False)
        assert rendered == prompt["rendered"]
        assert tokenizer.encode(rendered, add_special_tokens=False) == arrays[f"chat{k}_ids"].tolist()


@pytest.mark.parametrize("weights, tolerance", [("float32", 1e-3), ("quantized", 0.15)])
def test_logits_match_transformers_gguf_loader(real_model_dir, reference, weights, tolerance):
    """Independent implementation: transformers' GGUF loader, float32 (measured here: max |diff|
    1e-4 with float32 weights, 0.05 with the 4-bit ones; top-1 agreement 100% at every position)."""
    from mlx_kv.models import load_model

    arrays, meta = reference
    model, _, _ = load_model(str(real_model_dir), weights=weights)
    agree, positions = 0, 0
    for k in range(len(meta["chat_prompts"])):
        ids = arrays[f"chat{k}_ids"].tolist()
        out = np.array(model(mx.array([ids]))[0].astype(mx.float32))
        top_ids = arrays[f"chat{k}_topk_ids"].astype(np.int64)
        assert np.abs(out[-1] - arrays[f"chat{k}_last_logits"]).max() <= tolerance
        assert np.abs(np.take_along_axis(out, top_ids, axis=-1) - arrays[f"chat{k}_topk_values"]).max() <= tolerance
        agree += int((out.argmax(-1) == top_ids[:, 0]).sum())
        positions += len(ids)
    assert agree / positions >= 0.97, f"top-1 agreement {agree}/{positions}"


def test_greedy_continuations_equal_the_reference(float32_model, reference):
    model, _ = float32_model
    arrays, meta = reference
    for k in range(len(meta["chat_prompts"])):
        cache = [KVCache() for _ in model.layers]
        logits = model(mx.array([arrays[f"chat{k}_ids"].tolist()]), cache=cache)[0, -1]
        got = []
        for _ in range(20):
            got.append(int(mx.argmax(logits)))
            logits = model(mx.array([[got[-1]]]), cache=cache)[0, -1]
        assert got == arrays[f"chat{k}_greedy_ids"].tolist()
