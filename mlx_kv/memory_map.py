"""What the heap still remembers of each turn: the spans a session fed, read
against the positions every (layer, KV head) pair keeps.

Why a summary over pairs: each layer and each KV head picks its own tokens
(the same count each), so "is this token kept?" has as many answers as there
are pairs. The share of pairs that keep a token says how much of the model
can still attend to it; a token no pair keeps is gone from memory. Cold
(quantized) and spilled (on disk) holdings are counted the same way.

Works on anything shaped like a list of mlx_kv.heap.HeapKVCache layers
(`kept_positions`, `cold_positions`, `spilled_positions`), so the fake engine
runs the same arithmetic; nothing here imports MLX.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from mlx_kv.events import MemoryMap, SpanMemory, TokenMemory


def holder_counts(layers: Sequence[Any], start: int, stop: int, *, tiers: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, int]:
    """For positions [start, stop): how many pairs keep each one, and with
    `tiers` how many hold it cold and how many on disk; plus the pair count."""
    n = max(0, stop - start)
    kept = np.zeros(n, np.int32)
    cold = np.zeros(n, np.int32) if tiers else None
    spilled = np.zeros(n, np.int32) if tiers else None
    pairs = 0
    for layer in layers:
        rows = layer.kept_positions()
        pairs += len(rows)
        for row in rows:
            _count_sorted(kept, row, start, stop)
        if tiers:
            for row in layer.cold_positions():
                _count_sorted(cold, row, start, stop)
            for row in layer.spilled_positions():
                row = np.asarray(row, np.int64)
                inside = row[(row >= start) & (row < stop)] - start
                spilled += np.bincount(inside, minlength=n).astype(np.int32)[:n]
    return kept, cold, spilled, pairs


def _count_sorted(counts: np.ndarray, row: np.ndarray, start: int, stop: int) -> None:
    """Add one for each position of a head's sorted, distinct positions inside [start, stop)."""
    lo, hi = np.searchsorted(row, [start, stop])
    if hi > lo:
        counts[np.asarray(row[lo:hi], np.int64) - start] += 1


def memory_map(layers: Sequence[Any], spans: Iterable[dict], tokens_seen: int, detail: Iterable[int] = (),
               texts: Callable[[int, int], list[str]] | None = None) -> MemoryMap:
    """The spans (dicts with kind, source, turn, start, stop) with the share
    of each that the heap keeps; spans whose index is in `detail` also get
    per-token shares and, through `texts(start, stop)`, their tokens' text."""
    spans = list(spans)
    heads = len(layers[0].kept_positions()) if len(layers) else 0
    if not spans or not len(layers):
        return MemoryMap(tokens_seen, len(layers), heads, ())
    kept, _, _, pairs = holder_counts(layers, 0, tokens_seen)
    wanted = set(detail)
    out = []
    for index, span in enumerate(spans):
        start, stop = int(span["start"]), min(int(span["stop"]), tokens_seen)
        share = float(kept[start:stop].sum()) / (pairs * (stop - start)) if stop > start and pairs else 0.0
        tokens = None
        if index in wanted and stop > start:
            k, c, s, _ = holder_counts(layers, start, stop, tiers=True)
            words = texts(start, stop) if texts is not None else [""] * (stop - start)
            tokens = TokenMemory(tuple(words), _shares(k, pairs), _shares(c, pairs), _shares(s, pairs))
        out.append(SpanMemory(span["kind"], span.get("source", ""), int(span.get("turn", -1)),
                              start, stop, share, tokens))
    return MemoryMap(tokens_seen, len(layers), heads, tuple(out))


def _shares(counts: np.ndarray, pairs: int) -> tuple[float, ...]:
    return tuple(np.round(counts / max(1, pairs), 4).tolist())
