"""`mlx-kv budget`: how a budget turns into tokens per layer, with the arithmetic."""

from __future__ import annotations

import argparse

from mlx_kv.commands.options import SubParsers, add_heap_options, heap_kwargs


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("budget", help="show how a budget turns into tokens per layer")
    add_heap_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlx_kv.budget import (AUTO_FRACTION, AUTO_MARGIN, auto_budget_bytes, available_memory,
                               kv_geometry, tokens_per_layer, weights_bytes)
    from mlx_kv.config import HeapConfig
    from mlx_kv.engine import SESSION_POSITIONS
    from mlx_kv.models import load_model

    model, _, name = load_model(args.model, weights=args.weights)
    heap = {"positions": SESSION_POSITIONS, **heap_kwargs(args)}  # the settings a session would use
    config = HeapConfig(budget=args.budget if args.budget is not None else "auto", **heap)
    g = kv_geometry(model)
    per_token = g.heap_bytes_per_token(config.positions)
    available = available_memory()
    per_layer = tokens_per_layer(config, model, available)
    shift = ", the RoPE shift" if config.positions == "cache" else ""
    print(f"model {name}: {g.n_layers} layers, {g.n_kv_heads} KV heads x {g.head_dim} dims, "
          f"{g.itemsize}-byte KV, weights {weights_bytes(model) / 2**20:.1f} MiB")
    print(f"mlx-lm KVCache: {g.kv_bytes_per_token} bytes per token (all layers)")
    print(f"heap, {config.positions} positions: {per_token} bytes per kept token per layer (per KV head: K+V; "
          f"float32 accumulated score, times seen and dead-slot bias{shift}; position, tier, survivals, rotation, "
          f"rank, surprisal and entropy)")
    if config.budget == "auto":
        print(f"auto = {AUTO_FRACTION:g} x available memory ({available / 2**30:.2f} GiB, weights already loaded) "
              f"- {AUTO_MARGIN / 2**20:.0f} MiB margin = {auto_budget_bytes(available) / 2**30:.2f} GiB")
    total = sum(per_layer) * per_token
    print(f"budget {config.budget}: {per_layer[0]} tokens per layer, {total / 2**20:.1f} MiB in all")
    return 0
