"""One layer whose KV heads keep different counts: a heap per KV head.

The heap's arrays are rectangular per layer, (1, H, slots, D), so every KV
head of a layer keeps the same number of tokens. KVzip (and kvpress's
AdaKV) rank (layer, head, token) triples together and give heads unequal
counts, which on the model of record is what keeps a needle at 87.5%
removed (README, retention); kvpress does it by masking, which frees
nothing. Here each KV head is its own one-head HeapKVCache, with the query
heads of its GQA group: every per-head piece of the heap (causal masks,
collections, the cold tier, positions="cache", recovery pages) works as
it does for one head, and `prompt_cache.rebalance` moves budget between
all (layer, head) heaps by their replay scores. Bytes held are exactly the
heads' kept tokens. The price is H heap calls per layer instead of one.

With a `HeadPlan` (allocation="retrieval") the counts are fixed by each KV
head's measured retrieval score instead (mlx_kv.retrieval, DuoAttention's
split without its training): no replay, any policy. No head is given more
than the tokens seen so far, so a short stream is not starved in the heads
that copy while others sit on budget they cannot use. Until the layer has
seen more tokens than its mean budget every head keeps all it has seen, so
the layer stays one heap of all its heads (one attention call, as a plain
heap: a short session pays nothing for the plan) and splits into one-head
heaps (`HeapKVCache.split_heads`) when the first head must evict. A layer
whose budgets the replay moves (allocation="headwise") is one heap in the
same way until its first eviction.

Quantities the rest of the project reads per layer ("tokens kept per KV
head": live, budget, tier counts, counters) are the heads' means, so a
layer of this class reads like a HeapKVCache of its average head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import _BaseCache

from mlx_kv.budget import allocate_capped
from mlx_kv.heap.layer import COUNTERS, HeapKVCache
from mlx_kv.policies import Policy

# what the rest of the project reads or sets on a layer, and every head holds alike
_SHARED = ("tokens_seen", "offset", "sinks", "window", "policy", "adaptive", "position_mode", "rope",
           "collect_batch", "diagnostics_every", "unreplayed_from")


@dataclass(frozen=True)
class HeadPlan:
    """Fixed per-head shares: `weights` (layers x KV heads), this layer's row
    `layer`. Every layer of a model holds the same table and the same mean
    budget, so each computes the whole model's split by itself."""

    weights: tuple[tuple[float, ...], ...]
    layer: int

    def budgets(self, mean: int, seen: int, minimum: int) -> tuple[list[int], bool]:
        """This layer's head budgets: the model's total (`mean` per head)
        split by weight, none above max(seen, minimum); and whether any head
        of the model is at that cap (if none is, more tokens change nothing)."""
        cap = max(seen, minimum)
        parts = _split(self.weights, mean, cap, minimum)
        return list(parts[self.layer]), max(map(max, parts)) >= cap

    def to_json(self) -> str:
        return json.dumps({"weights": self.weights, "layer": self.layer})

    @classmethod
    def from_json(cls, text: str) -> "HeadPlan":
        saved = json.loads(text)
        return cls(tuple(tuple(float(w) for w in row) for row in saved["weights"]), int(saved["layer"]))


@lru_cache(maxsize=4)
def _split(weights: tuple[tuple[float, ...], ...], mean: int, cap: int, minimum: int) -> tuple[tuple[int, ...], ...]:
    """The whole model's split, computed once per step for all its layers."""
    table = np.asarray(weights)
    parts = allocate_capped(mean * table.size, table, minimum, cap).reshape(table.shape)
    return tuple(tuple(int(b) for b in row) for row in parts)


class HeadwiseKVCache(_BaseCache):
    """A layer of one-head heaps, one per KV head, speaking the heap's protocol."""

    def __init__(self, heads: list[HeapKVCache], plan: HeadPlan | None = None, mean_budget: int | None = None,
                 kv_heads: int | None = None) -> None:
        if not heads:
            raise ValueError("a headwise layer needs at least one KV head")
        if kv_heads is None:
            kv_heads = len(plan.weights[plan.layer]) if plan is not None else len(heads)
        if len(heads) not in (1, kv_heads):  # (one heap of every head: see `joint`)
            raise ValueError(f"a head plan for {kv_heads} KV heads given {len(heads)}")
        object.__setattr__(self, "kv_heads", kv_heads)
        object.__setattr__(self, "heads", list(heads))
        object.__setattr__(self, "_fetched", None)
        object.__setattr__(self, "_notes", [])
        object.__setattr__(self, "plan", plan)
        if mean_budget is None:
            mean_budget = _mean(head.budget for head in heads)
        object.__setattr__(self, "mean_budget", int(mean_budget))  # the plan's total / heads
        object.__setattr__(self, "_planned", None)  # (mean, seen) the heads' budgets were last set for
        if plan is not None:
            self._follow_plan(self.tokens_seen)

    def _follow_plan(self, seen: int, now: bool = True) -> None:
        """Set the heads' budgets by the plan for `seen` tokens (`now`: a head
        that shrinks collects at once; else at its next call over budget)."""
        minimum = self.sinks + self.window + 1
        if self.joint:
            if max(seen, minimum) <= self.mean_budget:  # every head keeps all it has seen (allocate_capped)
                if self.heads[0].budget != self.mean_budget:
                    self.heads[0].set_budget(self.mean_budget, now=now)
                return
            self.split()
        planned = self._planned  # (mean, seen) last set for; seen None: no head was capped, so any more seen
        if planned is not None and planned[0] == self.mean_budget and planned[1] in (seen, None):
            return
        budgets, capped = self.plan.budgets(self.mean_budget, seen, minimum)
        for head, budget in zip(self.heads, budgets):
            if head.budget != budget:
                head.set_budget(budget, now=now)
        object.__setattr__(self, "_planned", (self.mean_budget, seen if capped else None))

    @property
    def joint(self) -> bool:
        """Whether one heap holds every KV head of the layer (before any head's count must differ)."""
        return len(self.heads) < self.kv_heads

    def split(self) -> None:
        """Become one one-head heap per KV head (HeapKVCache.split_heads), as an eager layer is built."""
        if not self.joint:
            return
        self._notes.extend(self.heads[0].notes)
        stats = self.heads[0].attention_stats
        object.__setattr__(self, "heads", self.heads[0].split_heads(self.kv_heads))
        self.heads[0].attention_stats = stats  # (the joint heap's, every head's: read concatenated)

    def __getattr__(self, name: str) -> Any:  # settings every head shares, read from the first
        if name in _SHARED:
            return getattr(self.heads[0], name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:  # ... and written to every head
        if name in _SHARED:
            for head in self.heads:
                setattr(head, name, value)
        else:
            object.__setattr__(self, name, value)

    # ----------------------------------------------------------- cache protocol
    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if keys.shape[1] != self.kv_heads:
            raise ValueError(f"a headwise layer of {self.kv_heads} KV heads got keys for {keys.shape[1]}")
        # mlx-lm rotated these at the layer's offset, its first head's (positions="cache": its count
        # kept); heads that keep other counts owe their keys the difference (mlx_kv.positions)
        rotated = self.offset
        if self.plan is not None and not self.heads[0].replaying:  # (a replay's tokens are trimmed away)
            # A chunk's collection must come before its attention (which may
            # be a question's); a decode step's small moves wait for the
            # heads' own batched collections.
            self._follow_plan(self.tokens_seen + keys.shape[2], now=keys.shape[2] > 1)
        elif self.joint and not self.heads[0].replaying and self.heads[0].live + keys.shape[2] > self.heads[0].budget:
            self.split()  # (without a plan: before the first eviction, which each head makes on its own)
        if self.joint:
            self._fetched = [self.heads[0].update_and_fetch(keys, values, rotated_at=rotated)]
        else:
            self._fetched = [head.update_and_fetch(keys[:, i:i + 1], values[:, i:i + 1], rotated_at=rotated)
                             for i, head in enumerate(self.heads)]
        return keys, values  # (attend reads each head's own fetch)

    def attend(self, queries: mx.array, keys: mx.array, values: mx.array, *, scale: float, mask: Any = None) -> mx.array:
        fetched, self._fetched = self._fetched, None
        if self.joint:
            return self.heads[0].attend(queries, *fetched[0], scale=scale, mask=mask)
        group = queries.shape[1] // len(self.heads)  # mlx-lm's GQA: query head q reads KV head q // group
        outs = [head.attend(queries[:, i * group:(i + 1) * group], k, v, scale=scale, mask=mask)
                for i, (head, (k, v)) in enumerate(zip(self.heads, fetched))]
        return mx.concatenate(outs, axis=1)

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None):
        return self.heads[0].make_mask(N, return_array, window_size)

    @property
    def state(self):
        heads = [head.state for head in self.heads]
        if self.plan is None and not self.joint:
            return heads
        saved = {"heads": heads, "kv_heads": str(self.kv_heads)}
        if self.plan is not None:
            saved.update(plan=self.plan.to_json(), mean_budget=str(self.mean_budget))
        return saved

    @state.setter
    def state(self, v) -> None:
        for head, saved in zip(self.heads, v["heads"] if isinstance(v, dict) else v):
            head.state = saved

    @classmethod
    def from_state(cls, state) -> "HeadwiseKVCache":
        if not isinstance(state, dict):
            return cls([HeapKVCache.from_state(saved) for saved in state])
        plan = HeadPlan.from_json(state["plan"]) if "plan" in state else None
        return cls([HeapKVCache.from_state(saved) for saved in state["heads"]], plan,
                   int(state["mean_budget"]) if "mean_budget" in state else None,
                   int(state["kv_heads"]) if "kv_heads" in state else None)

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        return min(head.trim(n) for head in self.heads)

    def empty(self) -> bool:
        return self.heads[0].empty()

    def size(self) -> int:
        return self.live

    @property
    def nbytes(self) -> int:
        return sum(head.nbytes for head in self.heads)

    # ---------------------------------------------------------------- counts
    @property
    def live(self) -> int:
        """Tokens kept per KV head, the heads' mean (each keeps its own count)."""
        return _mean(head.live for head in self.heads)

    @property
    def budget(self) -> int:
        """The mean budget per head (with a plan, what the plan splits: capped heads may hold less)."""
        return self.mean_budget if self.plan is not None else _mean(head.budget for head in self.heads)

    @property
    def cold_tokens(self) -> int:
        return _mean(head.cold_tokens for head in self.heads)

    @property
    def collect_seconds(self) -> float:
        return sum(head.collect_seconds for head in self.heads)

    @property
    def rank_seconds(self) -> float:
        return sum(head.rank_seconds for head in self.heads)

    @property
    def attention_stats(self) -> dict[str, mx.array]:
        stats = [head.attention_stats for head in self.heads if head.attention_stats]
        return {key: mx.concatenate([s[key].reshape(-1) for s in stats]) for key in stats[0]} if stats else {}

    @property
    def notes(self) -> list[str]:
        """The heads' one-line events, each once (take_notes clears this list)."""
        for head in self.heads:
            self._notes.extend(note for note in head.notes if note not in self._notes)
            head.notes.clear()
        return self._notes

    def tier_counts(self) -> dict[str, int]:
        counts = [head.tier_counts() for head in self.heads]
        return {tier: _mean(c[tier] for c in counts) for tier in counts[0]}

    def kept_positions(self) -> list[np.ndarray]:
        return [row for head in self.heads for row in head.kept_positions()]

    def cold_positions(self) -> list[np.ndarray]:
        return [row for head in self.heads for row in head.cold_positions()]

    def spilled_positions(self) -> list[np.ndarray]:
        return [row for head in self.heads for row in head.spilled_positions()]

    def token_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) (H, slots) as HeapKVCache's, each head's row
        padded to the longest with dead slots (-1, nan)."""
        return _stacked([head.token_scores() for head in self.heads])

    def sampled_attention(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, attention) (H, slots) as HeapKVCache's, padded as token_scores."""
        return _stacked([head.sampled_attention() for head in self.heads])

    # -------------------------------------------------------------- controls
    def set_budget(self, budget: int) -> None:
        """Move every head's budget by the change of the mean (their differences
        stay), or with a plan split the new mean by it."""
        if self.plan is not None:
            object.__setattr__(self, "mean_budget", int(budget))
            self._follow_plan(self.tokens_seen)
            return
        delta = int(budget) - self.budget
        minimum = self.sinks + self.window + 1
        for head in self.heads:
            head.set_budget(max(minimum, head.budget + delta))

    def set_policy(self, policy: Policy) -> None:
        for head in self.heads:
            head.set_policy(replace(policy))

    def set_token_info(self, start: int, surprisal: np.ndarray, entropy: np.ndarray) -> None:
        for head in self.heads:
            head.set_token_info(start, surprisal, entropy)

    def hide(self, visible: np.ndarray) -> None:
        if self.joint:
            self.heads[0].hide(visible[:, : self.heads[0].end])
            return
        for head, row in zip(self.heads, visible):
            head.hide(row[None, : head.end])

    # ---------------------------------------------------------------- replay
    def expect_replay(self) -> None:
        for head in self.heads:
            head.expect_replay()

    def begin_replay(self, start: int, stop: int) -> None:
        for head in self.heads:
            head.begin_replay(start, stop)

    def end_replay(self) -> None:
        for head in self.heads:
            head.end_replay()

    def collect_pending(self) -> None:
        for head in self.heads:
            head.collect_pending()

    def replay_scores(self, start: int, stop: int) -> mx.array:
        return mx.stack([head.replay_scores(start, stop) for head in self.heads]).max(axis=0)

    def inherit_replay_scores(self, start: int, stop: int, scores: mx.array) -> None:
        for head in self.heads:
            head.inherit_replay_scores(start, stop, scores)


HEAP_LAYERS = (HeapKVCache, HeadwiseKVCache)  # what a model's heap list holds per layer


def heaps(cache: list) -> list:
    """Every heap of a cache list, a headwise layer's heads one by one: the
    units whose budgets rebalance moves and whose stores hold spilled pages."""
    return [unit for layer in cache for unit in getattr(layer, "heads", (layer,))]


def _mean(values) -> int:
    values = list(values)
    return int(round(sum(values) / len(values)))


for _name in COUNTERS:  # per-head counters read as the heads' mean
    setattr(HeadwiseKVCache, _name, property(lambda self, n=_name: _mean(getattr(h, n) for h in self.heads)))


def _stacked(found: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One-head (positions, values) rows as one (H, slots) pair, each padded to the longest with dead slots."""
    width = max(pos.shape[1] for pos, _ in found)
    pad = lambda a, fill: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)
    return (np.concatenate([pad(pos, -1) for pos, _ in found]),
            np.concatenate([pad(values.astype(np.float64), np.nan) for _, values in found]))
