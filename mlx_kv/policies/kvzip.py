"""Context reconstruction (KVzip, Kim et al. 2025), streamed through the heap.

Attention-based keep signals do not know, before the question, which fact
will be asked; on a real model they fall to the level of random eviction
(DESIGN.md). KVzip asks the model instead: after the context, it is made to
repeat the context, and a KV pair is worth keeping by the most attention any
repeating query pays it. Here every chunk is replayed as soon as it is read,
behind a "repeat" prompt, by queries that never enter the heap
(mlx_kv.replay), so the score exists before the budget is enforced and a
stream of any length can be scored chunk by chunk. A token keeps the score
its own chunk's replay gave it; `decay` < 1 lets older scores fade by that
factor at every later replay.

`scope="chunk"` lets a replaying query read only the sinks, its own chunk
and the replay itself (the keys its score is taken over anyway) instead of
the whole heap: the replay's attention then costs the same at any budget
and length, where reading the heap costs more the more it keeps.

`layers` > 0 replays through the lowest `layers` layers only (a fraction of
the replay's cost) and gives every higher layer, in all its heads, the most
any replayed layer's head paid each token: a token-level score where the
full replay has a per-head one.

`fraction` < 1 replays that share of each chunk's tokens, evenly spaced
(mlx_kv.replay.evenly_spaced): the replay costs that share of a forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mlx.core as mx
import numpy as np

from mlx_kv.policies.base import Policy, SlotView


@dataclass
class KVzip(Policy):
    name: ClassVar[str] = "kvzip"
    observes: ClassVar[str] = "none"  # the chunk's own attention is not needed: the fused kernel serves it
    replays: ClassVar[bool] = True
    decay: float = 1.0
    layers: int = 0  # replay through this many lowest layers; 0: all of them
    scope: str = "heap"  # what a replaying query reads: the whole heap, or "chunk": the sinks, its chunk, itself
    fraction: float = 1.0  # share of each chunk's tokens replayed, evenly spaced

    def __post_init__(self) -> None:
        if not 0.0 < float(self.decay) <= 1.0:
            raise ValueError(f"policy_args.decay: must be in (0, 1], got {self.decay}")
        if isinstance(self.layers, float) and self.layers.is_integer():
            self.layers = int(self.layers)  # (bench variants read numbers as floats)
        if not isinstance(self.layers, int) or self.layers < 0:
            raise ValueError(f"policy_args.layers: must be a whole number >= 0, got {self.layers}")
        if not 0.0 < float(self.fraction) <= 1.0:
            raise ValueError(f"policy_args.fraction: must be in (0, 1], got {self.fraction}")
        if self.scope not in ("heap", "chunk"):
            raise ValueError(f"policy_args.scope: must be 'heap' or 'chunk', got {self.scope!r}")

    @property
    def reads(self) -> tuple[str, ...]:
        return ("recon",)

    def fold_replay(self, folded: dict[str, mx.array], weights: mx.array) -> dict[str, mx.array]:
        old = folded["recon"] if self.decay == 1.0 else folded["recon"] * self.decay
        return {"recon": mx.maximum(old, weights)}

    def score(self, view: SlotView) -> np.ndarray:
        return view.recon
