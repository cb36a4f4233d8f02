"""The one extension point every eviction policy shares.

A policy does two things: it folds the attention a layer just computed into
per-slot accumulators (on the device, lazily), and, at a collection, turns
what it reads of the layer (a SlotView) into a score per kept token (on the
host). Higher scores are kept. Everything else (tiers, budgets, masks,
compaction) is the heap's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Mapping

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class SlotView:
    """A layer as a policy sees it at a collection, slots [0, end) on the host.

    Every per-slot field of the heap's slot table (mlx_kv.heap.slots) that a
    policy may read is an attribute by its declared name: the accumulators
    `acc` and `seen` (host copies; zeros for a policy that observes nothing),
    `positions` (-1 on dead slots), `info` (surprisal and entropy, nan where
    unknown), `tenured`, `survived`; a field declared there later appears
    here without a change. `tokens_seen` is how many tokens the layer saw.
    """

    slots: Mapping[str, np.ndarray]
    tokens_seen: int

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name == "slots":
            raise AttributeError(name)
        try:
            return self.slots[name]
        except KeyError:
            raise AttributeError(f"SlotView has no slot field {name!r}") from None


@dataclass
class Policy:
    name: ClassVar[str] = "base"
    # Which queries' attention the heap must compute for this policy:
    # "all" every query of a call, "window" the last `observation_window`
    # queries, "last" only the last query, "none" no attention at all.
    observes: ClassVar[str] = "all"
    # Whether score() reads the information signals (surprisal, entropy):
    # the driver then computes them, and the heap waits for a chunk's.
    uses_info: ClassVar[bool] = False

    # Whether score() reads the scores a replay of each chunk gives (mlx_kv.replay):
    # the driver then replays every chunk, and the heap collects after the replay.
    replays: ClassVar[bool] = False

    # Whether the heap hands every call's queries to observe_queries (a model of the queries to come).
    observes_queries: ClassVar[bool] = False

    @property
    def observation_window(self) -> int:
        return 1

    @property
    def reads(self) -> tuple[str, ...]:
        """The accumulators score() reads (copied to the host at a collection)."""
        return () if self.observes == "none" else ("acc", "seen")

    def score_rows(self, n_queries: int) -> tuple[int, int]:
        """The half-open range of a call's query rows whose attention is folded."""
        if self.observes == "last":
            return n_queries - 1, n_queries
        if self.observes == "window":
            return max(0, n_queries - self.observation_window), n_queries
        return 0, n_queries

    def accumulate(self, folded: dict[str, mx.array], weights: mx.array, count: mx.array) -> dict[str, mx.array]:
        """Fold one call's attention (weights summed per slot, and how many
        queries could see each slot) into the accumulators, by field name."""
        return {"acc": folded["acc"] + weights, "seen": folded["seen"] + count}

    def fold_replay(self, folded: dict[str, mx.array], weights: mx.array) -> dict[str, mx.array]:
        """Fold a replay's attention (the most any replayed query paid each slot) into the accumulators."""
        return {}

    def fork(self) -> "Policy":
        """The same policy for a copy of the heap (prompt_cache.clone_heap):
        its settings, and whatever it learned that no slot field holds."""
        return replace(self)

    def for_head(self, head: int, n_heads: int) -> "Policy":
        """The policy of KV head `head` of `n_heads` when a layer's heap
        splits into one heap per head (HeapKVCache.split_heads)."""
        return replace(self)

    def observe_queries(self, queries: mx.array, base: int, rope: Any, positions: str) -> None:
        """One call's queries (1, Hq, n, D), rotated by `rope` at positions base,
        base+1, ... of the heap's `positions` frame ("absolute" or "cache")."""

    def score(self, view: SlotView) -> np.ndarray:
        """Scores per (kv_head, slot); dead slots (position -1) are ignored."""
        raise NotImplementedError


def mean_attention(acc: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Attention per query that could see the key: old keys are not favoured
    just for having been visible longer."""
    return acc / np.maximum(seen, 1.0)
