"""TOVA (Oren et al. 2024): rank keys by the attention of the latest query only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mlx.core as mx
import numpy as np

from mlx_kv.policies.base import Policy, SlotView


@dataclass
class TOVA(Policy):
    name: ClassVar[str] = "tova"
    observes: ClassVar[str] = "last"

    def accumulate(self, folded: dict[str, mx.array], weights: mx.array, count: mx.array) -> dict[str, mx.array]:
        return {"acc": weights, "seen": count}

    def score(self, view: SlotView) -> np.ndarray:
        return view.acc
