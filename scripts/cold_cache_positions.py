"""What attending the packed cold tier under positions="cache" costs in accuracy and buys in speed.

    python scripts/cold_cache_positions.py [--model M] [--context 2048] [--budget-ratio 0.25]
                                           [--decode 256] [--drifts 0,16,64] [--json]

A 4-bit cold tier stores keys packed, so under positions="cache" a decode
step rotates each KV head's query once instead of every cold key
(mlx_kv.positions): a cold key is then up to COLD_DRIFT positions off its
rank. This reads `--context` tokens of real prose (pydoc) under an h2o
heap with a `--budget-ratio` budget, then feeds the next `--decode` tokens
one at a time (the decode path) and compares, per configuration: the
heap without a cold tier, the cold tier attended dequantized with every
key at its exact shift (the path cache positions took before), and the
packed path at each allowed drift. Reported: the mean next-token loss,
the share of greedy tokens equal to the dequantized path's, the largest
logit difference from it, decode tokens/s and how often the tier was
re-stamped.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import mlx.core as mx
import numpy as np

from mlx_kv import HeapConfig, make_heap_cache, uninstall
from mlx_kv import positions as positions_module
from mlx_kv.attention import grouped_attention
from mlx_kv.bench.shapes import bench_model
from mlx_kv.haystack import load_haystack
from mlx_kv.heap import layer as layer_module


def _dequantizing(self, queries, scale, dead_bias, scored, sample, base):
    keys, values = self._full_kv()
    keys = self.shifts.keys(self.rope, self.slots, keys, self.end, base)
    return grouped_attention(queries, keys, values, scale, first_query_slot=None, dead_bias=dead_bias,
                             score_rows=(0, 1) if scored else (0, 0), keep_last_row=sample)


def _run(model, config: HeapConfig, tokens: np.ndarray, context: int, chunk: int = 512):
    cache = make_heap_cache(model, config)
    try:
        for start in range(0, context, chunk):
            mx.eval(model(mx.array(tokens[start:min(start + chunk, context)])[None], cache=cache))
        logits, started = [], time.perf_counter()
        for token in tokens[context - 1:-1]:
            out = model(mx.array([[int(token)]]), cache=cache)[0, -1].astype(mx.float32)
            mx.eval(out)
            logits.append(np.array(out))
        seconds = time.perf_counter() - started
    finally:
        uninstall(model)
    restamps = sum(getattr(layer.shifts, "restamps", 0) for layer in cache)
    return np.stack(logits), seconds, restamps, sum(layer.compactions for layer in cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--budget-ratio", type=float, default=0.25)
    parser.add_argument("--decode", type=int, default=256)
    parser.add_argument("--drifts", default="0,16,64")
    parser.add_argument("--bits", type=int, default=4, choices=(4, 8))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model, name, tokenizer = bench_model(args.model)
    prose, rng, text = load_haystack("pydoc"), random.Random(0), ""
    next_sentence = prose.filler(rng)
    while len(tokenizer.encode(text)) < args.context + args.decode + 1:
        text += next_sentence() + " "
    tokens = np.array(tokenizer.encode(text)[: args.context + args.decode + 1])
    settings = dict(budget=int(args.context * args.budget_ratio), policy="h2o", positions="cache")
    targets = tokens[args.context:]

    runs = [("no cold tier", HeapConfig(**settings), None, None),
            ("dequantized, exact shifts", HeapConfig(**settings, cold_bits=args.bits), positions_module.COLD_DRIFT, True)]
    runs += [(f"packed, drift {d}", HeapConfig(**settings, cold_bits=args.bits), int(d), False)
             for d in args.drifts.split(",")]
    packed_attend, default_drift = layer_module.HeapKVCache._attend_packed_cold, positions_module.COLD_DRIFT
    reference, rows = None, []
    for label, config, drift, dequantize in runs:
        positions_module.COLD_DRIFT = default_drift if drift is None else drift
        layer_module.HeapKVCache._attend_packed_cold = _dequantizing if dequantize else packed_attend
        logits, seconds, restamps, compactions = _run(model, config, tokens, args.context)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        nll = -(shifted[np.arange(len(targets)), targets] - np.log(np.exp(shifted).sum(axis=-1)))
        if dequantize:
            reference = logits
        row = {"config": label, "drift": drift, "mean_nll": float(nll.mean()),
               "decode_tok_s": len(targets) / seconds, "restamps": restamps, "compactions": compactions}
        if reference is not None:
            row["greedy_agreement"] = float((logits.argmax(-1) == reference.argmax(-1)).mean())
            row["max_logit_diff"] = float(np.abs(logits - reference).max())
        rows.append(row)
        print(json.dumps(row) if args.json else "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                           for k, v in row.items()), flush=True)
    layer_module.HeapKVCache._attend_packed_cold, positions_module.COLD_DRIFT = packed_attend, default_drift
    print(json.dumps({"model": name, "context": args.context, "budget": settings["budget"], "decode": args.decode,
                      "bits": args.bits, "policy": "h2o", "haystack": "pydoc"}))


if __name__ == "__main__":
    main()
