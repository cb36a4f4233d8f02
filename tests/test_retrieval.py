"""allocation="retrieval": KV heads keep counts fixed by how often they copy (mlx_kv.retrieval)."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache, save_prompt_cache

from conftest import assert_continues_as_eager_split, build_model, replayed_logits
from mlx_kv import HeapConfig, make_heap_cache, uninstall
from mlx_kv.budget import allocate_capped
from mlx_kv.generate import decode, prefill
from mlx_kv.heap.headwise import HeadwiseKVCache, heaps
from mlx_kv.heap.layer import default_collect_batch
from mlx_kv.heap.prompt_cache import clone_heap, load_heap_cache, total_bytes
from mlx_kv.replay import Replay
from mlx_kv.retrieval import _CopyProbe, copy_prompt


def write_profile(path, scores):
    layers = [{"entropy": 1.0, "top1": 0.5, "top5": 0.9, "retrieval": list(row)} for row in scores]
    path.write_text(json.dumps({"version": 2, "layers": layers}))
    return str(path)


COPIER = [[0.0, 0.9], [0.1, 0.0]]  # layer 0's second KV head copies, layer 1's first a little


def planned_heap(model, tmp_path, scores=COPIER, **settings):
    """A heap with allocation="retrieval" on a profile holding `scores` (layers x KV heads)."""
    profile = write_profile(tmp_path / "p.json", scores)
    return make_heap_cache(model, HeapConfig(allocation="retrieval", profile=profile, **settings))


@pytest.mark.parametrize("total,weights,minimum,cap", [
    (100, [1, 0, 0, 0], 5, 1000), (100, [1, 1, 0, 0], 5, 30), (57, [0.3, 0.1, 0.6], 4, 40), (10, [0, 0], 5, 9),
])
def test_capped_split_keeps_floor_cap_and_total(total, weights, minimum, cap):
    parts = allocate_capped(total, weights, minimum, cap)
    assert parts.min() >= minimum and parts.max() <= max(cap, minimum)
    assert parts.sum() == min(total, max(cap, minimum) * len(weights))


def test_what_a_capped_head_cannot_take_goes_to_the_others_by_weight():
    parts = allocate_capped(200, [10, 2, 1, 1], 10, 80)
    assert parts[0] == 80 and parts[1] == 55 and sorted(parts[2:]) == [32, 33] and parts.sum() == 200
    assert allocate_capped(200, [1, 1, 1, 1], 10, 40).tolist() == [40] * 4  # all capped: each keeps what it saw


def test_the_probe_counts_copy_rows_whose_strongest_key_is_their_target():
    L, D, first = 12, 16, 8
    keys = mx.array(np.eye(L, D, dtype=np.float32))  # one distinct direction per position
    targets = np.array([1, 2, 3])
    q = np.zeros((1, 2, L, D), np.float32)
    q[0, 0, first:first + 3] = np.array(keys)[targets] * 20  # head 0 looks at the targets
    q[0, 1, first:first + 3] = np.array(keys)[[0, 0, 0]] * 20  # head 1 at the first token
    probe = _CopyProbe(first, targets)
    k, v = probe.update_and_fetch(keys[None, None], keys[None, None])
    probe.attend(mx.array(q), k, v, scale=1.0, mask="causal")
    assert probe.hits.tolist() == [1.0, 0.0]


def test_the_copy_prompt_targets_the_original_of_the_token_each_row_writes():
    class Words:
        chat_template = None

        def encode(self, text, add_special_tokens=False):
            return [len(w) for w in text.split()]

    doc = [11, 12, 13, 14, 15]
    ids, first, targets = copy_prompt(Words(), doc, Replay(first=(5, 6), later=(7,), suffix=(3,)))
    assert ids[first:] == doc and len(targets) == len(doc) - 1
    assert all(ids[t] == ids[first + j + 1] == doc[j + 1] for j, t in enumerate(targets))


def test_heads_keep_counts_by_their_retrieval_scores_within_the_same_total(tmp_path):
    model = build_model("llama")
    heap = planned_heap(model, tmp_path, budget=80, window=8, policy="snapkv")
    tokens = np.random.default_rng(3).integers(0, 101, size=400).tolist()
    try:
        prefill(model, heap, tokens, chunk=64)
    finally:
        uninstall(model)
    budgets = [[head.budget for head in layer.heads] for layer in heap]
    assert sum(map(sum, budgets)) == 4 * 80 and budgets[0][1] == max(map(max, budgets)) and budgets[0][1] > 80
    assert budgets[1][0] > budgets[0][0] == budgets[1][1] == 4 + 8 + 1  # zero scores keep the floor
    assert [[head.live for head in layer.heads] for layer in heap] == budgets
    assert all(layer.budget == 80 for layer in heap)  # the layer reads as its mean
    assert total_bytes(heap) == sum(unit.nbytes for unit in heaps(heap))


def test_a_short_stream_keeps_everything_and_gives_kvcache_logits(tmp_path):
    """No head is given more than it has seen, so while the stream is shorter
    than the mean budget nothing is evicted, however unequal the scores."""
    model = build_model("llama")
    tokens = np.random.default_rng(1).integers(0, 101, size=200).tolist()
    reference = replayed_logits(model, [KVCache() for _ in model.layers], tokens, None)
    heap = planned_heap(model, tmp_path, budget=240, policy="h2o")
    try:
        got = replayed_logits(model, heap, tokens, None)
    finally:
        uninstall(model)
    assert np.max(np.abs(got - reference)) <= 1e-4
    assert all(head.evictions == 0 and head.live == 220 for head in heaps(heap))


def test_a_planned_heap_saved_and_cloned_keeps_its_plan_and_continues_as_the_original(tmp_path):
    model = build_model("llama")
    heap = planned_heap(model, tmp_path, [[0.5, 0.0], [0.0, 0.2]], budget=60, window=8, policy="tova")
    tokens = np.random.default_rng(7).integers(0, 101, size=250).tolist()
    try:
        prefill(model, heap, tokens, chunk=100)
        path = str(tmp_path / "heap.safetensors")
        save_prompt_cache(path, heap)
        copies = [clone_heap(heap), load_heap_cache(path, model=model)]
        for _ in range(3):  # a few decode steps: each copy follows the plan as the original does
            token = mx.array([[7]])
            want = np.array(model(token, cache=heap))
            for copy in copies:
                assert np.max(np.abs(np.array(model(token, cache=copy)) - want)) <= 1e-5
    finally:
        uninstall(model)
    for copy in copies:
        assert all(isinstance(layer, HeadwiseKVCache) and layer.plan == original.plan
                   for layer, original in zip(copy, heap))
        assert [[h.budget for h in layer.heads] for layer in copy] == [[h.budget for h in layer.heads] for layer in heap]


def test_setting_a_planned_layers_budget_splits_the_new_mean_by_the_plan(tmp_path):
    model = build_model("llama")
    heap = planned_heap(model, tmp_path, [[0.0, 1.0], [0.0, 0.0]], budget=301, window=8, policy="snapkv")
    tokens = np.random.default_rng(2).integers(0, 101, size=300).tolist()
    try:
        prefill(model, heap, tokens, chunk=300)  # everything kept: the budget is above what was seen
        assert all(head.live == 300 for head in heaps(heap))
        for layer in heap:
            layer.set_budget(60)  # the bench's compress step
    finally:
        uninstall(model)
    floor = 4 + 8 + 1
    assert heap[0].heads[1].live == 4 * 60 - 3 * floor  # all that the floors leave goes to the copying head
    assert [heap[0].heads[0].live, heap[1].heads[0].live, heap[1].heads[1].live] == [floor] * 3


def test_retrieval_allocation_without_scores_is_refused_in_one_line(tmp_path):
    model = build_model("llama")
    with pytest.raises(ValueError, match="needs a profile"):
        HeapConfig(policy="snapkv", allocation="retrieval")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 1, "layers": [{"entropy": 1.0}, {"entropy": 1.0}]}))
    with pytest.raises(ValueError, match="no retrieval scores"):
        make_heap_cache(model, HeapConfig(policy="snapkv", allocation="retrieval", profile=str(old)))
    wrong = write_profile(tmp_path / "wrong.json", [[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="describes 1 layers of 3"):
        make_heap_cache(model, HeapConfig(policy="snapkv", allocation="retrieval", profile=wrong))
    uninstall(model)


def test_a_replaying_policy_under_a_plan_collects_only_after_each_replay(tmp_path):
    from conftest import REPLAY

    model = build_model("llama")
    heap = planned_heap(model, tmp_path, budget=200, window=8, policy="kvzip")
    tokens = np.random.default_rng(4).integers(0, 101, size=300).tolist()
    try:
        prefill(model, heap, tokens, chunk=100, replay=REPLAY)
    finally:
        uninstall(model)
    units = heaps(heap)
    assert all(unit.tokens_seen == 300 and unit.live <= unit.budget for unit in units)  # the replays were trimmed
    assert heap[0].heads[1].budget == 300  # capped at the tokens seen, not counting the replay's scratch tokens
    assert sum(unit.budget for unit in units) == 4 * 200


def test_decode_steps_under_a_plan_grow_the_capped_heads_without_compacting_every_step(tmp_path):
    model = build_model("llama")
    heap = planned_heap(model, tmp_path, budget=200, window=8, policy="snapkv")
    tokens = np.random.default_rng(8).integers(0, 101, size=300).tolist()
    try:
        logits, _ = prefill(model, heap, tokens, chunk=100)
        copier = heap[0].heads[1]
        before = copier.compactions
        for token, _ in decode(model, heap, logits, max_tokens=20):
            assert all(unit.live <= unit.budget for unit in heaps(heap))
            assert sum(unit.budget for unit in heaps(heap)) == 4 * 200
    finally:
        uninstall(model)
    assert copier.live == copier.budget == 320 and copier.evictions == 0  # it kept every token it saw
    assert copier.compactions == before


def test_a_planned_head_that_grows_from_its_floor_collects_in_batches_again(tmp_path):
    model = build_model("llama")
    heap = planned_heap(model, tmp_path, budget=400, window=8, policy="snapkv")
    tokens = np.random.default_rng(9).integers(0, 101, size=1200).tolist()
    try:
        prefill(model, heap, tokens, chunk=300)
    finally:
        uninstall(model)
    copier = heap[0].heads[1]  # built at its floor (one slot of room), then given most of the total
    assert copier.budget > 1000
    assert copier.collect_batch == default_collect_batch(copier.budget) > 1
    assert copier.tenured_cap == (copier.budget - copier.sinks - copier.window) // 4


def test_every_head_of_a_planned_layer_records_where_mlx_lm_rotated_its_keys(tmp_path):
    # positions="cache": mlx-lm rotates at the layer's offset (its first head's count kept); a head that
    # keeps another count must stamp that rotation, not its own count, or its keys get the wrong shift
    model = build_model("llama")
    heap = planned_heap(model, tmp_path, budget=60, window=8, policy="keydiff", positions="cache")
    tokens = np.random.default_rng(10).integers(0, 101, size=400).tolist()
    try:
        logits, _ = prefill(model, heap, tokens, chunk=100)
        assert len({head.live for head in heap[0].heads}) > 1  # the heads keep different counts
        rotated = heap[0].offset
        mx.eval(model(mx.array([[5]]), cache=heap))
    finally:
        uninstall(model)
    for head in heap[0].heads:
        newest = np.argmax(head.slots.positions[0, : head.end])
        assert head.slots.rot[0, newest] == rotated


@pytest.mark.parametrize("positions", ["absolute", "cache"])
def test_a_planned_layer_is_one_heap_until_a_head_must_evict_then_continues_as_its_split_heads(tmp_path, positions):
    # While a layer has seen no more than its mean budget every head keeps all it saw, so one heap of all
    # the heads serves (one attention call, as a plain heap); it must then become exactly the heads an
    # eager split would have built.
    model = build_model("llama")
    lazy = planned_heap(model, tmp_path, budget=120, window=8, policy="snapkv", positions=positions)
    eager = planned_heap(model, tmp_path, budget=120, window=8, policy="snapkv", positions=positions)
    eager = [HeadwiseKVCache(layer.heads[0].split_heads(layer.kv_heads), layer.plan) for layer in eager]
    tokens = np.random.default_rng(11).integers(0, 101, size=320).tolist()
    try:
        first = [prefill(model, cache, tokens[:100], chunk=50)[0] for cache in (lazy, eager)]
        assert all(layer.joint and len(layer.heads) == 1 for layer in lazy) and not any(l.joint for l in eager)
        assert np.max(np.abs(np.array(first[0]) - np.array(first[1]))) <= 1e-5
        rows = [replayed_logits(model, cache, tokens[100:], None, chunk=50) for cache in (lazy, eager)]
    finally:
        uninstall(model)
    assert_continues_as_eager_split(lazy, eager, rows)
