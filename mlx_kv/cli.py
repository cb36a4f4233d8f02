"""`mlx-kv`: chat, generate, ingest, budget, convert, fetch, profile, bench.

A thin dispatcher: each command lives in mlx_kv/commands/ (its parser and
its `run`). Every failure a user can cause ends in one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mlx_kv.commands import bench, budget, chat, convert, fetch, generate, ingest, profile
from mlx_kv.commands.options import OneLineParser, budget_arg
from mlx_kv.errors import UserError

__all__ = ["build_parser", "main", "budget_arg"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mlx-kv", description="Long-context chat on MLX inside a fixed KV memory budget.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for command in (chat, generate, ingest, budget, convert, fetch, profile, bench):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from mlx_kv.blas import reexec_with_openblas  # first: a preload must precede loading MLX

    reexec_with_openblas(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"mlx-kv: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # configuration errors name their field
        print(f"mlx-kv: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mlx-kv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
