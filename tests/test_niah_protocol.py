"""bench niah's protocol: prompts in the model's template, three settings, shared samples."""

import json

import mlx_lm
import pytest

from mlx_kv.bench.niah import Runner, bench_niah, export_samples, make_samples
from mlx_kv.haystack import load_haystack, split_sentences
from mlx_kv.models import BUNDLED_MODEL
from mlx_kv.tasks import make_sample


@pytest.fixture(scope="module")
def tiny():
    return mlx_lm.load(str(BUNDLED_MODEL))


def test_pydoc_haystack_is_prose_without_code_blocks():
    prose = load_haystack("pydoc")
    assert len(prose.sentences) > 1500  # (about 80k tokens: enough for 8k-token documents)
    assert not any(s.startswith(" ") or "::=" in s for s in prose.sentences[:500])
    assert split_sentences("Title\n*****\n\nOne two three. Four five six!\n\n   code = 1\n") == [
        "One two three.", "Four five six!"]


def test_a_haystack_document_holds_prose_and_the_needle(tiny):
    _, tokenizer = tiny
    prose = load_haystack("pydoc")
    sample = make_sample("single_needle", 512, tokenizer, depth=0.5, seed=3, haystack=prose)
    assert f"is {sample.answer[0]} ." in sample.context
    assert sum(s in sample.context for s in prose.sentences) > 5
    again = make_sample("single_needle", 512, tokenizer, depth=0.5, seed=3, haystack=prose)
    assert again == sample


def test_prompts_feed_the_document_then_the_question(tiny):
    model, tokenizer = tiny
    runner = Runner(model, tokenizer)
    sample = make_sample("single_needle", 256, tokenizer, seed=1)
    p = runner.prompt(sample)
    full = tokenizer.decode(p.doc + p.question)
    assert sample.context.split()[5] in tokenizer.decode(p.doc)
    assert sample.question.split()[-2] in tokenizer.decode(p.question)
    assert full == tokenizer.decode(p.aware)  # mlx-kv-tiny keeps its document turn when aware
    assert p.answer_limit > len(sample.answer)


@pytest.mark.parametrize("setting", ["stream", "compress", "aware"])
def test_every_setting_keeps_the_budget_and_scores(tiny, setting):
    model, tokenizer = tiny
    runner = Runner(model, tokenizer)
    sample = make_sample("single_needle", 700, tokenizer, seed=2)
    kept = runner.trial(sample, "h2o", 0.5, setting)
    full = runner.trial(sample, "full", 0.0, setting)
    assert kept.kv_bytes < full.kv_bytes
    assert kept.score in (0.0, 1.0) and full.score in (0.0, 1.0)


def test_stream_and_compress_differ_only_in_when_the_heap_evicts(tiny):
    """compress evicts once after the document: its only collection happens there."""
    model, tokenizer = tiny
    runner = Runner(model, tokenizer)
    p = runner.prompt(make_sample("single_needle", 1100, tokenizer, seed=4))
    counts = {}
    for setting, chunk in (("stream", 512), ("compress", len(p.doc))):
        cache = runner.make_cache("h2o", 300)
        runner.prefill(cache, p.doc, chunk=chunk)
        counts[setting] = cache[0].collections
    assert counts["compress"] == 1 < counts["stream"]


def test_export_writes_the_prompts_the_benchmark_feeds(tiny, tmp_path):
    model, tokenizer = tiny
    path = tmp_path / "samples.jsonl"
    assert export_samples(tokenizer, str(path), tasks=["single_needle", "multi_key"], context=256, trials=3,
                          seed=0) == 6
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    samples = make_samples(tokenizer, "single_needle", 256, 3, 0)
    first = Runner(model, tokenizer).prompt(samples[0])
    assert rows[0]["doc_ids"] == first.doc and rows[0]["question_ids"] == first.question
    assert rows[0]["answers"] == list(samples[0].answer)


def test_full_runs_once_per_prompt_shape(tiny):
    model, tokenizer = tiny
    cells = bench_niah(model, tokenizer, tasks=["single_needle"], policies=["full", "h2o"], ratios=[0.5],
                       settings=["stream", "compress", "aware"], context=256, trials=2, seed=0)
    assert [(c.policy, c.setting) for c in cells] == [
        ("full", "stream"), ("h2o", "stream"), ("h2o", "compress"), ("full", "aware"), ("h2o", "aware")]


def test_compress_from_one_shared_prefill_equals_its_own_prefill_per_ratio(tiny):
    model, tokenizer = tiny
    runner = Runner(model, tokenizer)
    sample = make_sample("single_needle", 700, tokenizer, seed=5)
    shared = runner.compress_trials(sample, "h2o", [0.25, 0.75])
    for ratio, trial in shared.items():
        alone = runner.trial(sample, "h2o", ratio, "compress")
        assert (trial.prediction, trial.kv_bytes) == (alone.prediction, alone.kv_bytes)


def test_headmask_compresses_as_kvpress_does_masking_pairs_ranked_across_layers_and_heads(tiny):
    from mlx_kv.bench import niah
    from mlx_kv.heap import prompt_cache

    model, tokenizer = tiny
    runner = Runner(model, tokenizer)
    sample = make_sample("single_needle", 600, tokenizer, seed=6)
    seen = {}
    hide = prompt_cache.hide_globally

    def spy(cache, keep):
        seen["visible"] = hide(cache, keep)
        seen["counts"] = [[int(((layer.slots.positions[h, :layer.end] >= 0)).sum()) - len(layer._hidden[h])
                           for h in range(layer.slots.n_heads)] for layer in cache]
        seen["keep"], seen["heads"] = keep, sum(layer.slots.n_heads for layer in cache)
        return seen["visible"]

    niah.hide_globally = spy
    try:
        masked = runner.compress_trials(sample, "h2o+headmask", [0.75])[0.75]
    finally:
        niah.hide_globally = hide
    freed = runner.compress_trials(sample, "h2o", [0.75])[0.75]
    assert seen["visible"] == seen["keep"] * seen["heads"]  # the same pairs in all as the heap keeps
    assert sum(map(sum, seen["counts"])) == seen["visible"]
    assert len({c for layer in seen["counts"] for c in layer}) > 1  # heads and layers end with different counts
    assert masked.kv_bytes > freed.kv_bytes  # nothing is freed
    with pytest.raises(ValueError, match="compress setting only"):
        runner.trial(sample, "h2o+headmask", 0.75, "stream")


def test_a_hidden_slot_is_invisible_to_its_head_only():
    import mlx.core as mx
    import numpy as np

    from mlx_kv.heap.layer import HeapKVCache

    rng = np.random.default_rng(0)
    H, G, D, T = 2, 2, 16, 40
    keys, values = (mx.array(rng.normal(size=(1, H, T, D)).astype(np.float32)) for _ in range(2))
    queries = mx.array(rng.normal(size=(1, H * G, 1, D)).astype(np.float32))
    layer = HeapKVCache(budget=100, sinks=2, window=4)
    layer.update_and_fetch(keys, values)
    visible = np.ones((H, T), bool)
    visible[0, 5:20] = False
    visible[1, 30:33] = False
    layer.hide(visible)
    k, v = layer.update_and_fetch(*(mx.zeros((1, H, 1, D)) for _ in range(2)))
    out = np.array(layer.attend(queries, k, v, scale=0.25))[0]
    k, v = np.array(k)[0], np.array(v)[0]
    for qh in range(H * G):
        h = qh // G
        seen = np.append(visible[h], True)
        s = 0.25 * k[h][seen] @ np.array(queries)[0, qh, 0]
        w = np.exp(s - s.max())
        np.testing.assert_allclose(out[qh, 0], (w / w.sum()) @ v[h][seen], atol=1e-5)
