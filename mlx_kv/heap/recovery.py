"""The recovery tier: evicted tokens spill to disk and can come back.

Seed 002 reports that offloading and partial recomputation push the accuracy
cliff 10-15% further. Evicted keys and values are quantized to int8 (one
scale per token and head) and appended, per KV head, into pages of
`page_size` tokens in a file on disk. Each page keeps a Quest-style summary
in memory (Tang et al. 2024): the per-channel minimum and maximum of its
dequantized keys, so sum_d max(q_d * min_d, q_d * max_d) bounds every q.k in
the page from above without reading it. A question's queries rank the pages
by that bound and the best pages are read back.

Disk use is bounded: past `max_bytes`, the oldest pages are dropped and the
file is rewritten with the rest. A store whose file cannot be written (a
full disk) raises OSError; the layer then closes it and evicts as if there
were no tier (HeapKVCache._drop_store), so a full disk costs recall, never
the session.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Pending:
    positions: list = field(default_factory=list)
    rotated_at: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    values: list = field(default_factory=list)


def _used_rows_of(name: str) -> property:
    """One field of a PageTable's used rows, as a view (writes go through)."""
    return property(lambda table: table._rows[name][: table.n])


class PageTable:
    """What stays in memory per spilled page: its head, where it is in the
    file, and its key summary; one row per page, in file order (oldest first).
    Positions and values live on disk with the page, so memory per page is
    12 + 8 x head_dim bytes (up to twice that while the array grows by
    doubling), and the disk allowance bounds the page count."""

    def __init__(self, head_dim: int) -> None:
        self.dtype = np.dtype([("head", np.int32), ("offset", np.int64),
                               ("key_min", np.float32, (head_dim,)), ("key_max", np.float32, (head_dim,))])
        self._rows = np.zeros(0, self.dtype)
        self.n = 0

    head = _used_rows_of("head")
    offset = _used_rows_of("offset")
    key_min = _used_rows_of("key_min")
    key_max = _used_rows_of("key_max")

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes

    def append(self, head: int, offset: int, key_min: np.ndarray, key_max: np.ndarray) -> None:
        if self.n == len(self._rows):
            self._rows = np.concatenate([self._rows, np.zeros(max(64, self.n), self.dtype)])
        self._rows[self.n] = (head, offset, key_min, key_max)
        self.n += 1

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows (indices or a mask), in order."""
        self._rows = self._rows[: self.n][rows]
        self.n = len(self._rows)

    def copy(self) -> "PageTable":
        twin = PageTable(self.dtype["key_min"].shape[0])
        twin._rows, twin.n = self._rows[: self.n].copy(), self.n
        return twin


def lost_note(folder: str, exc: OSError) -> str:
    """The one line a user reads when the tier gives up its disk."""
    from mlx_kv.storage import is_disk_full, room_note

    why = f"no space left in {folder}{room_note(folder)}" if is_disk_full(exc, folder) else \
        f"cannot use {folder}: {exc.strerror or exc}"
    return f"recovery tier off: {why}; evicted tokens are dropped from now on (plain eviction)"


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 symmetric, one scale per row."""
    scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-12) / 127.0
    return np.clip(np.round(x / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale


class RecoveryStore:
    """Spilled tokens of one layer, per KV head."""

    def __init__(self, n_heads: int, head_dim: int, value_dim: int, *, page_size: int = 64,
                 max_bytes: int = 1 << 30, folder: str | None = None) -> None:
        self.n_heads, self.head_dim, self.value_dim = n_heads, head_dim, value_dim
        self.page_size = page_size
        self.max_bytes = max_bytes
        fd, self.path = tempfile.mkstemp(prefix="mlx-kv-recovery-", suffix=".bin", dir=folder)
        os.close(fd)
        self.table = PageTable(head_dim)
        self.pending = [Pending() for _ in range(n_heads)]
        self.file_bytes = 0
        self.owner = True
        self.spilled = 0
        self.recalled = 0
        self.dropped = 0

    @classmethod
    def from_settings(cls, settings: dict, n_heads: int, head_dim: int, value_dim: int) -> "RecoveryStore":
        """A store for one layer from a heap's `recovery` settings (HeapConfig.recovery_settings)."""
        return cls(n_heads, head_dim, value_dim, page_size=settings["page_size"], max_bytes=settings["max_bytes"],
                   folder=settings.get("folder"))

    @property
    def page_bytes(self) -> int:
        # int8 K and V, an fp32 scale each, and the int64 position and rotation of every token
        return self.page_size * (self.head_dim + self.value_dim + 8 + 16)

    @property
    def page_count(self) -> int:
        return self.table.n

    @property
    def live_bytes(self) -> int:
        return self.table.n * self.page_bytes

    def spill(self, positions: np.ndarray, rotated_at: np.ndarray, keys: np.ndarray, values: np.ndarray) -> None:
        """Evicted tokens: positions/rotated_at (H, n), keys (H, n, D), values (H, n, Dv)."""
        for head in range(self.n_heads):
            pending = self.pending[head]
            pending.positions.extend(positions[head].tolist())
            pending.rotated_at.extend(rotated_at[head].tolist())
            pending.keys.extend(keys[head])
            pending.values.extend(values[head])
            while len(pending.positions) >= self.page_size:
                self._write_page(head, pending)
        self.spilled += positions.shape[1]
        if self.file_bytes > self.max_bytes:
            self._shrink()

    def _write_page(self, head: int, pending: Pending) -> None:
        n = self.page_size
        k = np.asarray(pending.keys[:n], dtype=np.float32)
        v = np.asarray(pending.values[:n], dtype=np.float32)
        kq, ks = quantize_rows(k)
        vq, vs = quantize_rows(v)
        k_deq = dequantize_rows(kq, ks)
        positions = np.asarray(pending.positions[:n], np.int64)
        rotated_at = np.asarray(pending.rotated_at[:n], np.int64)
        with open(self.path, "ab") as f:
            offset = f.tell()
            f.write(b"".join(a.tobytes() for a in (kq, ks, vq, vs, positions, rotated_at)))
        self.file_bytes = offset + self.page_bytes
        self.table.append(head, offset, k_deq.min(axis=0), k_deq.max(axis=0))
        del pending.positions[:n], pending.rotated_at[:n], pending.keys[:n], pending.values[:n]

    def _read_page(self, row: int, f=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """keys, values, positions and rotations of page `row` of the table."""
        n, D, Dv = self.page_size, self.head_dim, self.value_dim
        raw = self._read_raw(int(self.table.offset[row]), f)
        at = 0
        kq = np.frombuffer(raw, np.int8, n * D, at).reshape(n, D); at += n * D
        ks = np.frombuffer(raw, np.float32, n, at).reshape(n, 1); at += 4 * n
        vq = np.frombuffer(raw, np.int8, n * Dv, at).reshape(n, Dv); at += n * Dv
        vs = np.frombuffer(raw, np.float32, n, at).reshape(n, 1); at += 4 * n
        positions = np.frombuffer(raw, np.int64, n, at); at += 8 * n
        rotated_at = np.frombuffer(raw, np.int64, n, at)
        return dequantize_rows(kq, ks), dequantize_rows(vq, vs), positions.copy(), rotated_at.copy()

    def _read_raw(self, offset: int, f=None) -> bytes:
        if f is None:
            with open(self.path, "rb") as f:
                return self._read_raw(offset, f)
        f.seek(offset)
        return f.read(self.page_bytes)

    def _shrink(self) -> None:
        """Drop the oldest pages until half the allowance is used, then rewrite the file."""
        keep_pages = max(0, (self.max_bytes // 2) // self.page_bytes)
        drop = self.table.n - keep_pages
        if drop > 0:
            self.dropped += drop * self.page_size
            self.table.keep(np.arange(drop, self.table.n))
        self._rewrite()

    def _rewrite(self) -> None:
        with open(self.path, "rb") as f:
            blobs = [self._read_raw(int(offset), f) for offset in self.table.offset]
        with open(self.path, "wb") as f:
            for row, blob in enumerate(blobs):
                self.table.offset[row] = f.tell()
                f.write(blob)
        self.file_bytes = self.table.n * self.page_bytes

    def upper_bounds(self, head: int, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the page table holding one head's pages and, per page, the
        largest possible q.k over the queries (Q, D)."""
        rows = np.flatnonzero(self.table.head == head)
        if not len(rows):
            return rows, np.zeros(0)
        lo, hi = self.table.key_min[rows], self.table.key_max[rows]  # (P, D)
        bound = np.maximum(queries[:, None, :] * lo[None], queries[:, None, :] * hi[None]).sum(-1)  # (Q, P)
        return rows, bound.max(axis=0)

    def recall(self, queries: np.ndarray, n_pages: int) -> list[tuple[np.ndarray, ...]] | None:
        """For each head the best `n_pages` pages for queries (H, Q, D), removed
        from the store: (positions, rotated_at, keys, values) per head; the same
        count for every head, or None when some head has none."""
        chosen = []
        for head in range(self.n_heads):
            rows, bound = self.upper_bounds(head, queries[head])
            chosen.append(rows[np.argsort(-bound, kind="stable")[:n_pages]])
        count = min(len(c) for c in chosen)
        if count == 0:
            return None
        out, taken = [], []
        with open(self.path, "rb") as f:
            for rows in chosen:
                keys, values, positions, rotated_at = zip(*(self._read_page(r, f) for r in rows[:count]))
                out.append((np.concatenate(positions), np.concatenate(rotated_at),
                            np.concatenate(keys), np.concatenate(values)))
                taken.extend(rows[:count])
        keep = np.ones(self.table.n, bool)
        keep[taken] = False
        self.table.keep(keep)
        self.recalled += count * self.page_size
        return out

    def spilled_positions(self) -> list[np.ndarray]:
        """Positions held per head, on disk and pending; reads only each page's positions."""
        n, D, Dv = self.page_size, self.head_dim, self.value_dim
        at = n * (D + 4 + Dv + 4)  # a page's positions follow its keys, values and scales
        out: list[list[np.ndarray]] = [[np.asarray(p.positions, np.int64)] for p in self.pending]
        if self.table.n:
            with open(self.path, "rb") as f:
                for head, offset in zip(self.table.head.tolist(), self.table.offset.tolist()):
                    f.seek(offset + at)
                    out[head].append(np.frombuffer(f.read(8 * n), np.int64))
        return [np.concatenate(parts) for parts in out]

    def stats(self) -> dict[str, int]:
        return {"pages": self.table.n, "disk_bytes": self.file_bytes, "live_bytes": self.live_bytes,
                "table_bytes": self.table.nbytes,
                "max_bytes": self.max_bytes, "spilled": self.spilled, "recalled": self.recalled,
                "dropped": self.dropped}

    def fork(self) -> "RecoveryStore":
        """A read-mostly copy for a side question: shares the file, never rewrites
        or deletes it, and keeps its own page list so recalls do not touch ours."""
        import copy

        twin = copy.copy(self)
        twin.table = self.table.copy()
        twin.pending = [Pending(list(p.positions), list(p.rotated_at), list(p.keys), list(p.values))
                        for p in self.pending]
        twin.owner = False
        twin.max_bytes = float("inf")
        return twin

    def close(self) -> None:
        if not self.owner:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def __del__(self) -> None:  # the spill file is scratch space, not user data
        self.close()
