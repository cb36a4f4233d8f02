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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from app import run_app
    except ImportError as exc:
        raise UserError(f"the terminal app is not available: {exc}") from None
    run_app(args.model, args.budget, args.policy, heap_kwargs(args))
    return 0
