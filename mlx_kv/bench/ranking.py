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

from mlx_kv.hook import uninstall
from mlx_kv.config import HeapConfig
from mlx_kv.heap.factory import make_heap_cache
from mlx_kv.information import prefill


def bench_ranking(model: Any, *, tokens: int, budget: int, window: int, fractions: list[float],
                  decode: int = 256, policy: str = "h2o", emit: Callable[[dict], None] = print) -> list[dict]:
    vocab = model.args.vocab_size
    ids = np.random.default_rng(0).integers(0, vocab, size=tokens).tolist()
    room = budget - 4 - window
    rows = []
    for fraction in fractions:
        config = HeapConfig(budget=budget, window=window, policy=policy, tenured=int(room * fraction))
        cache = make_heap_cache(model, config)
        start = time.perf_counter()
        try:
            logits, _ = prefill(model, cache, ids)
            import mlx.core as mx

            token = int(mx.argmax(logits).item())
            for _ in range(decode):
                logits = model(mx.array([[token]]), cache=cache)[0, -1]
                token = int(mx.argmax(logits).item())
        finally:
            uninstall(model)
        elapsed = time.perf_counter() - start
        collections = sum(c.collections for c in cache)
        ranked = sum(c.ranked for c in cache)
        row = {"tenured_fraction": fraction, "tenured_tokens": int(room * fraction), "budget": budget,
               "tokens": tokens + decode, "collections": collections,
               "ranked_per_collection": round(ranked / max(collections, 1), 1),
               "rank_ms_per_collection": round(1000 * sum(c.rank_seconds for c in cache) / max(collections, 1), 3),
               "collect_ms_per_collection": round(1000 * sum(c.collect_seconds for c in cache) / max(collections, 1), 3),
               "wall_s": round(elapsed, 2)}
        rows.append(row)
        emit(row)
    flat = rows[0]["ranked_per_collection"] if rows and rows[0]["tenured_fraction"] == 0 else None
    if flat:
        for row in rows:
            row["ranking_work_vs_flat"] = round(row["ranked_per_collection"] / flat, 3)
    return rows
