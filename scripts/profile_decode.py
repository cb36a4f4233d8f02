"""Profile heap decoding with cProfile next to a KVCache baseline.

    python scripts/profile_decode.py [--model M] [--context 4096] [--budget 1024] [--steps 200]

Prints decode tokens/s for KVCache and the heap, then the heap run's top
functions by own time (host-side Python, and the waits inside numpy.array
where a collection reads the scores).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache

from mlx_kv import HeapConfig, make_heap_cache
from mlx_kv.generate import prefill
from mlx_kv.heap.prompt_cache import counters
from mlx_kv.models import load_model


def decode_tps(model, cache, ids: list[int], steps: int) -> float:
    logits, _ = prefill(model, cache, ids)
    y = mx.argmax(logits)
    start = time.perf_counter()
    for _ in range(steps):
        y = mx.argmax(model(y.reshape(1, 1), cache=cache)[0, -1])
        mx.async_eval(y)
    mx.eval(y)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--policy", default="h2o")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    model, _, name = load_model(args.model)
    ids = np.random.default_rng(0).integers(0, model.args.vocab_size, size=args.context).tolist()
    print(f"{name}: KVCache {decode_tps(model, [KVCache() for _ in model.layers], ids, args.steps):.1f} tok/s")
    cache = make_heap_cache(model, HeapConfig(budget=args.budget, policy=args.policy))
    profiler = cProfile.Profile()
    profiler.enable()
    tps = decode_tps(model, cache, ids, args.steps)
    profiler.disable()
    totals = counters(cache)
    print(f"{name}: heap {args.policy} budget {args.budget}: {tps:.1f} tok/s ({totals['collections']} collections, "
          f"{1000 * totals['rank_seconds'] / max(1, totals['collections']):.3f} ms ranking each)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
