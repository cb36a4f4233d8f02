"""SnapKV (Li et al. 2024): the last queries of each chunk ("observation
window") vote for the keys to keep; votes are max-pooled over neighbouring
positions so a kept token brings its immediate context along."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlx_kv.policies.base import Policy, SlotView, mean_attention


@dataclass
class SnapKV(Policy):
    name: ClassVar[str] = "snapkv"
    observes: ClassVar[str] = "window"
    window: int = 32
    kernel: int = 7

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"policy_args.window: must be >= 1, got {self.window}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"policy_args.kernel: must be odd and >= 1, got {self.kernel}")

    @property
    def observation_window(self) -> int:
        return self.window

    def score(self, view: SlotView) -> np.ndarray:
        return max_pool_by_position(mean_attention(view.acc, view.seen), view.positions, self.kernel)


def max_pool_by_position(values: np.ndarray, positions: np.ndarray, kernel: int) -> np.ndarray:
    """Max-pool each row over its slots taken in position order (slots may be
    stored out of order once evicted slots are reused); dead slots take no part."""
    if kernel <= 1:
        return values
    alive = positions >= 0
    order = np.argsort(np.where(alive, positions, np.iinfo(positions.dtype).max), axis=1, kind="stable")
    ordered = np.take_along_axis(np.where(alive, values, -np.inf), order, axis=1)
    pooled = ordered.copy()
    for shift in range(1, kernel // 2 + 1):
        pooled[:, shift:] = np.maximum(pooled[:, shift:], ordered[:, :-shift])
        pooled[:, :-shift] = np.maximum(pooled[:, :-shift], ordered[:, shift:])
    result = np.empty_like(pooled)
    np.put_along_axis(result, order, pooled, axis=1)
    return np.where(alive, result, values)
