"""Value norm: keep the tokens whose values are largest.

Attention's output is a weighted sum of values, so a value with a small norm
moves it little whatever weight it gets; Guo et al. 2024 ("Attention Score
is not All You Need for Token Importance Indicator in KV Cache Reduction:
Value Also Matters") weigh attention by it, and expected attention
(Devoto et al. 2025) does too. Here the norm is the whole score: question-
agnostic, free of attention (the fused kernel serves every call) and of any
second pass, so it is the floor the costlier signals must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlx_kv.policies.base import Policy, SlotView


@dataclass
class ValueNorm(Policy):
    name: ClassVar[str] = "valuenorm"
    observes: ClassVar[str] = "none"

    @property
    def reads(self) -> tuple[str, ...]:
        return ("values",)

    def score(self, view: SlotView) -> np.ndarray:
        return np.linalg.norm(view.values.astype(np.float32), axis=-1)
