"""Re-indexing RoPE positions so a long stream stays inside the trained range.

mlx-lm rotates each key at its absolute position before the cache sees it.
With positions="cache" the heap instead numbers the kept tokens 0..n-1 in
order (StreamingLLM's "positions within the cache"): mlx-lm rotates new
tokens at `cache.offset` (the kept count), and keys whose rank dropped after
evictions are rotated by the difference, llama.cpp-style. The shift is
always applied to the key as it was first stored, never to an already
shifted copy, so rounding does not accumulate; it is computed on the fly
in `attend`, so the heap keeps no second copy of the keys.

RoPE is a rotation linear in the position, so R(a + d) k = R(d) R(a) k for
the model's own rope object (plain, linear-scaled or Llama-3 frequencies).
Variants that also rescale the vectors (YaRN's mscale) are refused.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

_PURE_ROTATIONS = ("RoPE", "Llama3RoPE")


def check_rope(rope: Any) -> None:
    name = type(rope).__name__
    if name not in _PURE_ROTATIONS:
        raise ValueError(
            f"positions: 'cache' needs a pure-rotation RoPE ({', '.join(_PURE_ROTATIONS)}); this model uses {name}"
        )


def ranks(positions: np.ndarray) -> np.ndarray:
    """Each live slot's index in position order (its position within the cache); -1 for dead slots."""
    alive = positions >= 0
    order = np.argsort(np.where(alive, positions, np.iinfo(np.int64).max), axis=1, kind="stable")
    out = np.full(positions.shape, -1, dtype=np.int64)
    n_live = alive.sum(axis=1)
    for head, n in enumerate(n_live):
        out[head, order[head, :n]] = np.arange(n)
    return out


def shift_keys(rope: Any, keys: mx.array, shifts: mx.array) -> mx.array:
    """Rotate each key (1, H, L, D) by its own position shift (H, L)."""
    _, H, L, D = keys.shape
    flat = keys.reshape(H * L, 1, 1, D)
    return rope(flat, offset=shifts.reshape(-1)).reshape(1, H, L, D)
