"""Heavy hitters (H2O, Zhang et al. 2023): keep keys that collect the most
attention, here normalised by how many queries could see each key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlx_kv.policies.base import Policy, SlotView, mean_attention


@dataclass
class H2O(Policy):
    name: ClassVar[str] = "h2o"
    observes: ClassVar[str] = "all"

    def score(self, view: SlotView) -> np.ndarray:
        return mean_attention(view.acc, view.seen)
