"""`mlx-kv bench niah`: retrieval accuracy per task, policy, pruning ratio and setting."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from mlx_kv.commands.bench_policies import check_policies
from mlx_kv.commands.options import SubParsers, add_model_options, csv_list
from mlx_kv.errors import UserError


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("niah", help="retrieval accuracy per task, policy, pruning ratio and setting")
    add_model_options(p)
    p.add_argument("--tasks", type=csv_list(str), default=["single_needle", "multi_key", "variable_tracking"])
    p.add_argument("--policies", type=csv_list(str), default=["full", "h2o", "tova", "snapkv", "streaming", "random"])
    p.add_argument("--ratios", type=csv_list(float), default=[0.1, 0.25, 0.3, 0.5, 0.7, 0.75, 0.875, 0.9],
                   help="fraction of the document evicted (seed 001's and kvpress's ratios)")
    p.add_argument("--context", type=int, default=2048, help="document tokens")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--setting", type=csv_list(str), default=["stream", "compress", "aware"],
                   help="stream (budget held after every chunk), compress (one compression after an exact "
                        "prefill, kvpress's protocol), aware (question in the prefill); agnostic = stream, "
                        "both = aware,stream, all")
    p.add_argument("--haystack", default="filler",
                   help="the document's text: filler (generated), pydoc (Python's language reference), "
                        "or a .txt file / folder of them")
    p.add_argument("--details", default=None, help="write every trial's prediction to this JSONL file")
    p.add_argument("--export", default=None,
                   help="write the agnostic prompts as token ids (JSONL) for scripts/kvpress_referee.py and exit")
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="cast the model (and so its KV) to this dtype; default: as stored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--grid", action="store_true", help="add a length x depth grid for single needle")
    p.add_argument("--grid-lengths", type=csv_list(int), default=[1024, 2048, 4096])
    p.add_argument("--grid-depths", type=csv_list(float), default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--plot", default=None, help="write the grid as a heatmap PNG (needs matplotlib)")
    p.set_defaults(run=run)


def settings_from(names: list[str]) -> list[str]:
    from mlx_kv.bench.niah import ALIASES, SETTINGS

    settings: list[str] = []
    for name in names:
        if name not in SETTINGS and name not in ALIASES:
            raise UserError(f"setting: unknown setting {name!r}; choose from {', '.join((*SETTINGS, *ALIASES))}")
        settings.extend(s for s in ALIASES.get(name, (name,)) if s not in settings)
    return settings


def run(args: argparse.Namespace) -> int:
    from mlx_kv.bench import niah
    from mlx_kv.haystack import load_haystack
    from mlx_kv.models import load_model
    from mlx_kv.tasks import TASKS

    for task in args.tasks:
        if task not in TASKS:
            raise UserError(f"tasks: unknown task {task!r}; choose from {', '.join(TASKS)}")
    settings = settings_from(args.setting)
    try:
        niah.refuse_headmask(args.policies, settings)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    profile = check_policies([niah.split_headmask(p)[0] for p in args.policies], args.model, also=("full",))
    for r in args.ratios:
        if not 0.0 <= r < 1.0:
            raise UserError(f"ratios: {r} is not a fraction in [0, 1)")
    if args.trials < 1 or args.context < 16:
        raise UserError("trials must be >= 1 and context >= 16 tokens")
    haystack = load_haystack(args.haystack)
    model, tokenizer, name = load_model(args.model, weights=args.weights)
    if args.dtype:
        import mlx.core as mx

        model.set_dtype(getattr(mx, args.dtype))
        name += f" ({args.dtype})"
    if args.export:
        count = niah.export_samples(tokenizer, args.export, tasks=args.tasks, context=args.context,
                                    trials=args.trials, seed=args.seed, haystack=haystack)
        print(f"wrote {count} samples to {args.export}", file=sys.stderr)
        return 0
    emit = (lambda c: print(json.dumps(c.as_dict()), flush=True)) if args.json else (lambda c: None)
    print(f"model {name}, context {args.context} tokens of {args.haystack}, {args.trials} trials per cell, "
          f"seed {args.seed}", file=sys.stderr)
    with open(args.details, "w") if args.details else contextlib.nullcontext() as details_file:
        details = (lambda row: print(json.dumps(row), file=details_file, flush=True)) if details_file else None
        cells = niah.bench_niah(model, tokenizer, tasks=args.tasks, policies=args.policies, ratios=args.ratios,
                                settings=settings, context=args.context, trials=args.trials, seed=args.seed,
                                window=args.window, emit=emit, profile=profile, haystack=haystack, details=details)
    if not args.json:
        print(niah.format_table(cells))
    if args.grid or args.plot:
        policy = next((p for p in args.policies if p != "full"), "full")
        rows = niah.grid(model, tokenizer, policy=policy, ratio=args.ratios[0] if policy != "full" else 0.0,
                         setting=settings[-1], lengths=args.grid_lengths, depths=args.grid_depths,
                         trials=args.trials, seed=args.seed, window=args.window, haystack=haystack)
        for row in rows:
            print(json.dumps(row) if args.json else
                  f"grid {row['policy']} {row['context_tokens']:>6} tokens depth {row['depth']:.0%}: {row['accuracy']:.0%}")
        if args.plot:
            niah.plot_grid(rows, args.plot)
    return 0
