"""Options several commands share, and the argparse pieces that keep every
usage error to one line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Protocol

from mlx_kv.config import ALLOCATIONS

if TYPE_CHECKING:
    from mlx_kv.engine import Session

HEAP_FLAGS = ("window", "sinks", "positions", "allocation", "cold_bits")
# mlx_kv.policies.POLICIES, spelled out so that --help does not load MLX
# (tests/test_cli.py keeps the two equal).
POLICY_NAMES = ("h2o", "tova", "snapkv", "streaming", "random", "surprise", "kvzip", "keydiff", "expected", "valuenorm")


class SubParsers(Protocol):
    """What add_subparsers() returns (argparse keeps its class private)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mlx-kv: {message} (see {self.prog} --help)\n")


def csv_list(kind: Callable[[str], Any]) -> Callable[[str], list]:
    """An argparse type for comma-separated values of `kind`."""
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")
    return parse


def budget_arg(text: str) -> int | str:
    """--budget through the one budget reader (mlx_kv.sizes), as an argparse type."""
    from mlx_kv.sizes import parse_budget

    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("budget: ")) from None


def add_model_options(p: argparse.ArgumentParser, also: str = "") -> None:
    """--model and --weights, for every command that loads a model."""
    p.add_argument("--model", default=None,
                   help=f"a .gguf file, a model folder, a hub id, mlx-kv-tiny{also}, or omit for the default model")
    p.add_argument("--weights", choices=("auto", "quantized", "float32"), default="auto",
                   help="keep quantized weights or dequantize to float32 (auto: float32 on a CPU)")


def add_heap_options(p: argparse.ArgumentParser) -> None:
    """--model, --budget, --policy and the heap flags of the session commands."""
    add_model_options(p)
    p.add_argument("--budget", type=budget_arg, default=None,
                   help="tokens per layer (1024), a size for the whole heap (2GB, 512MiB, 2G = 2GB), or auto")
    p.add_argument("--policy", default=None,
                   help=", ".join(POLICY_NAMES) + " (default kvzip, which replays each chunk once the budget binds "
                        "and splits the budget between the KV heads by the replay's scores; keydiff loads faster, "
                        "split by the heads' retrieval scores where the model has a profile: `mlx-kv profile`)")
    p.add_argument("--window", type=int, default=None, help="young generation size (tokens)")
    p.add_argument("--sinks", type=int, default=None, help="attention sinks kept forever")
    p.add_argument("--positions", choices=("absolute", "cache"), default=None,
                   help="RoPE positions: absolute, or re-indexed within the cache (default for sessions)")
    p.add_argument("--allocation", choices=ALLOCATIONS, default=None,
                   help="split of the budget across layers (entropy needs `mlx-kv profile` first; adaptive "
                        "moves it to the layers whose tokens score highest after each replayed chunk, headwise "
                        "to the (layer, KV head) pairs: kvzip only; retrieval gives each KV head a fixed share "
                        "by its profiled retrieval score, any policy)")
    add_cold_bits_option(p)


def add_cold_bits_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cold-bits", type=int, choices=(4, 8), default=None,
                   help="store the intermediate tier at 4 or 8 bits (off by default)")


def heap_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The heap flags that were given, as HeapConfig fields."""
    return {k: getattr(args, k) for k in HEAP_FLAGS if getattr(args, k, None) is not None}


def open_session(args: argparse.Namespace) -> Session:
    """A Session from the heap options; loading notes go to stderr."""
    from mlx_kv.engine import Session

    return Session.load(args.model, budget=args.budget, policy=args.policy, weights=args.weights,
                        progress=lambda m: print(m, file=sys.stderr), **heap_kwargs(args))
