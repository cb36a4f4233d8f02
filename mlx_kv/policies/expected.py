"""Expected attention (Devoto et al. 2025, "Expected Attention: KV Cache
Compression by Estimating Attention from Future Queries Distribution"):
keep the keys that the queries still to come are expected to attend to.

The queries seen so far, taken before RoPE, are summed into a Gaussian
(mean and covariance per query head); the next `future` positions' RoPE
rotations, averaged into one matrix, carry it to where those queries will
stand. A key's expected logit under that Gaussian is mu.k/sqrt(d) +
k'Sigma k/(2d); its softmax over the live keys, averaged over the heads of
its group and scaled by the value's norm, is its score (the paper's and
kvpress's recipe, with the statistics kept as running sums so a stream
needs no queries stored). Needs no attention weights: the fused kernel
serves every call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import mlx.core as mx
import numpy as np

from mlx_kv.policies.base import Policy, SlotView
from mlx_kv.positions import shift_keys, shift_keys_host


@dataclass
class ExpectedAttention(Policy):
    name: ClassVar[str] = "expected"
    observes: ClassVar[str] = "none"
    observes_queries: ClassVar[bool] = True
    future: int = 512  # how many positions ahead the averaged rotation looks
    covariance: bool = True
    vnorm: bool = True
    skip: int = 4  # queries at the first positions (attention sinks, outliers) stay out of the statistics

    def __post_init__(self) -> None:
        for name in ("future", "skip"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                setattr(self, name, int(value))  # (bench variants read numbers as floats)
        if not isinstance(self.future, int) or self.future < 1:
            raise ValueError(f"policy_args.future: must be a whole number >= 1, got {self.future}")
        if not isinstance(self.skip, int) or self.skip < 0:
            raise ValueError(f"policy_args.skip: must be a whole number >= 0, got {self.skip}")
        self._stats: dict[str, Any] = {}  # running query sums: this layer's, not a setting (not saved)

    @property
    def reads(self) -> tuple[str, ...]:
        return ("keys", "values")

    def fork(self) -> "ExpectedAttention":
        twin = replace(self)
        twin._stats = dict(self._stats)  # (mx arrays are immutable: sharing them is a copy)
        return twin

    def for_head(self, head: int, n_heads: int) -> "ExpectedAttention":
        twin = self.fork()
        if self._stats:  # the head's own query heads (its GQA group)
            group = self._stats["sum"].shape[0] // n_heads
            rows = slice(head * group, (head + 1) * group)
            twin._stats.update(sum=self._stats["sum"][rows], outer=self._stats["outer"][rows])
        return twin

    def observe_queries(self, queries: mx.array, base: int, rope: Any, positions: str) -> None:
        """Fold one call's queries (1, Hq, n, D), rotated at base, base+1, ...,
        into the running sums, un-rotated to position 0 first."""
        _, n_heads, n, dim = queries.shape
        q = queries[0].astype(mx.float32)
        if rope is not None:
            offsets = -(base + mx.arange(n, dtype=mx.int32))
            q = shift_keys(rope, q[None], mx.broadcast_to(offsets[None], (n_heads, n)))[0]
        if base < self.skip:
            q = q[:, min(n, self.skip - base):]
        s = self._stats
        sums = (q.sum(axis=1), mx.matmul(q.transpose(0, 2, 1), q), q.shape[1])
        if s:
            sums = (s["sum"] + sums[0], s["outer"] + sums[1], s["count"] + sums[2])
        s.update(sum=sums[0], outer=sums[1], count=sums[2], next=base + n, rope=rope, positions=positions)

    def _future_gaussian(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(Hq, D) mean and (Hq, D, D) covariance of the queries to come."""
        s = self._stats
        count = max(int(s["count"]), 1)
        mean = np.array(s["sum"]) / count
        cov = np.array(s["outer"]) / count - np.einsum("hi,hj->hij", mean, mean)
        if s["rope"] is not None:
            basis = mx.broadcast_to(mx.eye(dim)[:, None, :], (dim, self.future, dim))
            rotated = s["rope"](basis[None], offset=s["next"])[0]  # [m, l] = R(next + l) e_m
            r = np.array(rotated.mean(axis=1)).T  # the averaged rotation, column m its image of e_m
            mean = mean @ r.T
            cov = r @ cov @ r.T
        return mean, cov

    def score(self, view: SlotView) -> np.ndarray:
        keys, values = view.keys.astype(np.float32), view.values.astype(np.float32)  # (H, L, D)
        n_heads, _, dim = keys.shape
        alive = view.positions >= 0
        norms = np.linalg.norm(values, axis=-1) if self.vnorm else np.ones(alive.shape)
        if not self._stats:
            return norms if self.vnorm else np.zeros(alive.shape)
        if self._stats["positions"] == "cache" and self._stats["rope"] is not None:
            shift = np.where(alive, view.rank - view.rot, 0).astype(np.int32)  # where attention rotates each key
            keys = np.array(shift_keys_host(self._stats["rope"], mx.array(keys)[None], shift)[0])
        mean, cov = self._future_gaussian(dim)
        group = mean.shape[0] // n_heads
        k = np.repeat(keys, group, axis=0)  # (Hq, L, D)
        logits = np.einsum("hld,hd->hl", k, mean) / np.sqrt(dim)
        if self.covariance:
            logits += (np.matmul(k, cov) * k).sum(axis=-1) / (2 * dim)
        logits = np.where(np.repeat(alive, group, axis=0), logits, -np.inf)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        scores = weights.reshape(n_heads, group, -1).mean(axis=1)
        return scores * norms
