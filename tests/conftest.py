"""Random-weight models built from real config shapes (no downloads)."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlx_kv.architectures import random_model
from mlx_kv.replay import Replay

CONFIGS = {
    "llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=101,
                  rope_theta=10000.0, tie_word_embeddings=False),
    "mistral": dict(model_type="mistral", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                    num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=101,
                    rope_theta=1000000.0, tie_word_embeddings=False),
    "qwen2": dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, vocab_size=101,
                  rope_theta=1000000.0, tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, vocab_size=101,
                  rope_theta=1000000.0, head_dim=16, tie_word_embeddings=True, max_position_embeddings=4096),
}


# A replay prompt of made-up ids for the random-weight models (mlx_kv.replay).
REPLAY = Replay(first=(5, 6, 7), later=(8, 9), suffix=(3,))


def replayed_logits(model, cache, tokens, replay, chunk=64):
    """The last logits of a (replayed) prefill, then those of 20 greedy decode steps, stacked."""
    import numpy as np

    from mlx_kv.generate import decode, prefill

    logits, _ = prefill(model, cache, tokens, chunk=chunk, replay=replay)
    rows = [np.array(logits)]
    for _, logits in decode(model, cache, logits, max_tokens=20):
        rows.append(np.array(logits))
    return np.stack(rows)


def assert_continues_as_eager_split(lazy, eager, rows) -> None:
    """A lazily split headwise cache ended as the eager split it stands for: every
    layer split, some head evicted, the same logits (`rows`: lazy's, eager's), and
    per head the same budget, count, batch, seed and kept positions."""
    import numpy as np

    from mlx_kv.heap.headwise import heaps

    assert not any(layer.joint for layer in lazy) and heaps(lazy)[0].evictions > 0
    assert np.max(np.abs(rows[0] - rows[1])) <= 1e-4
    for a, b in zip(heaps(lazy), heaps(eager)):
        assert (a.budget, a.live, a.collect_batch, a.seed) == (b.budget, b.live, b.collect_batch, b.seed)
        assert [sorted(r) for r in a.kept_positions()] == [sorted(r) for r in b.kept_positions()]


def build_model(model_type: str, seed: int = 0, **overrides):
    return random_model(dict(CONFIGS[model_type], **overrides), seed=seed)


@pytest.fixture
def llama_model():
    return build_model("llama")


def write_model_folder(path, model_type: str = "llama", seed: int = 0, **overrides):
    """A loadable model folder: config, safetensors weights and a word-level tokenizer."""
    import json
    from pathlib import Path

    from mlx.utils import tree_flatten
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = dict(CONFIGS[model_type], **overrides)
    words = ["<unk>", "<eos>"] + [f"w{i}" for i in range(config["vocab_size"] - 2)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<eos>", "unk_token": "<unk>",
        "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}",
    }))
    config["eos_token_id"] = 1
    (path / "config.json").write_text(json.dumps(config))
    model = build_model(model_type, seed=seed, **overrides)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("tiny-llama"))
