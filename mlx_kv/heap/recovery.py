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
file is rewritten with the rest.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Page:
    head: int
    offset: int  # byte offset in the file
    n: int
    positions: np.ndarray  # (n,) original positions
    rotated_at: np.ndarray  # (n,) position each key was rotated at
    key_min: np.ndarray  # (D,)
    key_max: np.ndarray  # (D,)


@dataclass
class Pending:
    positions: list = field(default_factory=list)
    rotated_at: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    values: list = field(default_factory=list)


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
        self.pages: list[Page] = []
        self.pending = [Pending() for _ in range(n_heads)]
        self.file_bytes = 0
        self.owner = True
        self.spilled = 0
        self.recalled = 0
        self.dropped = 0

    @property
    def page_bytes(self) -> int:
        return self.page_size * (self.head_dim + self.value_dim + 8)  # int8 K, V + two fp32 scales

    @property
    def live_bytes(self) -> int:
        return len(self.pages) * self.page_bytes

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
        with open(self.path, "ab") as f:
            offset = f.tell()
            f.write(kq.tobytes() + ks.tobytes() + vq.tobytes() + vs.tobytes())
        self.file_bytes = offset + self.page_bytes
        self.pages.append(Page(head, offset, n, np.asarray(pending.positions[:n], np.int64),
                               np.asarray(pending.rotated_at[:n], np.int64), k_deq.min(axis=0), k_deq.max(axis=0)))
        del pending.positions[:n], pending.rotated_at[:n], pending.keys[:n], pending.values[:n]

    def _read_page(self, page: Page) -> tuple[np.ndarray, np.ndarray]:
        n, D, Dv = page.n, self.head_dim, self.value_dim
        with open(self.path, "rb") as f:
            f.seek(page.offset)
            raw = f.read(self.page_bytes)
        at = 0
        kq = np.frombuffer(raw, np.int8, n * D, at).reshape(n, D); at += n * D
        ks = np.frombuffer(raw, np.float32, n, at).reshape(n, 1); at += 4 * n
        vq = np.frombuffer(raw, np.int8, n * Dv, at).reshape(n, Dv); at += n * Dv
        vs = np.frombuffer(raw, np.float32, n, at).reshape(n, 1)
        return dequantize_rows(kq, ks), dequantize_rows(vq, vs)

    def _shrink(self) -> None:
        """Drop the oldest pages until half the allowance is used, then rewrite the file."""
        keep_pages = max(0, (self.max_bytes // 2) // self.page_bytes)
        drop = len(self.pages) - keep_pages
        if drop > 0:
            self.dropped += drop * self.page_size
            self.pages = self.pages[drop:]
        self._rewrite()

    def _rewrite(self) -> None:
        blobs = []
        for page in self.pages:
            with open(self.path, "rb") as f:
                f.seek(page.offset)
                blobs.append(f.read(self.page_bytes))
        with open(self.path, "wb") as f:
            for page, blob in zip(self.pages, blobs):
                page.offset = f.tell()
                f.write(blob)
        self.file_bytes = len(self.pages) * self.page_bytes

    def upper_bounds(self, head: int, queries: np.ndarray) -> tuple[list[Page], np.ndarray]:
        """Pages of one head and, per page, the largest possible q.k over the queries (Q, D)."""
        pages = [p for p in self.pages if p.head == head]
        if not pages:
            return pages, np.zeros(0)
        lo = np.stack([p.key_min for p in pages])  # (P, D)
        hi = np.stack([p.key_max for p in pages])
        bound = np.maximum(queries[:, None, :] * lo[None], queries[:, None, :] * hi[None]).sum(-1)  # (Q, P)
        return pages, bound.max(axis=0)

    def recall(self, queries: np.ndarray, n_pages: int) -> list[tuple[np.ndarray, ...]] | None:
        """For each head the best `n_pages` pages for queries (H, Q, D), removed
        from the store: (positions, rotated_at, keys, values) per head; the same
        count for every head, or None when some head has none."""
        chosen = []
        for head in range(self.n_heads):
            pages, bound = self.upper_bounds(head, queries[head])
            chosen.append([pages[i] for i in np.argsort(-bound, kind="stable")[:n_pages]])
        count = min(len(c) for c in chosen)
        if count == 0:
            return None
        out = []
        for pages in chosen:
            pages = pages[:count]
            keys, values = zip(*(self._read_page(p) for p in pages))
            out.append((np.concatenate([p.positions for p in pages]), np.concatenate([p.rotated_at for p in pages]),
                        np.concatenate(keys), np.concatenate(values)))
            for p in pages:
                self.pages.remove(p)
        self.recalled += count * self.page_size
        return out

    def stats(self) -> dict[str, int]:
        return {"pages": len(self.pages), "disk_bytes": self.file_bytes, "live_bytes": self.live_bytes,
                "max_bytes": self.max_bytes, "spilled": self.spilled, "recalled": self.recalled,
                "dropped": self.dropped}

    def fork(self) -> "RecoveryStore":
        """A read-mostly copy for a side question: shares the file, never rewrites
        or deletes it, and keeps its own page list so recalls do not touch ours."""
        import copy

        twin = copy.copy(self)
        twin.pages = list(self.pages)
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
