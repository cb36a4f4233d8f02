"""The heap's cold tier: intermediate tokens stored at 8 or 4 bits.

Tenured tokens, sinks and the young window stay at the model's dtype; the
intermediate tier (tokens waiting to be promoted or evicted) is where most of
a long session's tokens sit and where a small error costs least, so at each
compaction those slots move to the front of the layer's slot space and are
stored quantized (seed 001: 80% eviction plus a 4-bit cold tier).

Quantization is MLX's affine format (`mx.quantize`), per token: each key and
value row is split into groups of 32 or 64 channels with their own scale and
bias. KIVI quantizes keys per channel instead (a scale per channel over a
group of tokens), which suits keys' outlier channels better; here tokens leave
the cold tier one at a time from the middle (evicted or promoted), and a
per-channel group would have to be re-quantized every time one of its members
left, adding error at every collection. Per-token rows are moved between
slots exactly (the packed words are gathered, never re-quantized): a token is
quantized when it turns cold, and again only if it is promoted to tenured
(which holds its dequantized values), demoted and turns cold once more.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import numpy as np

QuantizedRows = tuple[mx.array, mx.array, mx.array]  # packed words, scales, biases: (1, H, n, *)


def group_size_for(head_dim: int) -> int:
    """The largest MLX quantization group that divides head_dim (64 or 32)."""
    for group in (64, 32):
        if head_dim % group == 0:
            return group
    raise ValueError(f"cold_bits: head_dim {head_dim} is not a multiple of 32, which MLX quantization needs")


class ColdTier:
    """Quantized rows of slots [0, n) of one layer's heap, per field (keys, values)."""

    def __init__(self, bits: int) -> None:
        if bits not in (4, 8):
            raise ValueError(f"cold_bits: must be 4 or 8, got {bits!r}")
        self.bits = bits
        self.rows: dict[str, QuantizedRows] = {}
        self.dtype = mx.float32

    @property
    def size(self) -> int:
        return next((rows[0].shape[2] for rows in self.rows.values()), 0)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays())

    def arrays(self) -> list[mx.array]:
        return [a for rows in self.rows.values() for a in rows]

    def quantize(self, rows: mx.array) -> QuantizedRows:
        return mx.quantize(rows, group_size=group_size_for(rows.shape[-1]), bits=self.bits)

    def dequantized(self, name: str) -> mx.array:
        """Field `name` of the cold slots at the model's dtype (a temporary for attention)."""
        return self._dequantize(self.rows[name])

    def _dequantize(self, rows: QuantizedRows) -> mx.array:
        w, scales, biases = rows
        head_dim = w.shape[-1] * 32 // self.bits
        group = group_size_for(head_dim)
        return mx.dequantize(w, scales, biases, group_size=group, bits=self.bits).astype(self.dtype)

    def rebuild(self, slots: np.ndarray, hot0: int, hot: dict[str, mx.array], key_shift: np.ndarray | None = None,
                rotate: Callable[[mx.array, np.ndarray], mx.array] | None = None) -> None:
        """Make the tier hold, in order, the tokens at `slots` (H, n) of the old
        slot space, where slots below `hot0` were this tier's and slot s >= hot0
        is row s - hot0 of each field's hot rows in `hot`. Rows already cold are
        gathered as they are; only the others are quantized (a rectangle of
        the most any head needs, padded with row 0). `key_shift` (H, n): the
        RoPE shift each key row is owed, applied with `rotate(rows, shifts)` (host shifts):
        before quantizing a new row; a row already cold owed one is re-stamped."""
        self.dtype = next(iter(hot.values())).dtype
        H, n = slots.shape
        if n == 0:
            self.rows = {}
            return
        fresh = slots >= hot0
        rank = np.cumsum(fresh, axis=1) - 1
        m = int(fresh.sum(axis=1).max())
        heads, cols = np.nonzero(fresh)
        old_size = self.size
        # where each output row comes from in [old tier rows | fresh quantized rows]
        idx = mx.array(np.where(fresh, old_size + rank, slots).astype(np.int32))[None, :, :, None]
        if m:
            fresh_rows = np.zeros((H, m), np.int32)
            fresh_rows[heads, rank[heads, cols]] = slots[heads, cols] - hot0
            fresh_idx = mx.array(fresh_rows)[None, :, :, None]
        shifted = key_shift is not None and bool(key_shift.any())
        if shifted and m:
            fresh_shift = np.zeros((H, m), np.int32)
            fresh_shift[heads, rank[heads, cols]] = key_shift[heads, cols]
        rows = {}
        for name, hot_rows in hot.items():
            parts = [self.rows[name]] if old_size else []
            if m:
                new = mx.take_along_axis(hot_rows, fresh_idx, axis=2)
                if shifted and name == "keys":
                    new = rotate(new.astype(mx.float32), fresh_shift).astype(new.dtype)
                parts.append(self.quantize(new))
            rows[name] = _gather_rows(parts, idx)
        if shifted and (key_shift[~fresh] != 0).any():
            old_shift = np.where(fresh, 0, key_shift).astype(np.int32)
            rows["keys"] = self.quantize(rotate(self._dequantize(rows["keys"]).astype(mx.float32), old_shift).astype(self.dtype))
        self.rows = rows


def _gather_rows(parts: list[QuantizedRows], idx: mx.array) -> QuantizedRows:
    """Rows `idx` (1, H, n, 1) of the parts' rows laid end to end."""
    if len(parts) == 1:
        return tuple(mx.take_along_axis(a, idx, axis=2) for a in parts[0])
    return tuple(mx.take_along_axis(mx.concatenate(pieces, axis=2), idx, axis=2) for pieces in zip(*parts))
