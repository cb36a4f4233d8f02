"""GGUF tensor data in MLX's layout.

Q4_0, Q4_1 and Q8_0 are affine block formats with 32 weights per block, the
same form as MLX's quantization (w = scale * q + bias per group of 32), so
they move over exactly, with no rounding: only the bit packing differs.
  Q4_1: scale d, minimum m, 4-bit q:  w = d*q + m
  Q4_0: scale d, 4-bit q:             w = d*(q - 8)   -> bias -8d
  Q8_0: scale d, int8 q:              w = d*q         -> q + 128, bias -128d
(-8d and -128d are exact in float16: powers of two.) In a GGUF block the
first 16 weights sit in the low nibbles of bytes 0..15 and the next 16 in
the high nibbles; MLX packs 8 (4-bit) or 4 (8-bit) consecutive weights per
uint32, lowest bits first.

Every other quantized type (K-quants, IQ) is dequantized with gguf-py's
reference decoder and quantized again by MLX at the nearest width MLX has:
one more rounding, which the converter reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlx_kv.gguf.reader import GGUFError, TensorInfo

GROUP = 32
FLOAT_TYPES = {0: np.float32, 1: np.float16, 28: np.float64}
EXACT_TYPES = {2, 3, 8}  # Q4_0, Q4_1, Q8_0
# re-quantization width for the other quantized types (bits MLX supports: 2, 3, 4, 5, 6, 8)
REQUANT_BITS = {"Q5_0": 5, "Q5_1": 5, "Q8_1": 8, "Q2_K": 4, "Q3_K": 4, "Q4_K": 4, "Q5_K": 5, "Q6_K": 6,
                "Q8_K": 8, "IQ4_NL": 4, "IQ4_XS": 4}


@dataclass
class Quantized:
    """Packed weights, scales and biases for MLX (mx.dequantize's arguments)."""

    weight: np.ndarray  # uint32 (rows, cols * bits / 32)
    scales: np.ndarray  # float16 (rows, cols / group)
    biases: np.ndarray
    bits: int
    group_size: int = GROUP
    exact: bool = True  # False when the values were rounded again on the way


def raw_bytes(buf, info: TensorInfo) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint8, count=info.nbytes, offset=info.offset)


def decode(buf, info: TensorInfo) -> np.ndarray | Quantized:
    """The tensor as float data or as MLX-layout quantized data."""
    t = info.ggml_type
    if t in FLOAT_TYPES:
        return np.frombuffer(buf, dtype=FLOAT_TYPES[t], count=int(np.prod(info.shape)),
                             offset=info.offset).reshape(info.shape)
    if t == 30:  # bfloat16: the top half of a float32
        half = np.frombuffer(buf, dtype=np.uint16, count=int(np.prod(info.shape)), offset=info.offset)
        return (half.astype(np.uint32) << 16).view(np.float32).reshape(info.shape)
    if t in (24, 25, 26, 27):
        raise GGUFError(f"model: tensor {info.name!r} holds integers ({info.type_name}), not weights")
    if len(info.shape) != 2:
        raise GGUFError(f"model: quantized tensor {info.name!r} has shape {info.shape}; only matrices are supported")
    if t not in EXACT_TYPES:
        return _requantize(buf, info)
    rows, cols = info.shape
    blocks = raw_bytes(buf, info).reshape(rows, cols // GROUP, -1)
    if t == 3:
        d, m = _halves(blocks[..., 0:2]), _halves(blocks[..., 2:4])
        return Quantized(_pack(_nibbles(blocks[..., 4:20]), 4), d, m, 4)
    if t == 2:
        d = _halves(blocks[..., 0:2])
        return Quantized(_pack(_nibbles(blocks[..., 2:18]), 4), d, (d * np.float16(-8)).astype(np.float16), 4)
    d = _halves(blocks[..., 0:2])  # Q8_0
    q = (blocks[..., 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return Quantized(_pack(q.reshape(rows, cols), 8), d, (d * np.float16(-128)).astype(np.float16), 8)


def _halves(pairs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pairs).view(np.float16)[..., 0]


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(rows, blocks, 16) bytes -> (rows, blocks * 32) 4-bit values in weight order."""
    low, high = qs & 0x0F, qs >> 4
    return np.concatenate([low, high], axis=-1).reshape(qs.shape[0], -1)


def _pack(q: np.ndarray, bits: int) -> np.ndarray:
    """(rows, cols) small unsigned values -> (rows, cols * bits / 32) uint32, lowest bits first."""
    per_word = 32 // bits
    q = q.astype(np.uint32).reshape(q.shape[0], -1, per_word)
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)
    return np.bitwise_or.reduce(q << shifts, axis=-1).astype(np.uint32)


def _requantize(buf, info: TensorInfo) -> Quantized:
    bits = REQUANT_BITS.get(info.type_name, 4)
    try:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize
    except ImportError:
        raise GGUFError(f"model: tensor {info.name!r} is {info.type_name}; reading it needs the 'gguf' package "
                        "(pip install gguf)") from None
    import mlx.core as mx

    rows = info.shape[0]
    try:
        values = dequantize(raw_bytes(buf, info).reshape(rows, -1), GGMLQuantizationType(info.ggml_type))
    except NotImplementedError:
        raise GGUFError(f"model: tensor {info.name!r} is {info.type_name}, which cannot be decoded") from None
    w, scales, biases = mx.quantize(mx.array(values.astype(np.float32)), group_size=GROUP, bits=bits)
    return Quantized(np.array(w), np.array(scales.astype(mx.float16)), np.array(biases.astype(mx.float16)), bits,
                     exact=False)
