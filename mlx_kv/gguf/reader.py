"""Reading a GGUF file's header: metadata and the table of tensors.

A GGUF file is untrusted input, and the common failures are mundane: a
download cut short, a file that is not GGUF at all, a header written by a
newer llama.cpp. Everything here is checked against the file's real size
before anything is allocated (a string or array length in a damaged header
could otherwise ask for terabytes), and every failure is one `GGUFError` line.
Tensor data is only located here (offset, byte size), never read.

Format (llama.cpp's gguf.md): magic "GGUF", version (2 or 3), tensor count,
metadata count; metadata as (key, type, value); tensor infos as (name, dims,
ggml type, offset); then the data, aligned to `general.alignment` (32).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlx_kv.errors import UserError

# ggml type id -> (name, elements per block, bytes per block); from ggml.h
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
}

# metadata value type -> struct format (8 = string, 9 = array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_MAX_ENTRIES = 1 << 20  # tensors or metadata keys: far above any real model
_MAX_DIMS = 4


class GGUFError(UserError):
    """A GGUF file mlx-kv cannot or must not read (one line)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: rows first (GGUF lists the innermost dimension first)
    ggml_type: int
    offset: int  # absolute, in bytes from the start of the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type][0]


@dataclass
class GGUFFile:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]
    size: int

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


class _Cursor:
    """Bounds-checked little-endian reads over the mapped header."""

    def __init__(self, buf: mmap.mmap | bytes, name: str) -> None:
        self.buf, self.pos, self.name = buf, 0, name

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(f"model: {self.name} is truncated or corrupt (header runs past the end of the file "
                            f"at byte {self.pos})")
        view = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, what: str, min_bytes_each: int) -> int:
        n = self.unpack("<Q")
        if n > (len(self.buf) - self.pos) // max(1, min_bytes_each):
            raise GGUFError(f"model: {self.name} is truncated or corrupt ({what} of {n} entries runs past the end "
                            f"of the file)")
        return n

    def string(self) -> str:
        raw = self.take(self.count("a string", 1))
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(raw).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9 and depth == 0:
            item_type = self.unpack("<I")
            if item_type in _NUMPY:
                width = np.dtype(_NUMPY[item_type]).itemsize
                n = self.count("an array", width)
                return np.frombuffer(self.take(n * width), dtype=_NUMPY[item_type]).copy()
            if item_type in (8, 9):
                n = self.count("an array", 8)
                return [self.value(item_type, depth + 1) for _ in range(n)]
            raise GGUFError(f"model: {self.name} is corrupt (unknown array item type {item_type})")
        raise GGUFError(f"model: {self.name} is corrupt (unknown metadata type {vtype})")


def read_gguf(path: str | Path) -> GGUFFile:
    """The header of a GGUF file, checked against the file's size."""
    path = Path(path)
    name = path.name
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < 24:
                raise GGUFError(f"model: {name} is too short to be a GGUF file ({size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(_Cursor(buf, name), path, size)
    except OSError as exc:
        raise GGUFError(f"model: cannot read {name}: {exc.strerror or exc}") from None


def _parse(cur: _Cursor, path: Path, size: int) -> GGUFFile:
    name = path.name
    if bytes(cur.take(4)) != b"GGUF":
        raise GGUFError(f"model: {name} is not a GGUF file (no GGUF magic)")
    version = cur.unpack("<I")
    if version not in (2, 3):
        raise GGUFError(f"model: {name} is GGUF version {version}; versions 2 and 3 are supported")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    if n_tensors > _MAX_ENTRIES or n_kv > _MAX_ENTRIES:
        raise GGUFError(f"model: {name} is corrupt ({n_tensors} tensors, {n_kv} metadata entries)")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.unpack("<I"))
    infos = []
    for _ in range(n_tensors):
        tname = cur.string()
        n_dims = cur.unpack("<I")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise GGUFError(f"model: {name} is corrupt (tensor {tname!r} has {n_dims} dimensions)")
        dims = tuple(cur.unpack("<Q") for _ in range(n_dims))
        infos.append((tname, dims, cur.unpack("<I"), cur.unpack("<Q")))
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise GGUFError(f"model: {name} is corrupt (alignment {alignment!r} is not a power of two)")
    data_start = -(-cur.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for tname, dims, ggml_type, offset in infos:
        if ggml_type not in GGML_TYPES:
            raise GGUFError(f"model: {name}: tensor {tname!r} has ggml type {ggml_type}, which mlx-kv does not know")
        type_name, block, block_bytes = GGML_TYPES[ggml_type]
        n = int(np.prod(dims, dtype=np.float64))
        if any(d == 0 for d in dims) or dims[0] % block:
            raise GGUFError(f"model: {name} is corrupt (tensor {tname!r} of shape {dims} is not a whole number "
                            f"of {type_name} blocks)")
        nbytes = n // block * block_bytes
        start = data_start + offset
        if start + nbytes > size:
            raise GGUFError(f"model: {name} is truncated ({size:,} bytes; tensor {tname!r} needs bytes up to "
                            f"{start + nbytes:,})")
        if tname in tensors:
            raise GGUFError(f"model: {name} is corrupt (tensor {tname!r} appears twice)")
        tensors[tname] = TensorInfo(tname, dims[::-1], ggml_type, start, nbytes)
    return GGUFFile(path, version, metadata, tensors, size)
