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
quantized once, when it turns cold.
"""

from __future__ import annotations

import mlx.core as mx

QuantizedRows = tuple[mx.array, mx.array, mx.array]  # packed words, scales, biases: (1, H, n, *)


def group_size_for(head_dim: int) -> int:
    """The largest MLX quantization group that divides head_dim (64 or 32)."""
    for group in (64, 32):
        if head_dim % group == 0:
            return group
    raise ValueError(f"cold_bits: head_dim {head_dim} is not a multiple of 32, which MLX quantization needs")


class ColdTier:
    """Quantized keys and values of slots [0, n) of one layer's heap."""

    def __init__(self, bits: int) -> None:
        if bits not in (4, 8):
            raise ValueError(f"cold_bits: must be 4 or 8, got {bits!r}")
        self.bits = bits
        self.keys: QuantizedRows | None = None
        self.values: QuantizedRows | None = None
        self.dtype = mx.float32

    @property
    def size(self) -> int:
        return 0 if self.keys is None else self.keys[0].shape[2]

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        return sum(a.nbytes for a in (*self.keys, *self.values))

    def quantize(self, rows: mx.array) -> QuantizedRows:
        return mx.quantize(rows, group_size=group_size_for(rows.shape[-1]), bits=self.bits)

    def dequantized(self) -> tuple[mx.array, mx.array]:
        """Keys and values of the cold slots at the model's dtype (temporaries for attention)."""
        return self._dequantize(self.keys), self._dequantize(self.values)

    def _dequantize(self, rows: QuantizedRows) -> mx.array:
        w, scales, biases = rows
        head_dim = w.shape[-1] * 32 // self.bits
        group = group_size_for(head_dim)
        return mx.dequantize(w, scales, biases, group_size=group, bits=self.bits).astype(self.dtype)

    def rebuild(self, slots: mx.array, from_cold: mx.array, keys: mx.array, values: mx.array) -> None:
        """Make the tier hold, in order, the tokens at `slots` (1, H, n) of the
        old slot space: rows already cold are gathered as they are, the others
        are quantized from `keys`/`values`, the full-precision rows gathered
        at the same slots."""
        self.dtype = keys.dtype
        if slots.shape[2] == 0:
            self.keys = self.values = None
            return
        idx = slots[..., None]
        fresh_k = self.quantize(mx.take_along_axis(keys, idx, axis=2))
        fresh_v = self.quantize(mx.take_along_axis(values, idx, axis=2))
        if self.keys is None:
            self.keys, self.values = fresh_k, fresh_v
            return
        old_idx = mx.minimum(slots, self.size - 1)[..., None]
        keep = from_cold[..., None]
        self.keys = tuple(mx.where(keep, mx.take_along_axis(old, old_idx, axis=2), new)
                          for old, new in zip(self.keys, fresh_k))
        self.values = tuple(mx.where(keep, mx.take_along_axis(old, old_idx, axis=2), new)
                            for old, new in zip(self.values, fresh_v))
