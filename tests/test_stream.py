"""`mlx-kv bench stream`: a long stream under a fixed budget holds constant heap bytes.

Run through the CLI (as a user would, and with the OpenBLAS preload the CLI
arranges, which makes it ~3x faster than in-process here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "mlx-kv-tiny"
SUMMARY_KEYS = {"tokens", "budget_tokens", "policy", "peak_rss_mb", "rss_growth_pct", "tps_first_decile",
                "tps_last_decile", "needles_found", "needles_total"}


@pytest.mark.skipif(not (MODEL_DIR / "model.safetensors").exists(), reason="bundled model not built")
def test_a_20k_token_stream_under_a_1k_budget_keeps_heap_bytes_constant_after_warm_up():
    done = subprocess.run([sys.executable, "-m", "mlx_kv.cli", "bench", "stream", "--model", "mlx-kv-tiny",
                           "--tokens", "20000", "--budget", "1024", "--policy", "h2o", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    records, summary = lines[:-1], lines[-1]
    assert [r["progress"] for r in records] == pytest.approx([0.1 * i for i in range(1, 11)], abs=0.03)
    assert len({r["heap_bytes"] for r in records}) == 1  # from the first record (2,000 tokens) on
    assert SUMMARY_KEYS <= set(summary)
    assert summary["tokens"] == 20_000 and summary["budget_tokens"] == 1024
    assert summary["needles_total"] == 3 and 0 <= summary["needles_found"] <= 3
    assert summary["layer_budgets"] == [1024, 1024]  # one budget per layer without +adaptive
    for needle in summary["needles"]:  # whether each needle was evicted, or kept and not read
        assert 0 <= needle["value_kept_share"] <= 1 and 0 <= needle["kept_share"] <= 1


def test_kept_share_is_the_share_of_layer_heads_holding_each_needle_token():
    import numpy as np

    from mlx_kv.bench.stream import kept_share

    class Layer:
        def __init__(self, *heads):
            self.heads = [np.array(h) for h in heads]

        def kept_positions(self):
            return self.heads

    cache = [Layer([10, 11, 12], [10]), Layer([], [11, 12])]
    assert kept_share(cache, 10, range(3)) == round((1 + 1 / 3 + 0 + 2 / 3) / 4, 4)
    assert kept_share(cache, 10, [0]) == 0.5
    assert np.isnan(kept_share(cache, 10, []))


@pytest.mark.skipif(not (MODEL_DIR / "model.safetensors").exists(), reason="bundled model not built")
def test_a_short_stream_places_all_three_needles_and_headwise_reports_each_heads_budget():
    done = subprocess.run([sys.executable, "-m", "mlx_kv.cli", "bench", "stream", "--model", "mlx-kv-tiny",
                           "--tokens", "1000", "--budget", "128", "--window", "16", "--policy", "kvzip+headwise",
                           "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    positions = [needle["position"] for needle in summary["needles"]]
    assert summary["needles_total"] == 3 and positions == sorted(positions) and positions[-1] < 1000
    low, high = summary["layer_budgets"]
    assert low < 128 < high  # the (layer, head) heaps' budgets, moved apart by their replay scores
