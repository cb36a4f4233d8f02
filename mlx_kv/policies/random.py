"""Random eviction, the control every other policy must beat.

The score is a hash of (seed, position), so a token's fate does not depend
on when it was ranked and a run is reproducible."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlx_kv.policies.base import Policy, SlotView


@dataclass
class Random(Policy):
    name: ClassVar[str] = "random"
    observes: ClassVar[str] = "none"
    seed: int = 0

    def score(self, view: SlotView) -> np.ndarray:
        return hashed_uniform(view.positions, self.seed)


def hashed_uniform(positions: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (seed, position) mapped to [0, 1)."""
    with np.errstate(over="ignore"):
        x = positions.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
