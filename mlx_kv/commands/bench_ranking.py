"""`mlx-kv bench ranking`: ranking work per collection, generational tiers against a flat H2O."""

from __future__ import annotations

import argparse
import json
import sys

from mlx_kv.commands.options import SubParsers, add_model_options, csv_list


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("ranking", help="ranking work per collection: generational tiers vs a flat H2O")
    add_model_options(p, also=", random:llama-3.2-1b[:layers=N]")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--decode-tokens", type=int, default=256)
    p.add_argument("--tenured-fractions", type=csv_list(float), default=[0.0, 0.25, 0.5, 0.75, 0.9])
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlx_kv.bench.ranking import bench_ranking
    from mlx_kv.bench.shapes import bench_model

    model, description, _ = bench_model(args.model, args.weights)
    print(f"model: {description}", file=sys.stderr)
    rows = bench_ranking(model, tokens=args.tokens, budget=args.budget, window=args.window,
                         fractions=args.tenured_fractions, decode=args.decode_tokens,
                         emit=(lambda r: print(json.dumps(r), flush=True)) if args.json else (lambda r: None))
    if not args.json:
        print(f"{'tenured':>8} {'collections':>11} {'ranked/coll':>11} {'vs flat':>8} {'rank ms/coll':>12} "
              f"{'collect ms/coll':>15} {'wall s':>7}")
        for r in rows:
            print(f"{r['tenured_fraction']:>8.0%} {r['collections']:>11} {r['ranked_per_collection']:>11.1f} "
                  f"{r.get('ranking_work_vs_flat', float('nan')):>8.2f} {r['rank_ms_per_collection']:>12.3f} "
                  f"{r['collect_ms_per_collection']:>15.3f} {r['wall_s']:>7.2f}")
    return 0
