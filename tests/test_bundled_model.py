"""The bundled model models/mlx-kv-tiny: loads with mlx-lm, reproduces the
trained model's logits, speaks the chat format, and finds a needle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlx_kv import tasks as T
from mlx_kv.tiny_chat import render_chat

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "mlx-kv-tiny"

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "model.safetensors").exists(), reason="bundled model not built")


@pytest.fixture(scope="module")
def loaded():
    import mlx_lm

    return mlx_lm.load(str(MODEL_DIR))


def test_files_and_config():
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # GQA
    for k in ("rope_theta", "max_position_embeddings", "tie_word_embeddings", "eos_token_id", "torch_dtype"):
        assert k in cfg
    total = sum(f.stat().st_size for f in MODEL_DIR.iterdir() if f.is_file())
    assert total < 50 * 2**20
    tcfg = json.loads((MODEL_DIR / "tokenizer_config.json").read_text())
    assert tcfg["eos_token"] == "<|end|>" and "chat_template" in tcfg


def test_loads_and_reproduces_reference_logits(loaded):
    import mlx.core as mx

    model, _ = loaded
    ref = np.load(MODEL_DIR / "reference_logits.npz")
    logits = model(mx.array(ref["input_ids"])[None])[0]
    diff = np.abs(np.array(logits, dtype=np.float32) - ref["logits"]).max()
    assert diff < 1e-4, diff


def test_chat_template_with_document(loaded):
    _, tok = loaded
    msgs = [
        {"role": "system", "content": "Answer briefly ."},
        {"role": "document", "content": "The special magic number for lemon is 417 ."},
        {"role": "user", "content": "What is the special magic number for lemon ?"},
    ]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == render_chat(msgs, add_generation_prompt=True)
    assert text.startswith("<|bos|><|system|>\n")
    assert "<|document|>\nThe special magic number for lemon is 417 .<|end|>\n<|user|>\n" in text
    assert text.endswith("<|assistant|>\n")
    ids = tok.encode(text)
    eos = tok.eos_token_id
    assert tok.eos_token == "<|end|>" and eos in tok.eos_token_ids
    assert ids.count(eos) == 3
    # the document block alone is a prefix of the full prompt (the app prefills it first)
    doc_only = tok.apply_chat_template(msgs[:2], add_generation_prompt=False, tokenize=False)
    assert text.startswith(doc_only)
    assert tok.decode(tok.encode("The special magic number for lemon is 417 .")) == \
        "The special magic number for lemon is 417 ."


def _greedy_reply(model, tok, prompt: str, cache) -> str:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    out = []
    for t, _ in generate_step(mx.array(tok.encode(prompt)), model, max_tokens=24, prompt_cache=cache,
                              prefill_step_size=512):
        if int(t) in tok.eos_token_ids:
            break
        out.append(int(t))
    return tok.decode(out)


def test_answers_single_needle_1k_with_the_full_cache_and_through_a_heap_that_evicts_nothing(loaded):
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    from mlx_kv import HeapConfig, make_heap_cache, uninstall

    model, tok = loaded
    full_hits, heap_hits, same = 0, 0, 0
    trials = 10
    for i in range(trials):
        s = T.make_sample("single_needle", 1000, tok, depth=(i + 0.5) / trials, seed=2 * 10**9 + i)
        prompt = T.format_prompt(tok, s)
        cache = make_prompt_cache(model)
        assert all(type(c) is KVCache for c in cache)
        full = _greedy_reply(model, tok, prompt, cache)
        heap = make_heap_cache(model, HeapConfig(budget=2048))
        try:
            via_heap = _greedy_reply(model, tok, prompt, heap)
        finally:
            uninstall(model)
        assert all(layer.evictions == 0 for layer in heap)
        full_hits += s.score(full) == 1.0
        heap_hits += s.score(via_heap) == 1.0
        same += full == via_heap
    # held-out seeds at needle depths spread over the document; the eval in the model
    # card measures the rate on hundreds of them
    assert full_hits >= 8, full_hits
    assert heap_hits == full_hits and same == trials
