"""`mlx-kv`: chat, generate, ingest, budget, bench.

Every failure a user can cause ends in one line on stderr and a non-zero
exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

from mlx_kv.errors import UserError


def budget_arg(text: str) -> int | str:
    """--budget through the one budget reader (mlx_kv.sizes), as an argparse type."""
    from mlx_kv.sizes import parse_budget

    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("budget: ")) from None


def csv_list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")
    return parse


def _heap_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="hub id, local folder, or omit for the bundled model")
    p.add_argument("--budget", type=budget_arg, default=None,
                   help="tokens per layer (1024), a size for the whole heap (2GB, 512MiB, 2G = 2GB), or auto")
    p.add_argument("--policy", default=None, help="h2o, tova, snapkv, streaming, random")
    p.add_argument("--window", type=int, default=None, help="young generation size (tokens)")
    p.add_argument("--sinks", type=int, default=None, help="attention sinks kept forever")
    p.add_argument("--positions", choices=("absolute", "cache"), default=None,
                   help="RoPE positions: absolute, or re-indexed within the cache (default for sessions)")
    p.add_argument("--allocation", choices=("uniform", "pyramid", "entropy"), default=None,
                   help="split of the budget across layers (entropy needs `mlx-kv profile` first)")
    _cold_bits_option(p)


def _cold_bits_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cold-bits", type=int, choices=(4, 8), default=None,
                   help="store the intermediate tier at 4 or 8 bits (off by default)")


def _heap_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("window", "sinks", "positions", "allocation", "cold_bits") if getattr(args, k, None) is not None}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other error."""

    def error(self, message: str):
        self.exit(2, f"mlx-kv: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mlx-kv", description="Long-context chat on MLX inside a fixed KV memory budget.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("chat", help="the terminal app")
    _heap_options(p)

    p = sub.add_parser("generate", help="answer one prompt, optionally about a document")
    _heap_options(p)
    p.add_argument("prompt")
    p.add_argument("--doc", default=None, help="a text or Markdown file to load first")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--errors", choices=("strict", "replace"), default="strict")

    p = sub.add_parser("ingest", help="load a document with a progress bar, then optionally ask about it")
    _heap_options(p)
    p.add_argument("file")
    p.add_argument("--errors", choices=("strict", "replace"), default="strict")
    p.add_argument("--ask", default=None, help="a question to ask once the document is loaded")
    p.add_argument("--max-tokens", type=int, default=128)

    p = sub.add_parser("budget", help="show how a budget turns into tokens per layer")
    _heap_options(p)

    p = sub.add_parser("profile", help="measure per-layer attention entropy and save it beside the model")
    p.add_argument("--model", default=None)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="benchmarks against mlx-lm's own caches").add_subparsers(
        dest="bench", required=True, parser_class=OneLineParser)
    p = bench.add_parser("speed", help="decode/prefill speed and memory vs KVCache, RotatingKVCache, QuantizedKVCache")
    p.add_argument("--model", default=None, help="model folder/hub id, or random:llama-3.2-1b[:layers=N]")
    p.add_argument("--contexts", type=csv_list(int), default=[2048, 8192, 32768])
    p.add_argument("--budget-ratios", type=csv_list(float), default=[0.25, 1.0])
    p.add_argument("--policies", type=csv_list(str), default=["h2o", "tova", "streaming"])
    p.add_argument("--baselines", type=csv_list(str), default=["kvcache", "rotating", "quantized8", "quantized4"])
    p.add_argument("--compact-thresholds", type=csv_list(float), default=[0.5])
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--json", action="store_true")

    p = bench.add_parser("niah", help="retrieval accuracy per task, policy, pruning ratio and setting")
    p.add_argument("--model", default=None, help="defaults to the bundled model")
    p.add_argument("--tasks", type=csv_list(str), default=["single_needle", "multi_key", "variable_tracking"])
    p.add_argument("--policies", type=csv_list(str), default=["full", "h2o", "tova", "snapkv", "streaming", "random"])
    p.add_argument("--ratios", type=csv_list(float), default=[0.1, 0.3, 0.5, 0.7, 0.9],
                   help="fraction of the document evicted")
    p.add_argument("--context", type=int, default=2048, help="document tokens")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--setting", choices=("aware", "agnostic", "both"), default="both")
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="cast the model (and so its KV) to this dtype; default: as stored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--grid", action="store_true", help="add a length x depth grid for single needle")
    p.add_argument("--grid-lengths", type=csv_list(int), default=[1024, 2048, 4096])
    p.add_argument("--grid-depths", type=csv_list(float), default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--plot", default=None, help="write the grid as a heatmap PNG (needs matplotlib)")

    p = bench.add_parser("ranking", help="ranking work per collection: generational tiers vs a flat H2O")
    p.add_argument("--model", default=None, help="model folder/hub id, or random:llama-3.2-1b[:layers=N]")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--decode-tokens", type=int, default=256)
    p.add_argument("--tenured-fractions", type=csv_list(float), default=[0.0, 0.25, 0.5, 0.75, 0.9])
    p.add_argument("--json", action="store_true")

    p = bench.add_parser("stream", help="stream N tokens with needles through a fixed budget")
    p.add_argument("--model", default=None, help="defaults to the bundled model")
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--budget", type=budget_arg, default=1024)
    p.add_argument("--policy", default="h2o")
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--positions", choices=("absolute", "cache"), default="cache")
    p.add_argument("--recovery", default=None, help="disk allowance for the recovery tier, e.g. 1GB (off by default)")
    _cold_bits_option(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from mlx_kv.blas import reexec_with_openblas

    reexec_with_openblas(argv)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"mlx-kv: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # configuration errors name their field
        print(f"mlx-kv: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mlx-kv: interrupted", file=sys.stderr)
        return 130


def _session(args: argparse.Namespace):
    from mlx_kv.engine import Session

    return Session.load(args.model, budget=args.budget, policy=args.policy,
                        progress=lambda m: print(m, file=sys.stderr), **_heap_kwargs(args))


def cmd_chat(args: argparse.Namespace) -> int:
    try:
        from app.app import run_app
    except ImportError as exc:
        raise UserError(f"the terminal app is not available: {exc}") from None
    run_app(args.model, args.budget, args.policy, _heap_kwargs(args))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    session = _session(args)
    if args.doc:
        session.ingest(args.doc, progress=ProgressBar(), errors=args.errors)
    for piece in session.chat(args.prompt, max_tokens=args.max_tokens):
        print(piece, end="", flush=True)
    print()
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    session = _session(args)
    result = session.ingest(args.file, progress=ProgressBar(), errors=args.errors)
    stats = session.heap_stats()
    print(f"loaded {result.source}: {result.tokens} tokens in {result.seconds:.1f}s "
          f"({result.tokens / max(result.seconds, 1e-9):.0f} tokens/s); heap keeps {stats.tokens_kept} "
          f"tokens per layer, {stats.nbytes / 2**20:.1f} MiB of {stats.budget_bytes / 2**20:.1f} MiB budget, "
          f"{stats.evictions} evictions", file=sys.stderr)
    if args.ask:
        for piece in session.chat(args.ask, max_tokens=args.max_tokens):
            print(piece, end="", flush=True)
        print()
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    from mlx_kv.budget import (AUTO_FRACTION, AUTO_MARGIN, auto_budget_bytes, available_memory,
                               kv_geometry, tokens_per_layer, weights_bytes)
    from mlx_kv.config import HeapConfig
    from mlx_kv.models import load_model

    model, _, name = load_model(args.model)
    config = HeapConfig(budget=args.budget if args.budget is not None else "auto", **_heap_kwargs(args))
    g = kv_geometry(model)
    available = available_memory()
    per_layer = tokens_per_layer(config, model, available)
    print(f"model {name}: {g.n_layers} layers, {g.n_kv_heads} KV heads x {g.head_dim} dims, "
          f"{g.itemsize}-byte KV, weights {weights_bytes(model) / 2**20:.1f} MiB")
    print(f"mlx-lm KVCache: {g.kv_bytes_per_token} bytes per token (all layers)")
    print(f"heap: {g.heap_bytes_per_token_layer} bytes per kept token per layer "
          f"(K+V, two float32 scores, position/age/tier bookkeeping per KV head)")
    if config.budget == "auto":
        print(f"auto = {AUTO_FRACTION:g} x available memory ({available / 2**30:.2f} GiB, weights already loaded) "
              f"- {AUTO_MARGIN / 2**20:.0f} MiB margin = {auto_budget_bytes(available) / 2**30:.2f} GiB")
    total = per_layer[0] * g.n_layers * g.heap_bytes_per_token_layer
    print(f"budget {config.budget}: {per_layer[0]} tokens per layer, {total / 2**20:.1f} MiB in all")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from mlx_kv.models import load_model, resolve_model_path
    from mlx_kv.profile import profile_model, profile_path, save_profile

    if args.prompts < 1 or args.tokens < 64:
        raise UserError("profile: --prompts must be >= 1 and --tokens >= 64")
    path = resolve_model_path(args.model)
    model, tokenizer, name = load_model(str(path))
    profile = profile_model(model, tokenizer, prompts=args.prompts, tokens=args.tokens)
    target = profile_path(path)
    save_profile(profile, target)
    if args.json:
        print(json.dumps(profile))
    else:
        print(f"{'layer':>5} {'entropy':>8} {'top1%':>7} {'top5%':>7}")
        for i, layer in enumerate(profile["layers"]):
            print(f"{i:>5} {layer['entropy']:>8.3f} {layer['top1']:>7.1%} {layer['top5']:>7.1%}")
    print(f"profile of {name} saved to {target}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    return BENCHES[args.bench](args)


def bench_speed(args: argparse.Namespace) -> int:
    import platform

    from mlx_kv.bench.speed import bench_speed as run, format_table

    from mlx_kv.bench.shapes import bench_model

    profile = _check_policies(args.policies, args.model)  # (a random: model has no profile)
    model, description = bench_model(args.model)
    header = {"machine": f"{platform.machine()} {platform.system()}, {_cpu_count()} cores", "model": description,
              "openblas": _openblas_state(), "command": "mlx-kv " + " ".join(sys.argv[1:])}
    rows = []
    emit = (lambda row: print(json.dumps(row), flush=True)) if args.json else rows.append
    if args.json:
        print(json.dumps(header), flush=True)
    else:
        print(" | ".join(f"{k}: {v}" for k, v in header.items()), file=sys.stderr)
    run(model, contexts=args.contexts, ratios=args.budget_ratios, policies=args.policies,
        baselines=args.baselines, decode_tokens=args.decode_tokens, repeats=args.repeats,
        thresholds=args.compact_thresholds, window=args.window, profile=profile, emit=emit)
    if not args.json:
        print(format_table(rows))
    return 0


def _profile_for(model: str | None) -> str | None:
    """The saved `mlx-kv profile` of a model, if there is one."""
    from mlx_kv.models import resolve_model_path
    from mlx_kv.profile import find_profile

    try:
        found = find_profile(resolve_model_path(model))
    except UserError:
        return None
    return str(found) if found else None


def _check_policies(policies: list[str], model: str | None, *, also: tuple[str, ...] = ()) -> str | None:
    """Refuse an unknown policy or variant before a model loads; returns the
    model's saved profile (for +entropy)."""
    from mlx_kv.bench.variants import policy_config
    from mlx_kv.policies import POLICIES

    profile = _profile_for(model)
    for policy in (p for p in policies if p not in also):
        name = policy.split("+")[0]
        if name not in POLICIES:
            raise UserError(f"policies: unknown policy {name!r}; choose from {', '.join((*also, *POLICIES))}"
                            " (variants: +q4, +q8, +pyramid, +entropy, +noiseX, +arg=value)")
        try:
            policy_config(policy, profile)
        except ValueError as exc:
            raise UserError(f"policies: {policy!r}: {str(exc).removeprefix('policies: ')}") from None
    return profile


def bench_niah(args: argparse.Namespace) -> int:
    from mlx_kv.bench import niah
    from mlx_kv.models import load_model
    from mlx_kv.tasks import TASKS

    for task in args.tasks:
        if task not in TASKS:
            raise UserError(f"tasks: unknown task {task!r}; choose from {', '.join(TASKS)}")
    profile = _check_policies(args.policies, args.model, also=("full",))
    for r in args.ratios:
        if not 0.0 <= r < 1.0:
            raise UserError(f"ratios: {r} is not a fraction in [0, 1)")
    if args.trials < 1 or args.context < 16:
        raise UserError("trials must be >= 1 and context >= 16 tokens")
    model, tokenizer, name = load_model(args.model)
    if args.dtype:
        import mlx.core as mx

        model.set_dtype(getattr(mx, args.dtype))
        name += f" ({args.dtype})"
    settings = ["aware", "agnostic"] if args.setting == "both" else [args.setting]
    emit = (lambda c: print(json.dumps(c.as_dict()), flush=True)) if args.json else (lambda c: None)
    print(f"model {name}, context {args.context} tokens, {args.trials} trials per cell, seed {args.seed}",
          file=sys.stderr)
    cells = niah.bench_niah(model, tokenizer, tasks=args.tasks, policies=args.policies, ratios=args.ratios,
                            settings=settings, context=args.context, trials=args.trials, seed=args.seed,
                            window=args.window, emit=emit, profile=profile)
    if not args.json:
        print(niah.format_table(cells))
    if args.grid or args.plot:
        policy = next((p for p in args.policies if p != "full"), "full")
        rows = niah.grid(model, tokenizer, policy=policy, ratio=args.ratios[0] if policy != "full" else 0.0,
                         setting=settings[-1], lengths=args.grid_lengths, depths=args.grid_depths,
                         trials=args.trials, seed=args.seed, window=args.window)
        for row in rows:
            print(json.dumps(row) if args.json else
                  f"grid {row['policy']} {row['context_tokens']:>6} tokens depth {row['depth']:.0%}: {row['accuracy']:.0%}")
        if args.plot:
            niah.plot_grid(rows, args.plot)
    return 0


def bench_ranking(args: argparse.Namespace) -> int:
    from mlx_kv.bench.ranking import bench_ranking as run
    from mlx_kv.bench.shapes import bench_model

    model, description = bench_model(args.model)
    print(f"model: {description}", file=sys.stderr)
    rows = run(model, tokens=args.tokens, budget=args.budget, window=args.window, fractions=args.tenured_fractions,
               decode=args.decode_tokens, emit=(lambda r: print(json.dumps(r), flush=True)) if args.json else (lambda r: None))
    if not args.json:
        print(f"{'tenured':>8} {'collections':>11} {'ranked/coll':>11} {'vs flat':>8} {'rank ms/coll':>12} "
              f"{'collect ms/coll':>15} {'wall s':>7}")
        for r in rows:
            print(f"{r['tenured_fraction']:>8.0%} {r['collections']:>11} {r['ranked_per_collection']:>11.1f} "
                  f"{r.get('ranking_work_vs_flat', float('nan')):>8.2f} {r['rank_ms_per_collection']:>12.3f} "
                  f"{r['collect_ms_per_collection']:>15.3f} {r['wall_s']:>7.2f}")
    return 0


def bench_stream(args: argparse.Namespace) -> int:
    from mlx_kv.bench.stream import stream
    from mlx_kv.config import HeapConfig
    from mlx_kv.models import load_model

    if args.tokens < 1000:
        raise UserError("tokens: stream at least 1000 tokens")
    config = HeapConfig(budget=args.budget, policy=args.policy, window=args.window, positions=args.positions,
                        recovery=args.recovery, cold_bits=args.cold_bits)
    model, tokenizer, name = load_model(args.model)
    if args.json:
        emit = lambda r: print(json.dumps(r), flush=True)
    else:
        emit = lambda r: print(f"{r['progress']:>5.0%} {r['tokens']:>9} tokens  {r['tokens_per_s']:>8.0f} tok/s  "
                               f"heap {r['heap_bytes'] / 2**20:7.2f} MiB  RSS {r['rss_mb']:8.1f} MB", flush=True)
    summary = stream(model, tokenizer, tokens=args.tokens, config=config, seed=args.seed, emit=emit)
    print(json.dumps(summary) if args.json else
          f"{name}: {summary['tokens']} tokens, budget {summary['budget_tokens']} tokens/layer, {summary['policy']}, "
          f"positions {summary['positions']}: RSS growth {summary['rss_growth_pct']}%, throughput "
          f"{summary['tps_first_decile']:.0f} -> {summary['tps_last_decile']:.0f} tok/s, needles "
          f"{summary['needles_found']}/{summary['needles_total']}")
    return 0


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 0


def _openblas_state() -> str:
    from mlx_kv.blas import openblas_active

    return "preloaded" if openblas_active() else "not preloaded"


class ProgressBar:
    """A one-line progress bar on stderr: tokens, tokens/s, ETA."""

    def __init__(self, width: int = 30) -> None:
        self.width = width
        self.started = time.perf_counter()

    def __call__(self, p) -> None:
        filled = int(self.width * p.fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if p.tokens_done >= p.tokens_total else ""
        print(f"\r[{bar}] {p.tokens_done}/{p.tokens_total} tokens  {p.tokens_per_s:,.0f} tok/s  ETA {p.eta_s:,.0f}s",
              end=end, file=sys.stderr, flush=True)


COMMANDS = {"chat": cmd_chat, "generate": cmd_generate, "ingest": cmd_ingest, "budget": cmd_budget,
            "profile": cmd_profile, "bench": cmd_bench}
BENCHES = {"speed": bench_speed, "niah": bench_niah, "stream": bench_stream, "ranking": bench_ranking}

if __name__ == "__main__":
    sys.exit(main())
