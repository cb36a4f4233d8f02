"""`mlx-kv bench ranking`: how much ranking work the generations save.

Seed 001 claims three tiers cut sorting overhead by 80%: minor collections
rank only the intermediate tier, and the tenured tier is re-ranked only at
major collections. This streams the same tokens through the same model and
budget with the tenured tier sized at several fractions of the room (0 is a
flat H2O that ranks every evictable token at every collection) and reports
candidates ranked per collection and host time spent collecting.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from mlx_kv.config import HeapConfig
from mlx_kv.generate import decode as decode_steps
from mlx_kv.generate import prefill
from mlx_kv.heap.prompt_cache import counters, make_heap_cache
from mlx_kv.hook import heap_hook


def bench_ranking(model: Any, *, tokens: int, budget: int, window: int, fractions: list[float],
                  decode: int = 256, policy: str = "h2o", emit: Callable[[dict], None] = print) -> list[dict]:
    vocab = model.args.vocab_size
    ids = np.random.default_rng(0).integers(0, vocab, size=tokens).tolist()
    room = budget - 4 - window
    rows = []
    for fraction in fractions:
        config = HeapConfig(budget=budget, window=window, policy=policy, tenured=int(room * fraction))
        with heap_hook(model):
            cache = make_heap_cache(model, config)
            start = time.perf_counter()
            logits, _ = prefill(model, cache, ids)
            for _ in decode_steps(model, cache, logits, max_tokens=decode):
                pass
        elapsed = time.perf_counter() - start
        totals = counters(cache)
        per = max(totals["collections"], 1)
        row = {"tenured_fraction": fraction, "tenured_tokens": int(room * fraction), "budget": budget,
               "tokens": tokens + decode, "collections": totals["collections"],
               "ranked_per_collection": round(totals["ranked"] / per, 1),
               "rank_ms_per_collection": round(1000 * totals["rank_seconds"] / per, 3),
               "collect_ms_per_collection": round(1000 * totals["collect_seconds"] / per, 3),
               "wall_s": round(elapsed, 2)}
        rows.append(row)
        emit(row)
    flat = rows[0]["ranked_per_collection"] if rows and rows[0]["tenured_fraction"] == 0 else None
    if flat:
        for row in rows:
            row["ranking_work_vs_flat"] = round(row["ranked_per_collection"] / flat, 3)
    return rows
