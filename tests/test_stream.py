"""`bench stream`: a long stream under a fixed budget holds constant heap bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_kv.config import HeapConfig

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "mlx-kv-tiny"


@pytest.mark.skipif(not (MODEL_DIR / "model.safetensors").exists(), reason="bundled model not built")
def test_a_20k_token_stream_under_a_1k_budget_keeps_heap_bytes_constant_after_warm_up():
    import mlx_lm

    from mlx_kv.bench.stream import stream

    model, tokenizer = mlx_lm.load(str(MODEL_DIR))
    records = []
    summary = stream(model, tokenizer, tokens=20_000, config=HeapConfig(budget=1024, policy="h2o", positions="cache"),
                     emit=records.append)
    assert [r["progress"] for r in records] == pytest.approx([0.1 * i for i in range(1, 11)], abs=0.03)
    assert len({r["heap_bytes"] for r in records}) == 1  # from the first record (2,000 tokens) on
    assert summary["tokens"] == 20_000 and summary["budget_tokens"] == 1024
    assert summary["needles_total"] == 3 and 0 <= summary["needles_found"] <= 3
    for key in ("peak_rss_mb", "rss_growth_pct", "tps_first_decile", "tps_last_decile"):
        assert key in summary
