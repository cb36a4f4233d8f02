"""TOVA (Oren et al. 2024): rank keys by the attention of the latest query only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlx_kv.policies.base import Policy


@dataclass
class TOVA(Policy):
    name: ClassVar[str] = "tova"
    observes: ClassVar[str] = "last"

    def accumulate(self, acc, seen, weights, count):
        return weights, count

    def scores(self, acc, seen, positions, offset) -> np.ndarray:
        return acc
