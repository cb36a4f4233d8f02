"""`mlx-kv profile`: measure per-layer attention entropy and per-head retrieval scores, saved for
allocation="entropy" and allocation="retrieval"."""

from __future__ import annotations

import argparse
import json
import sys

from mlx_kv.commands.options import SubParsers, add_model_options
from mlx_kv.errors import UserError


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("profile", help="measure per-layer attention entropy and per-KV-head retrieval scores; saved beside the model, or in the user "
                       "cache for hub models and the bundled one")
    add_model_options(p)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlx_kv.models import resolve_model_path
    from mlx_kv.profile import profile_and_save

    if args.prompts < 1 or args.tokens < 64:
        raise UserError("profile: --prompts must be >= 1 and --tokens >= 64")
    profile, target, name = profile_and_save(resolve_model_path(args.model), args.weights,
                                             prompts=args.prompts, tokens=args.tokens)
    if args.json:
        print(json.dumps(profile))
    else:
        print(f"{'layer':>5} {'entropy':>8} {'top1%':>7} {'top5%':>7}  retrieval per KV head")
        for i, layer in enumerate(profile["layers"]):
            copying = " ".join(f"{v:.2f}" for v in layer["retrieval"])
            print(f"{i:>5} {layer['entropy']:>8.3f} {layer['top1']:>7.1%} {layer['top5']:>7.1%}  {copying}")
    print(f"profile of {name} saved to {target}", file=sys.stderr)
    return 0
