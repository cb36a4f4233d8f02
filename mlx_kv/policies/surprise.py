"""Surprise (seed 003): keep what the model did not expect, not just what it looks at.

Each kept token's score blends two percentiles within its KV head: the
information signal (`signal="surprisal"`: -log p of the token at prefill;
`"entropy"`: the entropy of the prediction right after it, a forking point)
and mean attention as in H2O. `alpha` weighs information (1.0 = information
only, 0.0 = H2O). Tokens whose signal never arrived (a plain mlx_lm.generate
run feeds none) are ranked by attention alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlx_kv.policies.base import Policy, SlotView, mean_attention

SIGNALS = ("surprisal", "entropy")


@dataclass
class Surprise(Policy):
    name: ClassVar[str] = "surprise"
    observes: ClassVar[str] = "all"
    uses_info: ClassVar[bool] = True
    alpha: float = 0.5
    signal: str = "surprisal"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"policy_args.alpha: must be in [0, 1], got {self.alpha}")
        if self.signal not in SIGNALS:
            raise ValueError(f"policy_args.signal: must be one of {SIGNALS}, got {self.signal!r}")

    def score(self, view: SlotView) -> np.ndarray:
        alive = view.positions >= 0
        attention = percentiles(mean_attention(view.acc, view.seen), alive)
        signal = view.info[0] if self.signal == "surprisal" else view.info[1]
        known = alive & np.isfinite(signal)
        informed = percentiles(np.where(known, signal, -np.inf), known)
        blended = self.alpha * informed + (1.0 - self.alpha) * attention
        return np.where(known, blended, attention)


def percentiles(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each valid entry's rank within its row, scaled to [0, 1]."""
    masked = np.where(valid, values, -np.inf)
    ranks = masked.argsort(axis=1, kind="stable").argsort(axis=1).astype(np.float64)
    n_valid = valid.sum(axis=1, keepdims=True)
    n_invalid = valid.shape[1] - n_valid
    return np.where(valid, (ranks - n_invalid) / np.maximum(n_valid - 1, 1), 0.0)
