#!/usr/bin/env python
"""KV memory of the heap with and without a cold tier, next to mlx-lm's KVCache.

Memory only (accuracy is `mlx-kv bench niah --policies h2o,h2o+q8,h2o+q4`): one
prompt of random tokens through each cache, then `nbytes` as the caches report
it (the heap's includes its bookkeeping). `random:llama-3.2-1b[:layers=N]`
gives a real model's head geometry (8 KV heads x 64 dims) with random weights.

    python scripts/cold_tier_memory.py --model random:llama-3.2-1b:layers=2 --dtype float16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder, or random:llama-3.2-1b[:layers=N]; default bundled")
    ap.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float16")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--keep", type=float, default=0.2, help="fraction of the prompt the heap keeps")
    args = ap.parse_args()

    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    from mlx_kv import HeapConfig, heap_hook, make_heap_cache
    from mlx_kv.bench.shapes import bench_model
    from mlx_kv.generate import prefill
    from mlx_kv.heap.prompt_cache import total_bytes

    model, name, _ = bench_model(args.model)
    model.set_dtype(getattr(mx, args.dtype))
    vocab = model.model.embed_tokens.weight.shape[0] if hasattr(model, "model") else 1000
    tokens = np.random.default_rng(0).integers(0, vocab, size=args.tokens).tolist()
    budget = int(args.tokens * args.keep)
    rows = []
    full = make_prompt_cache(model)
    prefill(model, full, tokens)
    base = total_bytes(full)
    rows.append({"cache": "KVCache", "kv_bytes": base})
    for bits in (None, 8, 4):
        with heap_hook(model):
            cache = make_heap_cache(model, HeapConfig(budget=budget, cold_bits=bits))
            prefill(model, cache, tokens)
        nbytes = total_bytes(cache)
        rows.append({"cache": f"heap {args.keep:.0%}" + (f" + {bits}-bit cold tier" if bits else ""),
                     "kv_bytes": nbytes, "cold_tokens_per_layer": cache[0].cold_tokens,
                     "vs_kvcache": round(1 - nbytes / base, 4)})
    print(f"{name} ({args.dtype}), {args.tokens} tokens, heap budget {budget} tokens/layer", file=sys.stderr)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
