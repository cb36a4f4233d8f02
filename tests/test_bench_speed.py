"""`mlx-kv bench speed` rows: one per configuration, variants included, with true byte counts."""

from __future__ import annotations

import pytest

from conftest import build_model
from mlx_kv.bench.speed import bench_speed, heap_setups


def test_rows_cover_every_configuration_with_ratios_and_bytes():
    model = build_model("llama", hidden_size=128, intermediate_size=256)  # head_dim 32: quantizable
    rows = bench_speed(model, contexts=[300], ratios=[0.25, 1.0], policies=["h2o", "h2o+q4"],
                       baselines=["kvcache", "rotating", "quantized8"], decode_tokens=3, repeats=1,
                       window=16, emit=lambda row: None)
    by_name = {r["config"]: r for r in rows}
    assert set(by_name) == {"kvcache", "rotating@0.25", "rotating@1", "quantized8",
                            "heap:h2o@0.25", "heap:h2o@1", "heap:h2o+q4@0.25", "heap:h2o+q4@1"}
    for row in rows:
        assert row["decode_tps"] > 0 and row["prefill_tps"] > 0
        assert row["decode_ratio_vs_kvcache"] == pytest.approx(row["decode_tps"] / by_name["kvcache"]["decode_tps"], rel=0.01)
    assert by_name["kvcache"]["decode_ratio_vs_kvcache"] == 1.0
    # a quarter budget holds fewer bytes than a cache that keeps everything, and the 4-bit cold tier fewer still
    assert by_name["heap:h2o@0.25"]["kv_bytes"] < by_name["heap:h2o@1"]["kv_bytes"]
    assert by_name["heap:h2o+q4@0.25"]["kv_bytes"] < by_name["heap:h2o@0.25"]["kv_bytes"]


def test_a_reconstruction_policy_replays_inside_the_timed_prefill_once_its_budget_binds(monkeypatch):
    import mlx_kv.generate as generate

    replayed = []
    real = generate._replay_span
    monkeypatch.setattr(generate, "_replay_span", lambda *a, **k: (replayed.append((a[3], len(a[4]))), real(*a, **k))[1])
    model = build_model("llama", hidden_size=128, intermediate_size=256)
    rows = bench_speed(model, contexts=[700], ratios=[0.5, 1.0], policies=["kvzip"], baselines=["kvcache"],
                       decode_tokens=2, repeats=1, window=16, emit=lambda row: None)
    assert {r["config"] for r in rows} == {"kvcache", "heap:kvzip@0.5", "heap:kvzip@1"}
    # the half budget's two chunks (positions 0.., 512..), not KVCache's; a heap evicting nothing replays nothing
    assert replayed == [(0, 512), (512, 188)]


def test_heap_setups_read_variants_into_the_config():
    model = build_model("llama", hidden_size=128, intermediate_size=256)
    setups = heap_setups(model, 1000, ["tova+q8", "h2o+noise0.1"], [0.5], [0.0], decode_tokens=10, window=16)
    caches = {s.name: s.make() for s in setups}
    assert caches["heap:tova+q8@0.5"][0].cold_bits == 8
    assert caches["heap:tova+q8@0.5"][0].budget == 500
    assert caches["heap:h2o+noise0.1@0.5"][0].rank_noise == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown variant"):
        heap_setups(model, 1000, ["h2o+q3"], [0.5], [0.0], decode_tokens=10, window=16)


def test_configurations_decode_in_turns_so_a_slow_minute_falls_on_all_of_them(monkeypatch):
    import mlx_kv.bench.speed as speed

    turns = []
    real = speed.decode_turn
    monkeypatch.setattr(speed, "decode_turn", lambda model, run, tokens: (turns.append((id(run), tokens)), real(model, run, tokens))[1])
    model = build_model("llama", hidden_size=128, intermediate_size=256)
    rows = bench_speed(model, contexts=[200], ratios=[0.5], policies=["h2o"], baselines=["kvcache", "rotating"],
                       decode_tokens=20, repeats=1, window=16, emit=lambda row: None)
    assert len(rows) == 3
    turns = turns[1:]  # (the warm-up's)
    runs = [run for run, _ in turns[:3]]
    assert len(set(runs)) == 3
    assert [run for run, _ in turns] == runs * 3  # A B C A B C A B C
    assert [tokens for _, tokens in turns] == [8] * 6 + [4] * 3
