"""`mlx-kv generate`: answer one prompt, optionally about a document."""

from __future__ import annotations

import argparse

from mlx_kv.commands.options import SubParsers, add_heap_options, open_session
from mlx_kv.commands.progress import ProgressBar


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("generate", help="answer one prompt, optionally about a document")
    add_heap_options(p)
    p.add_argument("prompt")
    p.add_argument("--doc", default=None, help="a text or Markdown file to load first")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--errors", choices=("strict", "replace"), default="strict")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    session = open_session(args)
    if args.doc:
        session.ingest(args.doc, progress=ProgressBar(), errors=args.errors)
    for piece in session.chat(args.prompt, max_tokens=args.max_tokens):
        print(piece, end="", flush=True)
    print()
    return 0
