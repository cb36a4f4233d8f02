"""`mlx-kv convert`: a GGUF file into a folder plain `mlx_lm.load` opens."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mlx_kv.commands.options import SubParsers
from mlx_kv.errors import UserError


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("convert", help="convert a GGUF file into a folder mlx_lm.load opens")
    p.add_argument("source", help="the .gguf file")
    p.add_argument("out", help="the folder to write (must not exist)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlx_kv.gguf import convert_gguf, tenths_reporter

    source = Path(args.source).expanduser()
    if not source.is_file():
        raise UserError(f"convert: {args.source} is not a file")
    say = lambda m: print(m, file=sys.stderr)
    started = time.perf_counter()
    out = convert_gguf(source, Path(args.out).expanduser(), progress=tenths_reporter(source.name, say), note=say)
    print(f"converted {source.name} into {out} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0
