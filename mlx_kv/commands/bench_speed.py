"""`mlx-kv bench speed`: decode/prefill speed and memory against mlx-lm's caches."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from mlx_kv.commands.bench_policies import check_policies
from mlx_kv.commands.options import SubParsers, add_model_options, csv_list


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("speed", help="decode/prefill speed and memory vs KVCache, RotatingKVCache, QuantizedKVCache")
    add_model_options(p, also=", random:llama-3.2-1b[:layers=N]")
    p.add_argument("--contexts", type=csv_list(int), default=[2048, 8192, 32768])
    p.add_argument("--budget-ratios", type=csv_list(float), default=[0.25, 1.0])
    p.add_argument("--policies", type=csv_list(str), default=["h2o", "tova", "streaming"])
    p.add_argument("--baselines", type=csv_list(str), default=["kvcache", "rotating", "quantized8", "quantized4"])
    p.add_argument("--compact-thresholds", type=csv_list(float), default=[0.0],
                   help="dead fractions that trigger a compaction (HeapConfig.compact_threshold; default 0)")
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlx_kv.bench.shapes import bench_model
    from mlx_kv.bench.speed import bench_speed, format_table

    profile = check_policies(args.policies, args.model,  # (a random: model has no profile)
                             settings=[{"compact_threshold": t} for t in args.compact_thresholds])
    model, description, tokenizer = bench_model(args.model, args.weights)
    header = {"machine": f"{platform.machine()} {platform.system()}, {os.cpu_count() or 0} cores",
              "model": description, "openblas": _openblas_state(), "command": "mlx-kv " + " ".join(sys.argv[1:])}
    rows: list[dict] = []
    emit = (lambda row: print(json.dumps(row), flush=True)) if args.json else rows.append
    if args.json:
        print(json.dumps(header), flush=True)
    else:
        print(" | ".join(f"{k}: {v}" for k, v in header.items()), file=sys.stderr)
    from mlx_kv.replay import Replay

    replay = Replay.for_tokenizer(tokenizer) if tokenizer is not None else None
    bench_speed(model, contexts=args.contexts, ratios=args.budget_ratios, policies=args.policies,
                baselines=args.baselines, decode_tokens=args.decode_tokens, repeats=args.repeats,
                thresholds=args.compact_thresholds, window=args.window, profile=profile, replay=replay, emit=emit)
    if not args.json:
        print(format_table(rows))
    return 0


def _openblas_state() -> str:
    from mlx_kv.blas import openblas_active

    return "preloaded" if openblas_active() else "not preloaded"
