"""`mlx-kv bench stream`: stream N tokens with needles through a fixed budget."""

from __future__ import annotations

import argparse
import json

from mlx_kv.commands.options import SubParsers, add_cold_bits_option, add_model_options, budget_arg
from mlx_kv.errors import UserError


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("stream", help="stream N tokens with needles through a fixed budget")
    add_model_options(p)
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--budget", type=budget_arg, default=1024)
    p.add_argument("--policy", default="h2o", help="a heap policy, with variants (kvzip+adaptive, h2o+q4, ...)")
    p.add_argument("--haystack", default="filler",
                   help="the streamed text: filler (generated), pydoc, or a .txt file / folder of them")
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--positions", choices=("absolute", "cache"), default="cache")
    p.add_argument("--recovery", default=None, help="disk allowance for the recovery tier, e.g. 1GB (off by default)")
    add_cold_bits_option(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlx_kv.bench.stream import stream
    from mlx_kv.bench.variants import policy_config
    from mlx_kv.commands.bench_policies import saved_profile
    from mlx_kv.haystack import load_haystack
    from mlx_kv.models import load_model

    if args.tokens < 1000:
        raise UserError("tokens: stream at least 1000 tokens")
    heap = {"cold_bits": args.cold_bits} if args.cold_bits else {}
    try:
        config = policy_config(args.policy, saved_profile(args.model), budget=args.budget, window=args.window, positions=args.positions,
                               recovery=args.recovery, **heap)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    haystack = load_haystack(args.haystack)
    model, tokenizer, name = load_model(args.model, weights=args.weights)
    if args.json:
        emit = lambda r: print(json.dumps(r), flush=True)  # noqa: E731
    else:
        emit = lambda r: print(f"{r['progress']:>5.0%} {r['tokens']:>9} tokens  {r['tokens_per_s']:>8.0f} tok/s  "  # noqa: E731
                               f"heap {r['heap_bytes'] / 2**20:7.2f} MiB  RSS {r['rss_mb']:8.1f} MB", flush=True)
    summary = stream(model, tokenizer, tokens=args.tokens, config=config, seed=args.seed, emit=emit, haystack=haystack)
    print(json.dumps(summary) if args.json else
          f"{name}: {summary['tokens']} tokens, budget {summary['budget_tokens']} tokens/layer, {summary['policy']}, "
          f"positions {summary['positions']}: RSS growth {summary['rss_growth_pct']}%, throughput "
          f"{summary['tps_first_decile']:.0f} -> {summary['tps_last_decile']:.0f} tok/s, needles "
          f"{summary['needles_found']}/{summary['needles_total']}")
    return 0
