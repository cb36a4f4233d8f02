"""Layer-adaptive budgets: allocations add up to the budget, profiles drive them."""

import json

import pytest

from conftest import build_model
from mlx_kv.budget import allocate, tokens_per_layer
from mlx_kv.config import HeapConfig


@pytest.mark.parametrize("weights", [[1, 1, 1, 1], [4, 3, 2, 1], [0.1, 5.0, 0.1, 2.5], [1e-3, 1e3, 1, 1]])
@pytest.mark.parametrize("total", [400, 401, 1000, 4099])
def test_allocation_sums_to_the_budget_and_respects_the_minimum(weights, total):
    parts = allocate(total, weights, minimum=69)
    assert sum(parts) == total and min(parts) >= 69
    order = sorted(range(4), key=lambda i: weights[i])
    assert all(parts[order[i]] <= parts[order[i + 1]] + 1 for i in range(3))


def test_pyramid_and_entropy_split_the_same_total(tmp_path):
    model = build_model("llama", num_hidden_layers=4)
    uniform = tokens_per_layer(HeapConfig(budget=300), model)
    pyramid = tokens_per_layer(HeapConfig(budget=300, allocation="pyramid"), model)
    assert uniform == [300] * 4 and sum(pyramid) == 1200 and pyramid == sorted(pyramid, reverse=True)
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"layers": [{"entropy": e} for e in (4.0, 1.0, 1.0, 3.0)]}))
    entropy = tokens_per_layer(HeapConfig(budget=300, allocation="entropy", profile=str(profile)), model)
    assert sum(entropy) == 1200 and entropy[0] > entropy[3] > entropy[1]
    with pytest.raises(ValueError, match="^allocation"):
        HeapConfig(allocation="entropy")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": [{"entropy": 1.0}]}))
    with pytest.raises(ValueError, match="^profile"):
        tokens_per_layer(HeapConfig(budget=300, allocation="entropy", profile=str(bad)), model)


def test_profile_measures_every_layer_and_sessions_use_it(tiny_model_dir):
    from mlx_kv.engine import Session
    from mlx_kv.models import load_model
    from mlx_kv.profile import load_profile, profile_model, profile_path, save_profile

    class WordTokenizer:
        """The tiny test model's vocabulary has only w0..w98; map task text onto it."""

        def __init__(self, inner):
            self.inner = inner

        def encode(self, text, add_special_tokens=False):
            return [hash(w) % 97 + 2 for w in text.split()]

        def apply_chat_template(self, messages, **_):
            return " ".join(m["content"] for m in messages)

        chat_template = "x"

    model, tokenizer, _ = load_model(str(tiny_model_dir))
    profile = profile_model(model, WordTokenizer(tokenizer), prompts=2, tokens=200, steps=6)
    assert len(profile["layers"]) == 2
    assert all(0 < layer["entropy"] and 0 < layer["top5"] <= 1 for layer in profile["layers"])
    target = profile_path(tiny_model_dir)
    save_profile(profile, target)
    try:
        assert load_profile(target)["layers"] == profile["layers"]
        session = Session.load(str(tiny_model_dir), budget=120, window=16, allocation="entropy")
        assert sum(layer.budget for layer in session.cache) == 240
    finally:
        target.unlink()
