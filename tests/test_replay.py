"""Replaying chunks for KVzip-style scores leaves the heap as it was, plus the scores."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache

from conftest import REPLAY, build_model, replayed_logits
from mlx_kv import HeapConfig, make_heap_cache, uninstall
from mlx_kv.generate import prefill
from mlx_kv.replay import Replay


@pytest.mark.parametrize("positions", ["absolute", "cache"])
def test_a_replayed_heap_that_evicts_nothing_gives_kvcache_logits(positions):
    model = build_model("llama")
    tokens = np.random.default_rng(1).integers(0, 101, size=300).tolist()
    reference = replayed_logits(model, [KVCache() for _ in model.layers], tokens, None)
    heap = make_heap_cache(model, HeapConfig(budget=512, policy="kvzip", positions=positions))
    try:
        got = replayed_logits(model, heap, tokens, REPLAY)
    finally:
        uninstall(model)
    assert np.max(np.abs(got - reference)) <= 1e-4
    assert all(layer.tokens_seen == 320 and layer.live == 320 and layer.evictions == 0 for layer in heap)
    recon = np.array(heap[0].slots.recon[:, :300])
    assert (recon[:, 4:] > 0).all()  # every replayed token got a score


def test_replay_ids_follow_kvzip_prompts():
    assert REPLAY.ids([20, 21, 22], None) == [5, 6, 7, 3, 20, 21, 22]
    previous = list(range(40, 52))
    assert REPLAY.ids([20, 21], previous) == [8, 9, *previous[-8:], 3, 20, 21]
    assert REPLAY.ids([1, 2, 3, 4, 5], None, fraction=0.5)[-3:] == [1, 3, 5]
    assert REPLAY.ids(list(range(8)), None, fraction=0.75)[-6:] == [0, 1, 2, 4, 5, 6]


def test_the_budget_holds_after_each_replayed_chunk_and_every_kept_token_was_scored():
    model = build_model("llama")
    tokens = np.random.default_rng(2).integers(0, 101, size=400).tolist()
    heap = make_heap_cache(model, HeapConfig(budget=150, window=16, policy="kvzip"))
    kept = []
    try:
        prefill(model, heap, tokens, chunk=100, replay=REPLAY, on_chunk=lambda done: kept.append(heap[0].live))
        layer = heap[0]
        scores = np.array(layer.slots.recon[:, : layer.end])
        alive = layer.slots.positions[:, : layer.end] >= 0
        # collections waited for the replays: no kept token beyond the sinks is unscored
        assert (scores[alive & (layer.slots.positions[:, : layer.end] >= 4)] > 0).all()
    finally:
        uninstall(model)
    assert kept[0] == 100 and all(k <= 150 for k in kept)
    assert heap[0].collections >= 3 and heap[0].tokens_seen == 400


@pytest.mark.parametrize("policy", ["kvzip", "kvzip+scope=chunk"])
def test_a_put_off_replay_waits_until_the_budget_binds_then_scores_every_kept_token(policy):
    from mlx_kv.bench.variants import policy_config
    from mlx_kv.generate import unreplayed_from

    model = build_model("llama")
    tokens = np.random.default_rng(2).integers(0, 101, size=400).tolist()
    config = policy_config(policy, None, budget=150, window=16)
    heap, told = make_heap_cache(model, config), make_heap_cache(model, config)
    try:
        first, _ = prefill(model, heap, tokens[:120], chunk=100, replay=REPLAY, history=[])
        assert unreplayed_from(heap) == 0 and float(mx.max(heap[0].slots.recon)) == 0.0  # within budget: no replay
        reference, _ = prefill(model, told, tokens[:120], chunk=100, replay=REPLAY)
        assert float(mx.max(mx.abs(first - reference))) <= 1e-5  # (a replay leaves no trace either way)
        prefill(model, heap, tokens[120:], chunk=100, replay=REPLAY, history=tokens[:120])
        prefill(model, told, tokens[120:], chunk=100, replay=REPLAY)
        assert unreplayed_from(heap) is None
        for layer in heap:
            pos = layer.slots.positions[:, : layer.end]
            assert layer.live <= 150 and layer.evictions > 0
            assert (np.array(layer.slots.recon[:, : layer.end])[(pos >= 4)] > 0).all()  # every kept token was scored
        assert [layer.live for layer in heap] == [layer.live for layer in told]
    finally:
        uninstall(model)


def test_decoding_pays_a_put_off_replay_before_its_first_eviction(monkeypatch):
    import mlx_kv.generate as generate

    model = build_model("llama")
    tokens = np.random.default_rng(3).integers(0, 101, size=140).tolist()
    heap = make_heap_cache(model, HeapConfig(budget=150, window=16, policy="kvzip"))
    paid = []
    real = generate.pay_replays
    monkeypatch.setattr(generate, "pay_replays", lambda *a: (paid.append((heap[0].evictions, heap[0].tokens_seen)), real(*a))[1])
    try:
        logits, _ = prefill(model, heap, tokens, chunk=100, replay=REPLAY, history=[])
        assert generate.unreplayed_from(heap) == 0 and not paid
        for _ in generate.decode(model, heap, logits, max_tokens=20, replay=REPLAY, history=tokens):
            pass
        assert paid == [(0, 150)] and heap[0].evictions > 0  # paid once, as the 151st token was about to land
        pos = heap[0].slots.positions[:, : heap[0].end]
        scored = np.array(heap[0].slots.recon[:, : heap[0].end]) > 0
        assert scored[(pos >= 4) & (pos < 140)].all()  # every prompt token still held was scored
    finally:
        uninstall(model)


def test_an_owed_replay_survives_a_save_and_a_trim_forgets_what_it_owed(tmp_path):
    from mlx_lm.models.cache import save_prompt_cache

    from mlx_kv.generate import unreplayed_from
    from mlx_kv.heap.prompt_cache import load_heap_cache

    model = build_model("llama")
    heap = make_heap_cache(model, HeapConfig(budget=150, window=16, policy="kvzip", allocation="headwise"))
    try:
        prefill(model, heap, list(range(1, 61)), chunk=100, replay=REPLAY, history=[])
        prefill(model, heap, list(range(1, 41)), chunk=100, replay=REPLAY, history=list(range(1, 61)))
        assert unreplayed_from(heap) == 0
        save_prompt_cache(str(tmp_path / "owed.safetensors"), heap)
        loaded = load_heap_cache(str(tmp_path / "owed.safetensors"))
        assert unreplayed_from(loaded) == 0
        assert all(layer.joint and layer.kv_heads == 2 for layer in loaded)  # (one heap of both heads until it evicts)
        with pytest.raises(ValueError, match="owes replays"):  # a driver that cannot pay must not feed more
            prefill(model, heap, [1, 2, 3], replay=REPLAY)
        for layer in heap:
            layer.trim(100)
        assert unreplayed_from(heap) is None and heap[0].tokens_seen == 0
    finally:
        uninstall(model)


def test_without_a_replay_the_policy_still_collects():
    """A driver that never replays gets collections on what there is (zeros: the oldest go)."""
    model = build_model("llama")
    heap = make_heap_cache(model, HeapConfig(budget=100, window=16, policy="kvzip"))
    try:
        prefill(model, heap, list(range(1, 101)) * 2, chunk=50)
    finally:
        uninstall(model)
    assert heap[0].live <= 100 and heap[0].evictions > 0


def test_a_long_chunk_is_replayed_in_spans_and_collected_once_all_are_scored():
    model = build_model("llama")
    tokens = np.random.default_rng(3).integers(0, 101, size=300).tolist()
    spans = Replay(REPLAY.first, REPLAY.later, REPLAY.suffix, span=64)
    heap = make_heap_cache(model, HeapConfig(budget=150, window=16, policy="kvzip"))
    try:
        prefill(model, heap, tokens, chunk=300, replay=spans)  # one chunk: the first collection waits too
    finally:
        uninstall(model)
    layer = heap[0]
    assert layer.collections == 1 and layer.live <= 150
    kept = layer.slots.positions[:, : layer.end]
    # every span was scored before the one collection, so each keeps some of its tokens beyond the young window
    assert all(((kept >= lo) & (kept < lo + 64)).any() for lo in (0, 64, 128, 192, 256 - 32))


def test_replaying_lower_layers_only_gives_the_higher_ones_token_scores():
    model = build_model("llama", num_hidden_layers=4)
    tokens = np.random.default_rng(4).integers(0, 101, size=300).tolist()
    reference = replayed_logits(model, [KVCache() for _ in model.layers], tokens, None)
    heap = make_heap_cache(model, HeapConfig(budget=512, policy="kvzip", policy_args={"layers": 2}))
    try:
        got = replayed_logits(model, heap, tokens, REPLAY)
    finally:
        uninstall(model)
    assert np.max(np.abs(got - reference)) <= 1e-4  # still no trace of the replay
    lower = np.stack([np.array(layer.slots.recon[:, 4:300]) for layer in heap[:2]])  # (sinks: every replay's)
    for layer in heap[2:]:
        recon = np.array(layer.slots.recon[:, 4:300])
        assert (recon == lower.max(axis=(0, 1))).all()  # the same token score in every head


def test_a_half_replay_feeds_every_other_token_and_leaves_no_trace(monkeypatch):
    import mlx_kv.generate as generate

    model = build_model("llama")
    tokens = np.random.default_rng(5).integers(0, 101, size=300).tolist()
    reference = replayed_logits(model, [KVCache() for _ in model.layers], tokens, None)
    fed, body = [], generate.body
    monkeypatch.setattr(generate, "body", lambda m, ids, cache: fed.append(list(ids)) or body(m, ids, cache))
    heap = make_heap_cache(model, HeapConfig(budget=512, policy="kvzip", policy_args={"fraction": 0.5}))
    try:
        got = replayed_logits(model, heap, tokens, REPLAY)
    finally:
        uninstall(model)
    assert np.max(np.abs(got - reference)) <= 1e-4
    suffix = list(REPLAY.suffix)
    expected = [list(REPLAY.first) + suffix + tokens[0:64:2]] + [
        list(REPLAY.later) + tokens[start - 8:start] + suffix + tokens[start:start + 64:2] for start in range(64, 300, 64)]
    assert [ids for ids in fed if ids in expected] == expected


def test_a_session_with_kvzip_keeps_its_budget_and_scores_its_replies_once_the_budget_needs_them(tiny_model_dir):
    from mlx_kv.engine import Session

    session = Session.load(str(tiny_model_dir), budget=96, policy="kvzip", window=16)
    assert session.config.allocation == "headwise"  # a session's default split for a replaying policy
    session.ingest(" ".join(f"w{i % 90}" for i in range(400)))
    reply = "".join(session.chat("w1 w2 w3", max_tokens=12))
    assert sum(layer.live for layer in session.cache) <= 96 * len(session.cache)
    assert session.cache[0].tokens_seen > 400
    assert reply.strip(), "the test model gave an empty reply; nothing was replayed"
    first, last = session.spans[-1]["start"], session.spans[-1]["stop"]
    # the heap is within its budget after the reply: its replay is owed, not paid
    assert session.cache[0].unreplayed_from == first
    "".join(session.chat("w4 w5", max_tokens=2))  # the next message makes the heap evict: the reply is replayed first
    held = 0
    for head in session.cache[0].heads:
        pos = head.slots.positions[:, : head.end]
        replied = (pos >= first) & (pos < last)
        held += int(replied.sum())
        assert (np.array(head.slots.recon[:, : head.end])[replied] > 0).all()
    assert held, "none of the reply's tokens is still held: the test checks nothing"


def test_a_session_pays_its_owed_replays_before_a_smaller_budget_evicts(tiny_model_dir):
    from mlx_kv.engine import Session

    session = Session.load(str(tiny_model_dir), budget=200, policy="kvzip", window=16)
    session.ingest(" ".join(f"w{i % 90}" for i in range(120)))
    assert session.cache[0].unreplayed_from == 0  # a document within the budget: no replay yet
    session.set_budget(60)
    assert session.cache[0].unreplayed_from is None
    assert sum(head.live for head in session.cache[0].heads) <= 60 * len(session.cache[0].heads)
    for head in session.cache[0].heads:
        pos = head.slots.positions[:, : head.end]
        assert head.evictions > 0
        assert (np.array(head.slots.recon[:, : head.end])[pos >= 4] > 0).all()


@pytest.mark.parametrize("settings", [
    {"cold_bits": 4},
    {"recovery": "4MB", "positions": "cache"},
    {"cold_bits": 8, "positions": "cache", "allocation": "adaptive"},
], ids=["cold4", "recovery-cache", "cold8-cache-adaptive"])
def test_replay_composes_with_the_cold_tier_recovery_and_cache_positions(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_KV_CACHE_DIR", str(tmp_path))  # the recovery tier's pages land here
    model = build_model("llama", hidden_size=128, intermediate_size=256)  # head_dim 32: quantizable
    tokens = np.random.default_rng(4).integers(0, 101, size=360).tolist()
    heap = make_heap_cache(model, HeapConfig(budget=120, window=16, policy="kvzip", **settings))
    total = sum(layer.budget for layer in heap)
    try:
        out = replayed_logits(model, heap, tokens, REPLAY, chunk=90)
    finally:
        uninstall(model)
    assert np.isfinite(out).all()
    assert all(layer.tokens_seen == 380 for layer in heap)  # 360 read + 20 decoded; no replay token stayed
    assert sum(layer.live for layer in heap) <= total + sum(layer.collect_batch for layer in heap)
    if settings.get("cold_bits"):
        assert all(layer.cold_tokens > 0 for layer in heap)
    if settings.get("recovery"):
        assert all(layer.store.page_count > 0 for layer in heap)


def test_one_softmax_gives_a_replays_output_and_its_score_over_the_domain():
    """The replay's score is, per key, the most weight a query of its GQA group
    pays it with the softmax over the domain only (KVzip); its output attends
    every live key. Both come from one set of exponentials (replay_attention)."""
    from mlx_kv.attention import masked_attention, replay_attention

    rng = np.random.default_rng(5)
    H, G, S, L, D = 2, 3, 40, 100, 8
    q, k, v = (rng.normal(size=shape).astype(np.float32) for shape in ((1, H * G, S, D), (1, H, L, D), (1, H, L, D)))
    dead = np.zeros((H, L), np.float32)
    dead[:, 20:30] = -np.inf
    domain = np.full((H, L), -np.inf, np.float32)
    domain[:, :4] = 0.0
    domain[:, 40:] = 0.0
    first = L - S
    out, score = replay_attention(mx.array(q), mx.array(k), mx.array(v), 0.3, mx.array(dead), mx.array(domain),
                                  first_query_slot=first, block=16)
    logits = np.einsum("hgsd,hld->hgsl", 0.3 * q[0].reshape(H, G, S, D), k[0])
    causal = np.arange(L)[None, :] <= first + np.arange(S)[:, None]
    want = np.zeros((H, L))
    for h in range(H):
        x = np.where(causal & (domain[h] == 0), logits[h], -np.inf)
        w = np.exp(x - x.max(-1, keepdims=True))
        want[h] = (w / w.sum(-1, keepdims=True)).max(axis=(0, 1))
    assert np.max(np.abs(np.array(score) - want)) <= 1e-6
    fused = masked_attention(mx.array(q), mx.array(k), mx.array(v), 0.3, mx.array(dead))
    assert np.max(np.abs(np.array(out) - np.array(fused))) <= 1e-5


def test_a_collection_left_pending_keeps_where_mlx_lm_rotated_the_next_tokens():
    # positions="cache": mlx-lm rotated the next token at the offset it read; a chunk's collection that
    # waited for a replay (which never came) runs first and shrinks the offset, not that rotation
    import mlx.core as mx

    model = build_model("llama")
    heap = make_heap_cache(model, HeapConfig(budget=60, window=8, policy="kvzip", positions="cache"))
    for layer in heap:
        layer.expect_replay()
    try:
        mx.eval(model(mx.array(np.arange(100)[None] % 101), cache=heap))
        rotated = heap[0].offset
        assert heap[0].live > heap[0].budget  # the collection waits
        mx.eval(model(mx.array([[5]]), cache=heap))
    finally:
        uninstall(model)
    layer = heap[0]
    newest = np.argmax(layer.slots.positions[0, : layer.end])
    assert layer.live <= layer.budget and layer.slots.rot[0, newest] == rotated


def test_a_replay_scoped_to_its_chunk_reads_only_the_sinks_the_chunk_and_itself():
    model = build_model("llama")
    tokens = np.random.default_rng(12).integers(0, 101, size=200).tolist()
    recon = {}
    try:
        for scope in ("heap", "chunk"):
            heap = make_heap_cache(model, HeapConfig(budget=400, window=8, policy="kvzip", policy_args={"scope": scope}))
            prefill(model, heap, tokens, chunk=100, replay=REPLAY)
            recon[scope] = np.stack([np.array(layer.slots.recon[:, :200]) for layer in heap])
    finally:
        uninstall(model)
    heap_scope, chunk_scope = recon["heap"], recon["chunk"]
    # the first chunk's replay: the heap held only its domain, so both read the same keys in every layer
    assert np.max(np.abs(heap_scope[:, :, 4:100] - chunk_scope[:, :, 4:100])) <= 1e-5
    # the second's: the lowest layer scores the same (its softmax is over the domain either way), the
    # layers above differ, because their inputs attended the first chunk too, or not
    assert np.max(np.abs(heap_scope[0, :, 100:] - chunk_scope[0, :, 100:])) <= 1e-5
    assert np.max(np.abs(heap_scope[1:, :, 100:] - chunk_scope[1:, :, 100:])) > 1e-3
