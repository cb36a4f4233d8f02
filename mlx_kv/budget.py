"""Bytes <-> tokens: turning a memory budget into tokens per layer.

A token kept in one layer costs, per KV head, its key and value in the
model's dtype plus the heap's bookkeeping (score accumulators, the dead-slot
bias, position, age, tier, rotation): `HeapKVCache.slot_bytes`. `nbytes`
counts exactly these arrays, so a byte budget converted here is what the
heap then reports.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_kv.config import HeapConfig, parse_bytes

AUTO_FRACTION = 0.5
AUTO_MARGIN = 512 * 2**20


@dataclass(frozen=True)
class KVGeometry:
    n_layers: int
    n_kv_heads: int
    head_dim: int
    itemsize: int

    @property
    def kv_bytes_per_token(self) -> int:
        """What mlx-lm's KVCache spends per token, over all layers."""
        return self.n_layers * 2 * self.n_kv_heads * self.head_dim * self.itemsize

    @property
    def heap_bytes_per_token_layer(self) -> int:
        """What the heap spends per kept token in one layer (absolute positions)."""
        return self.heap_bytes_per_token(positions="absolute")

    def heap_bytes_per_token(self, positions: str = "absolute") -> int:
        from mlx_kv.heap.layer import HeapKVCache

        return self.n_kv_heads * HeapKVCache.slot_bytes(self.head_dim, self.itemsize, positions)


def kv_geometry(model: Any) -> KVGeometry:
    args = model.args
    n_heads = args.num_attention_heads
    n_kv = getattr(args, "num_key_value_heads", None) or n_heads
    head_dim = getattr(args, "head_dim", None) or args.hidden_size // n_heads
    dtype = next((v.dtype for _, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating)), mx.float32)
    return KVGeometry(len(model.layers), n_kv, head_dim, dtype.size)


def weights_bytes(model: Any) -> int:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def available_memory() -> int:
    """Memory the heap may plan on: free memory now (psutil), capped on macOS
    by MLX's recommended working set and on Linux by the memory cgroup's room
    (a container's limit, not the host's free memory, is where the OOM killer
    acts; mlx_kv.system.cgroup)."""
    import psutil

    available = psutil.virtual_memory().available
    if sys.platform.startswith("linux"):
        from mlx_kv.system.cgroup import cgroup_memory
        from mlx_kv.system.linux import read_text

        group = cgroup_memory(read_text)
        if group is not None:
            available = min(available, group.available)
    info = mx.device_info() if hasattr(mx, "device_info") else {}
    recommended = info.get("max_recommended_working_set_size") if isinstance(info, dict) else None
    if recommended:
        available = min(available, int(recommended) - mx.get_active_memory())
    return int(available)


def auto_budget_bytes(available: int) -> int:
    """auto = AUTO_FRACTION of the available memory minus AUTO_MARGIN.

    The weights are already loaded when this runs, so `available` excludes
    them; the fraction leaves room for activations, the OS and other apps.
    """
    return max(0, int(available * AUTO_FRACTION) - AUTO_MARGIN)


def tokens_per_layer(config: HeapConfig, model: Any, available: int | None = None) -> list[int]:
    """Each layer's token budget. The total is what a uniform split would give
    (tokens per layer x layers, or bytes / bytes per token); `allocation`
    only moves tokens between layers."""
    geometry = kv_geometry(model)
    minimum = config.sinks + config.window + 1
    if isinstance(config.budget, int):
        total = config.budget * geometry.n_layers
    else:
        if config.budget.strip().lower() == "auto":
            total_bytes = auto_budget_bytes(available_memory() if available is None else available)
        else:
            total_bytes = parse_bytes(config.budget)
        total = total_bytes // geometry.heap_bytes_per_token(config.positions)
        if total // geometry.n_layers < minimum:
            raise ValueError(
                f"budget: {config.budget} buys {total // geometry.n_layers} tokens per layer, fewer than "
                f"sinks + window + 1 = {minimum}"
            )
    return allocate(int(total), layer_weights(config, geometry.n_layers), minimum)


def layer_weights(config: HeapConfig, n_layers: int) -> list[float]:
    if config.allocation in ("uniform", "adaptive", "headwise", "retrieval"):  # (these split or move tokens later)
        return [1.0] * n_layers
    if config.allocation == "pyramid":
        # PyramidKV: lower layers spread attention widely, upper ones focus it.
        return [float(n_layers - i) + n_layers / 2 for i in range(n_layers)]
    from mlx_kv.profile import load_profile

    layers = load_profile(config.profile)["layers"]
    if len(layers) != n_layers:
        raise ValueError(f"profile: {config.profile} describes {len(layers)} layers, the model has {n_layers}")
    return [max(float(layer["entropy"]), 1e-3) for layer in layers]


def allocate_by_scores(scores: list[np.ndarray], protected: list[int], total: int, minimum: int) -> list[int]:
    """Per-layer budgets that keep the highest-scoring tokens across all layers.

    scores[l] (H, m_l): layer l's candidate tokens (live, not sinks or young)
    per KV head; every head of a layer keeps the same count, so a layer's
    k-th token is worth the mean over its heads of their k-th best score.
    protected[l] tokens (sinks, the young window) are kept anyway. The total
    is shared out by taking the best worths across layers (KVzip ranks all
    layers' pairs together); each layer gets at least `minimum`.
    """
    n = len(scores)
    worth = [np.sort(s, axis=1)[:, ::-1].mean(axis=0) if s.size else np.zeros(0) for s in scores]
    room = total - sum(max(p, minimum) for p in protected)
    counts = [0] * n
    if room > 0:
        flat = np.concatenate(worth)
        owner = np.concatenate([np.full(len(w), i) for i, w in enumerate(worth)]).astype(int)
        rank = np.concatenate([np.arange(len(w)) for w in worth])
        best = np.lexsort((rank, -flat))[:room]  # equal worths: every layer's first before anyone's second
        for i in owner[best]:
            counts[i] += 1
    budgets = [max(p + c, minimum) for p, c in zip(protected, counts)]
    spare = total - sum(budgets)  # tokens no layer had candidates for: spread evenly
    for i in range(spare if spare > 0 else 0):
        budgets[i % n] += 1
    return budgets


def allocate(total: int, weights: list[float], minimum: int) -> list[int]:
    """Split `total` tokens in proportion to `weights`, each layer at least
    `minimum`; the parts add up to `total` exactly (largest remainders)."""
    n = len(weights)
    spare = total - minimum * n
    if spare < 0:
        raise ValueError(f"budget: {total} tokens cannot give {n} layers {minimum} tokens each")
    weight_sum = sum(weights)
    shares = [spare * w / weight_sum for w in weights]
    parts = [int(s) for s in shares]
    leftover = spare - sum(parts)
    for i in sorted(range(n), key=lambda i: shares[i] - parts[i], reverse=True)[:leftover]:
        parts[i] += 1
    return [minimum + p for p in parts]


def allocate_capped(total: int, weights: np.ndarray, minimum: int, cap: int) -> np.ndarray:
    """Split `total` tokens in proportion to `weights` above a floor of
    `minimum` each, no part above `cap` (a head cannot keep more tokens than
    it has seen): water-filling, what a capped part cannot take goes to the
    others in proportion. Parts are whole tokens; they add up to `total` unless
    every part is at its cap."""
    weights = np.asarray(weights, dtype=np.float64).ravel()
    n = len(weights)
    cap = max(int(cap), minimum)
    if total < minimum * n:
        raise ValueError(f"budget: {total} tokens cannot give {n} heads {minimum} tokens each")
    if total >= cap * n:
        return np.full(n, cap, dtype=np.int64)
    parts = np.zeros(n)
    free = np.ones(n, dtype=bool)
    room = float(total - minimum * n)
    while True:
        w = weights[free] if weights[free].sum() > 0 else np.ones(int(free.sum()))  # (all zero: even shares)
        share = room * w / w.sum()
        over = share > cap - minimum
        if not over.any():
            parts[free] = share
            break
        index = np.flatnonzero(free)[over]
        parts[index] = cap - minimum
        room -= (cap - minimum) * len(index)
        free[index] = False
    whole = np.floor(parts).astype(np.int64)
    leftover = int(total - minimum * n - whole.sum())
    order = np.argsort(-(parts - whole), kind="stable")
    order = order[whole[order] < cap - minimum][:leftover]
    whole[order] += 1
    return whole + minimum
