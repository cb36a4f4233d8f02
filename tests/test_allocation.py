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
    assert all(len(layer["retrieval"]) == 2 and all(0 <= v <= 1 for v in layer["retrieval"])
               for layer in profile["layers"])
    target = profile_path(tiny_model_dir)
    save_profile(profile, target)
    try:
        assert load_profile(target)["layers"] == profile["layers"]
        session = Session.load(str(tiny_model_dir), budget=120, window=16, allocation="entropy")
        assert sum(layer.budget for layer in session.cache) == 240
        session = Session.load(str(tiny_model_dir), budget=120, window=16, allocation="retrieval", policy="snapkv")
        assert all(layer.plan is not None for layer in session.cache)
        assert sum(layer.budget for layer in session.cache) == 240
    finally:
        target.unlink()


def test_a_session_left_to_choose_replays_and_splits_its_budget_by_the_replay_or_the_profiles_retrieval_scores(
        tiny_model_dir, tmp_path):
    from mlx_kv.engine import SESSION_POLICY, Session
    from mlx_kv.profile import profile_path

    target = profile_path(tiny_model_dir)
    assert not target.exists()
    plain = Session.load(str(tiny_model_dir), budget=120, window=16)
    assert (plain.config.policy, plain.config.allocation, plain.config.policy_args) == (SESSION_POLICY, "headwise",
                                                                                        {"scope": "chunk"})
    notes = []
    keydiff = Session.load(str(tiny_model_dir), budget=120, window=16, policy="keydiff", progress=notes.append)
    assert keydiff.config.allocation == "uniform"  # no profile: one count
    assert any("`mlx-kv profile" in note for note in notes)
    layers = [{"entropy": 1.0, "top1": 0.5, "top5": 0.9, "retrieval": row} for row in ([0.0, 0.9], [0.1, 0.0])]
    target.write_text(json.dumps({"version": 2, "layers": layers}))
    try:
        session = Session.load(str(tiny_model_dir), budget=120, window=16, policy="keydiff")
        assert session.config.allocation == "retrieval"
        budgets = [[head.budget for head in layer.heads] for layer in session.cache]
        assert Session.load(str(tiny_model_dir), budget=120, window=16).config.allocation == "headwise"
        assert Session.load(str(tiny_model_dir), budget=120, window=16, policy="h2o").config.allocation == "retrieval"
        "".join(session.chat("w1 w2 w3 " * 60, max_tokens=8))
        session.save(str(tmp_path / "s.mlxkv"))
    finally:
        target.unlink()
    restored = Session.restore(str(tmp_path / "s.mlxkv"))  # the plan travels with the heap, not the profile
    assert [[head.budget for head in layer.heads] for layer in restored.cache] == \
        [[head.budget for head in layer.heads] for layer in session.cache] != budgets
    assert restored.tokens_seen == session.tokens_seen
    assert "".join(restored.chat("w4", max_tokens=4)) == "".join(session.chat("w4", max_tokens=4))


def test_scores_move_tokens_to_the_layers_that_need_them():
    import numpy as np

    from mlx_kv.budget import allocate_by_scores

    sharp = np.array([[0.9, 0.8, 0.7, 0.01], [0.9, 0.85, 0.6, 0.02]])  # layer 0: three tokens matter
    flat = np.full((2, 4), 0.05)  # layer 1: nothing stands out
    budgets = allocate_by_scores([sharp, flat], [10, 10], total=24, minimum=11)
    assert sum(budgets) == 24 and budgets == [13, 11]
    assert allocate_by_scores([flat, flat], [10, 10], total=24, minimum=5) == [12, 12]


def test_adaptive_allocation_keeps_the_heaps_total_and_each_layers_floor():
    import numpy as np

    from conftest import build_model
    from mlx_kv import HeapConfig, make_heap_cache, uninstall
    from mlx_kv.generate import prefill
    from mlx_kv.replay import Replay

    model = build_model("llama", num_hidden_layers=4)
    heap = make_heap_cache(model, HeapConfig(budget=120, window=16, policy="kvzip", allocation="adaptive"))
    tokens = np.random.default_rng(5).integers(0, 101, size=400).tolist()
    try:
        prefill(model, heap, tokens, chunk=100, replay=Replay((5, 6), (7,), (3,)))
    finally:
        uninstall(model)
    budgets = [layer.budget for layer in heap]
    assert sum(budgets) == 4 * 120 and min(budgets) >= 4 + 16 + 1
    assert all(layer.live <= layer.budget for layer in heap)
    assert len(set(budgets)) > 1  # random weights score layers differently


def test_adaptive_allocation_with_a_policy_that_never_replays_is_refused_not_silently_uniform():
    with pytest.raises(ValueError, match="allocation: 'adaptive'.*'h2o' does not replay"):
        HeapConfig(policy="h2o", allocation="adaptive").validate()
    HeapConfig(policy="kvzip", allocation="adaptive").validate()
