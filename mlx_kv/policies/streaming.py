"""StreamingLLM (Xiao et al. 2024): sinks plus the most recent tokens; the
score is simply recency, so no attention is computed for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlx_kv.policies.base import Policy, SlotView


@dataclass
class Streaming(Policy):
    name: ClassVar[str] = "streaming"
    observes: ClassVar[str] = "none"

    def score(self, view: SlotView) -> np.ndarray:
        return view.positions.astype(np.float64)
