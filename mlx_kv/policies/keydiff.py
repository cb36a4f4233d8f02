"""KeyDiff (Park et al. 2025, "KeyDiff: Key Similarity-Based KV Cache
Eviction for Long-Context LLM Inference"): keep the keys least like the
layer's average key.

A question-agnostic signal that needs no attention at all (the fused kernel
serves every call): keys that point where most keys point add little a
query could not find in their neighbours, distinctive ones are what a
later query may be looking for. The anchor is the mean of the head's live
keys, each normalised first, as the paper and kvpress compute it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlx_kv.policies.base import Policy, SlotView


@dataclass
class KeyDiff(Policy):
    name: ClassVar[str] = "keydiff"
    observes: ClassVar[str] = "none"

    @property
    def reads(self) -> tuple[str, ...]:
        return ("keys",)

    def score(self, view: SlotView) -> np.ndarray:
        keys = view.keys.astype(np.float32)  # (H, L, D), as cached (rotated)
        unit = keys / np.maximum(np.linalg.norm(keys, axis=-1, keepdims=True), 1e-6)
        alive = (view.positions >= 0)[..., None]
        anchor = (unit * alive).sum(axis=1) / np.maximum(alive.sum(axis=1), 1)
        anchor /= np.maximum(np.linalg.norm(anchor, axis=-1, keepdims=True), 1e-6)
        return -np.einsum("hld,hd->hl", unit, anchor)
