"""The one extension point every eviction policy shares.

A policy does two things: it folds the attention a layer just computed into
per-slot accumulators (on the device, lazily), and, at a collection, turns
those accumulators into a score per kept token (on the host). Higher scores
are kept. Everything else (tiers, budgets, masks, compaction) is the heap's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mlx.core as mx
import numpy as np


@dataclass
class Policy:
    name: ClassVar[str] = "base"
    # Which queries' attention the heap must compute for this policy:
    # "all" every query of a call, "window" the last `observation_window`
    # queries, "last" only the last query, "none" no attention at all.
    observes: ClassVar[str] = "all"
    # Whether scores() wants per-token information signals (surprisal, entropy).
    uses_info: ClassVar[bool] = False

    @property
    def observation_window(self) -> int:
        return 1

    def accumulate(
        self, acc: mx.array, seen: mx.array, weights: mx.array, count: mx.array
    ) -> tuple[mx.array, mx.array]:
        """Fold one call's attention (summed per slot) into the accumulators."""
        return acc + weights, seen + count

    def scores(
        self, acc: np.ndarray, seen: np.ndarray, positions: np.ndarray, offset: int
    ) -> np.ndarray:
        """Scores per (kv_head, slot); dead slots (position -1) are ignored."""
        raise NotImplementedError


def mean_attention(acc: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Attention per query that could see the key: old keys are not favoured
    just for having been visible longer."""
    return acc / np.maximum(seen, 1.0)
