"""`mlx-kv chat`: the terminal app.

The one command that imports the app, and only when it runs: the library
never imports `app/` or Textual (tests/test_layering.py).
"""

from __future__ import annotations

import argparse

from mlx_kv.commands.options import SubParsers, add_heap_options, heap_kwargs
from mlx_kv.errors import UserError


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("chat", help="the terminal app")
    add_heap_options(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("-c", "--continue", dest="continue_last", action="store_true",
                       help="reopen the most recent conversation")
    which.add_argument("--resume", metavar="NAME", default=None, help="reopen the saved conversation NAME")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from app import run_app
    except ImportError as exc:
        raise UserError(f"the terminal app is not available: {exc}") from None
    run_app(args.model, args.budget, args.policy, heap_kwargs(args),
            continue_last=args.continue_last, resume=args.resume)
    return 0
