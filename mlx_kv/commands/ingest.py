"""`mlx-kv ingest`: read a document with a progress bar, then optionally ask about it."""

from __future__ import annotations

import argparse
import sys

from mlx_kv.commands.options import SubParsers, add_heap_options, open_session
from mlx_kv.commands.progress import ProgressBar


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("ingest", help="load a document with a progress bar, then optionally ask about it")
    add_heap_options(p)
    p.add_argument("file")
    p.add_argument("--errors", choices=("strict", "replace"), default="strict")
    p.add_argument("--ask", default=None, help="a question to ask once the document is loaded")
    p.add_argument("--max-tokens", type=int, default=128)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    session = open_session(args)
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
