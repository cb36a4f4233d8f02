"""One layer's slice of the generational heap, speaking mlx-lm's cache protocol.

Storage is a slot table (mlx_kv.heap.slots): keys and values shaped like
mlx-lm's KVCache's, plus per-(kv_head, slot) bookkeeping: the token's
original position (-1 once evicted), whether it is tenured, how many
collections it survived, and the policy's attention accumulators. This class
decides what happens to the slots; what to evict is the collector's and the
policy's, how keys are re-rotated is mlx_kv.positions'. Evicting marks a slot dead;
a decode token reuses a dead slot in place; the arrays are reallocated when
the dead fraction passes `compact_threshold` or a prefill chunk pushed the
capacity past the budget. With a threshold above zero steady-state decoding
copies nothing, but every step then pays for the dead-slot mask and scattered
writes; on the CPU compacting at every collection (threshold 0, the default)
measured faster, so the masked mode is kept as an option.

Collections happen at the end of `attend`, once the layer holds more than
its budget; they free `collect_batch` extra slots so the next ones are
`collect_batch` decode steps away (one host sync per batch, not per token).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from functools import partial
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import _BaseCache

from mlx_kv.attention import (attention_summary, grouped_attention, last_query_weights, masked_attention,
                              packed_cold_attention, query_block, replay_attention)
from mlx_kv.heap.cold import ColdTier, group_size_for
from mlx_kv.heap.collector import collect, compaction_order, noisy, protected_mask, tier_counts
from mlx_kv.heap.recovery import RecoveryStore, lost_note
from mlx_kv.heap.slots import SlotTable, slot_bytes
from mlx_kv.policies import POLICIES, Policy, SlotView
from mlx_kv.policies.base import mean_attention
from mlx_kv.positions import CacheShifts, check_rope, key_shifts, shift_keys_host

_STEP = 256
SETTLE_FOLDS_EVERY = 16  # decode steps whose attention sums may wait for one scheduled evaluation
COUNTERS = ("evictions", "promotions", "demotions", "compactions", "collections", "ranked", "recalls")  # saved


class HeapKVCache(_BaseCache):
    """A budgeted, evicting KV cache for one layer (batch size 1)."""

    def __init__(
        self,
        budget: int,
        *,
        sinks: int = 4,
        window: int = 64,
        tenured: int | None = None,
        promote_after: int = 2,
        major_every: int = 8,
        collect_batch: int | None = None,
        policy: Policy | None = None,
        compact_threshold: float = 0.0,
        rank_noise: float = 0.0,
        score_block: int = 256,
        score_every: int = 1,
        seed: int = 0,
        positions: str = "absolute",
        rope: Any = None,
        recovery: dict | None = None,
        cold_bits: int | None = None,
        adaptive: bool = False,
    ) -> None:
        if budget < sinks + window + 1:
            raise ValueError(
                f"budget: {budget} tokens is smaller than sinks + window + 1 = {sinks + window + 1}"
            )
        self.budget = int(budget)
        self.sinks = int(sinks)
        self.window = int(window)
        # what was asked (None: derived from the budget), so that set_budget derives them again
        self._asked = {"collect_batch": collect_batch, "tenured": tenured}
        self._fit_to_budget()
        self.promote_after = int(promote_after)
        self.major_every = int(major_every)
        self.policy = policy if policy is not None else POLICIES["h2o"]()
        self.compact_threshold = float(compact_threshold)
        self.rank_noise = float(rank_noise)
        self.score_block = int(score_block)
        if int(score_every) < 1:
            raise ValueError(f"score_every: must be a positive integer, got {score_every!r}")
        self.score_every = int(score_every)  # decode steps: explicit attention (scores) every Nth call, fused otherwise
        self.seed = int(seed)
        if positions not in ("absolute", "cache"):
            raise ValueError(f"positions: must be 'absolute' or 'cache', got {positions!r}")
        self.position_mode = positions
        self.rope = rope
        self.recovery = dict(recovery) if recovery else None
        if cold_bits is not None:  # (the ColdTier made in _reset validates it)
            self.compact_threshold = 0.0  # the cold tier is rebuilt at compactions, so compact at each one
        self.cold_bits = cold_bits
        self.adaptive = bool(adaptive)  # its budget is moved between layers by their scores (prompt_cache.rebalance)
        self.diagnostics_every = 16  # sample the last query's attention every N calls; 0 = never
        if positions == "cache" and rope is not None:
            check_rope(rope)
        self._reset()

    def _reset(self) -> None:
        # slots [0, hot0) of keys/values are the cold tier (quantized)
        self.slots = SlotTable(ColdTier(self.cold_bits) if self.cold_bits is not None else None)
        self.tokens_seen = 0
        self.end = 0
        self._live = 0
        self.shifts = key_shifts(self.position_mode)  # positions="cache": what each stored key is owed
        self._query_base = 0
        self._free: list[np.ndarray] = []  # dead slots to reuse, one (H,) column per token
        self.last_scores = np.zeros((0, 0))
        for name in COUNTERS:
            setattr(self, name, 0)
        self.collect_seconds = 0.0  # wall time in collections, waiting for scores included
        self.rank_seconds = 0.0  # choosing victims and re-tenuring only
        self._reused: np.ndarray | None = None
        self.store: RecoveryStore | None = None
        self.notes: list[str] = []  # one-line events for the user (the recovery tier lost its disk); drained by the session
        self._collect_pending = False
        self._info_fed = False
        self._replay: tuple[int, int, int] | None = None  # while a replay runs: its span's positions, tokens before it
        self._replay_expected = False  # a driver replays this heap's chunks (see expect_replay)
        # The first position of the tokens fed whose replay the driver put off
        # (nothing has needed their scores yet: generate.replay_when_needed); None: none owed.
        self.unreplayed_from: int | None = None
        self.calls = 0
        self._hidden: list[np.ndarray] | None = None  # per head, original positions kept stored but masked (hide)
        self.attention_stats: dict[str, mx.array] = {}  # sampled: entropy, top-1%/5% shares
        self._rng = np.random.default_rng(self.seed)

    # ----------------------------------------------------------- cache protocol
    @property
    def offset(self) -> int:
        """The position mlx-lm rotates the next token at: the absolute count of
        tokens seen, or (positions="cache") the number of tokens kept."""
        return self._live if self.position_mode == "cache" else self.tokens_seen

    def update_and_fetch(self, keys: mx.array, values: mx.array, *, rotated_at: int | None = None
                         ) -> tuple[mx.array, mx.array]:
        """`rotated_at`: where mlx-lm rotated these queries and keys, when
        that was not this heap's own offset (a head of a headwise layer: mlx-lm
        read the layer's offset, which is its first head's)."""
        if keys.shape[0] != 1:
            raise ValueError("the heap supports batch size 1 only")
        n_new = keys.shape[2]
        self._reused = None
        # where mlx-lm rotated these: the offset it read, before any collection below shrinks it
        self._query_base = self.offset if rotated_at is None else rotated_at
        if self._collect_pending and self._replay is None:
            self._collect_pending = False
            self._collect()
        if not self.slots.allocated:
            self._allocate(keys, values, n_new)
        if n_new == 1 and not self._free and self._live + 1 > self.budget:
            # Full: collect on the scores gathered so far, before the token lands,
            # freeing collect_batch slots so the next collection is that many steps away.
            self._collect(slack=True)
        if n_new == 1 and self._free and self.slots.cold is None:
            self._write_into_dead_slot(keys, values, self._free.pop())
        else:
            self._append(keys, values, n_new)
        self.tokens_seen += n_new
        return self._full_kv()

    def _full_kv(self) -> tuple[mx.array, mx.array]:
        """Keys and values of slots [0, end), the cold tier's dequantized."""
        slots, end = self.slots, self.end
        if not slots.hot0:  # every decode step: as cheap as KVCache's slice
            return slots.keys[..., :end, :], slots.values[..., :end, :]
        return slots.full("keys", end), slots.full("values", end)

    def attend(self, queries: mx.array, keys: mx.array, values: mx.array, *, scale: float, mask: Any = None) -> mx.array:
        """Attention over the live slots; feeds the policy; collects if over budget."""
        n_new = queries.shape[2]
        self.calls += 1
        first = None if self._reused is not None else self.end - n_new
        dead_bias = self.slots.bias[:, : self.end] if self._live < self.end else None
        if self._hidden is not None:
            dead_bias = self._hidden_bias(dead_bias)
        base = self._query_base - (self._live - n_new)
        packed = n_new == 1 and self.slots.hot0 and self._replay is None
        if not packed:  # (the packed path rotates the hot keys only)
            keys = self.shifts.keys(self.rope, self.slots, keys, self.end, base)
        policy = self.policy
        if self._replay is not None:
            return self._attend_replay(queries, keys, values, scale, dead_bias, first)
        if policy.observes_queries:
            policy.observe_queries(queries, self._query_base, self.rope, self.position_mode)
        blind = policy.observes == "none"
        scored = not (blind or (n_new == 1 and self.calls % self.score_every))
        sample = (scored or blind) and self.diagnostics_every > 0 and self.calls % self.diagnostics_every == 0
        weights = count = last_row = None
        if packed:
            out, weights, count, last_row = self._attend_packed_cold(queries, scale, dead_bias, scored, sample, base)
        elif not scored:
            out = masked_attention(queries, keys, values, scale, dead_bias)
            if sample:
                last_row = last_query_weights(queries, keys, scale, dead_bias)
        else:
            out, weights, count, last_row = grouped_attention(
                queries, keys, values, scale, first_query_slot=first, dead_bias=dead_bias,
                score_rows=policy.score_rows(n_new), block=query_block(self.score_block, queries.shape[1], self.end),
                keep_last_row=sample,
            )
        if sample:
            self.attention_stats = attention_summary(last_row, self._live)
        if blind and sample:
            # A policy that reads no attention leaves acc/seen unused: they
            # gather the dashboard's samples instead (sampled_attention).
            group = float(last_row.shape[1])
            self.slots.fold(self.end, partial(Policy.accumulate, policy), last_row.sum(axis=1),
                            mx.full(last_row[:, 0].shape, group))
        elif scored and weights is not None:
            # a decode step's weights were computed for its output: its sums
            # may wait, a few steps at most (each step's wait holds a row)
            settle = n_new > 1 or self.calls % SETTLE_FOLDS_EVERY == 0
            self.slots.fold(self.end, policy.accumulate, weights, count, settle)
        if self.store is not None and 1 < n_new <= self.recovery["recall_max_chunk"] and self.store.page_count:
            self._recall(queries, n_new)
        if self.live > self.budget:
            if n_new > 1 and ((self.policy.uses_info and self._info_fed) or (self.policy.replays and self._replay_expected)):
                # The chunk's surprisal is known only once the whole model ran,
                # its replay score once the replay ran: collect when they arrive
                # (set_token_info, end_replay) or at the next call. (A driver
                # that never feeds them gets collections on what there is.)
                self._collect_pending = True
            else:
                self._collect()
        return out

    # ------------------------------------------------------------------ replay
    @property
    def replaying(self) -> bool:
        """Whether a replay's scratch tokens are in the heap now (between begin_replay and end_replay)."""
        return self._replay is not None

    def expect_replay(self) -> None:
        """The driver will replay the chunks it feeds: a chunk's collection waits for its replay."""
        self._replay_expected = True

    def begin_replay(self, start: int, stop: int) -> None:
        """The next calls replay the tokens at positions [start, stop) (mlx_kv.replay):
        their queries attend as usual, fold KVzip's score into `recon`, and
        leave the heap as it was at end_replay."""
        self._replay = (start, stop, self.tokens_seen)

    def end_replay(self) -> None:
        """Forget the replay's tokens (their positions are not consumed); the
        chunk's collection waits for collect_pending (all of its spans replayed)."""
        if self._replay is None:
            return
        before = self._replay[2]
        self._replay = None
        self.trim(self.tokens_seen - before)

    def collect_pending(self) -> None:
        """The collection a chunk left waiting for its replay scores, now that they are in."""
        if self._collect_pending and not (self.policy.uses_info and self._info_fed):
            self._collect_pending = False
            if self.live > self.budget:
                self._collect()

    def candidates(self) -> tuple[np.ndarray, int]:
        """The policy's scores (H, m) of the tokens a collection may evict, and
        how many tokens per head it may not (sinks, the young window)."""
        pos = self.slots.positions[:, : self.end]
        protect = protected_mask(pos, self.tokens_seen, self.sinks, self.window)
        open_ = (pos >= 0) & ~protect
        scores = self._host_scores()
        return scores[open_].reshape(self.slots.n_heads, -1), int(protect[0].sum())

    def replay_scores(self, start: int, stop: int) -> mx.array:
        """(stop - start,) the most attention any head's replay paid each of the
        tokens at positions [start, stop) (all still held: their collection waited for the replay)."""
        index = self._span_slots(start, stop)
        return mx.take_along_axis(self.slots.recon[:, : self.end], index, axis=1).max(axis=0)

    def inherit_replay_scores(self, start: int, stop: int, scores: mx.array) -> None:
        """A layer the replay did not reach takes token-level scores for the
        tokens at positions [start, stop), in every head."""
        index = self._span_slots(start, stop)
        recon = self.slots.recon[:, : self.end]
        folded = {"recon": mx.take_along_axis(recon, index, axis=1)}
        new = self.policy.fold_replay(folded, mx.broadcast_to(scores[None], index.shape))["recon"]
        self.slots.recon[:, : self.end] = mx.put_along_axis(recon, index, new, axis=1)

    def _span_slots(self, start: int, stop: int) -> mx.array:
        """(H, stop - start) the slots holding positions [start, stop), in position
        order (a decode token may have taken a dead slot anywhere)."""
        pos = self.slots.positions[:, : self.end]
        key = np.where((pos >= start) & (pos < stop), pos, np.iinfo(pos.dtype).max)
        return mx.array(np.argsort(key, axis=1, kind="stable")[:, : stop - start].astype(np.int32))

    def _attend_replay(self, queries, keys, values, scale, dead_bias, first) -> mx.array:
        """A replay's attention: the output as usual, and for every slot the most
        attention a replaying query pays it, the softmax over the sinks, the
        chunk being replayed and the replay itself (KVzip's domain: a chunk's
        scores do not depend on what else the heap still holds)."""
        start, stop, replay_start = self._replay
        pos = self.slots.positions[:, : self.end]
        domain = (pos >= 0) & ((pos < self.sinks) | ((pos >= start) & (pos < stop)) | (pos >= replay_start))
        counts = domain.sum(axis=1)
        if getattr(self.policy, "scope", "heap") == "chunk" and counts.min() == counts.max():
            # The replay reads its domain only (every head holds all of it: the chunk waits for its
            # replay before collecting): those slots gathered, the replay's own last, as they are stored.
            m, n_new = int(counts[0]), queries.shape[2]
            index = mx.array(np.argsort(~domain, axis=1, kind="stable")[:, :m].astype(np.int32))
            gathered = [mx.take_along_axis(a, index[None, :, :, None], axis=2) for a in (keys, values)]
            out, scores = replay_attention(queries, *gathered, scale, None, mx.zeros(index.shape), first_query_slot=m - n_new,
                                           block=query_block(self.score_block, queries.shape[1], m))
            weights = mx.put_along_axis(mx.zeros(domain.shape, scores.dtype), index, scores, axis=1)
        else:
            bias = mx.array(np.where(domain, 0.0, -np.inf).astype(np.float32))
            out, weights = replay_attention(queries, keys, values, scale, dead_bias, bias, first_query_slot=first,
                                            block=query_block(self.score_block, queries.shape[1], self.end))
        self.slots.fold(self.end, lambda folded, w, _: self.policy.fold_replay(folded, w), weights, None)
        return out

    def hide(self, visible: np.ndarray) -> None:
        """Mask, per KV head, the live slots [0, end) where `visible` (H, end)
        is False: attention no longer sees them but nothing is freed. This is
        kvpress's way of giving heads different counts (it masks instead of
        evicting); the benchmarks use it to compare with that protocol, since
        the heap's own arrays keep one count for the heads of a layer."""
        pos = self.slots.positions[:, : self.end]
        self._hidden = [row[~seen & (row >= 0)] for row, seen in zip(pos, visible)]

    def _hidden_bias(self, bias: mx.array | None) -> mx.array:
        """-inf on the hidden tokens, found by position (compaction may have moved their slots)."""
        pos = self.slots.positions[:, : self.end]
        hide = np.stack([np.isin(row, hidden) for row, hidden in zip(pos, self._hidden)])
        extra = mx.array(np.where(hide, -np.inf, 0.0).astype(np.float32))
        return extra if bias is None else bias + extra

    def _attend_packed_cold(self, queries, scale, dead_bias, scored, sample, base):
        """A decode token over the cold tier's packed rows and the hot slots
        (attention.packed_cold_attention); positions="cache" rotates the
        queries for the packed keys instead of the keys (mlx_kv.positions)."""
        slots, cold, shifts = self.slots, self.slots.cold, self.shifts
        head_dim = slots.keys.shape[-1]
        hot_keys = shifts.hot_keys(self.rope, slots, slots.used("keys", self.end), self.end, base)
        return packed_cold_attention(
            queries, cold.rows["keys"], cold.rows["values"], hot_keys, slots.used("values", self.end),
            scale, bits=cold.bits, group_size=group_size_for(head_dim), dead_bias=dead_bias, scored=scored,
            keep_last_row=sample, cold_queries=shifts.cold_queries(self.rope, slots, queries, base))

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None):
        # `attend` builds its own masks; this serves code that bypasses the hook.
        if N == 1:
            return None
        if return_array or window_size is not None:
            return create_causal_mask(N, offset=self.end, window_size=window_size)
        return "causal"

    @property
    def state(self):
        if not self.slots.allocated:
            return []
        return {**self.slots.saved(self.end), "meta": self._meta_json()}

    @state.setter
    def state(self, v) -> None:
        """Load saved slots, counters and token count into this heap, under
        its own settings (from_state builds a heap with the saved ones)."""
        saved = _saved_dict(v)
        meta = json.loads(saved.pop("meta"))
        self._reset()
        self.slots = SlotTable.from_saved(saved, cold=self.slots.cold)
        self.end = self.slots.capacity
        self.tokens_seen = meta["offset"]
        self.unreplayed_from = meta.get("unreplayed_from")
        self._sync_from_positions()
        if self.recovery:  # spilled pages are scratch space: a restored heap starts a fresh store
            self.store = self._new_store()
        for name in COUNTERS:
            setattr(self, name, meta["counters"][name])
        if self.slots.cold is not None and self.end:
            # Saved dequantized; quantized again here (one more rounding per save/restore).
            compactions = self.compactions
            self._compact()
            self.compactions = compactions

    @classmethod
    def from_state(cls, state) -> "HeapKVCache":
        """A heap built from the settings saved with `state` (mlx-lm's
        load_prompt_cache calls this by class name)."""
        settings = json.loads(_saved_dict(state)["meta"])
        policy = POLICIES[settings.pop("policy")](**settings.pop("policy_args"))
        del settings["offset"], settings["counters"]  # the state's, not the heap's
        settings.pop("unreplayed_from", None)
        heap = cls(policy=policy, **settings)
        heap.state = state
        return heap

    def _settings(self) -> dict[str, Any]:
        """What __init__ needs to rebuild this heap, as saved with its state."""
        return {
            "budget": self.budget, "sinks": self.sinks, "window": self.window,
            "tenured": self._asked["tenured"], "promote_after": self.promote_after,
            "major_every": self.major_every, "collect_batch": self._asked["collect_batch"],
            "compact_threshold": self.compact_threshold, "rank_noise": self.rank_noise,
            "score_block": self.score_block, "score_every": self.score_every, "seed": self.seed, "positions": self.position_mode,
            "recovery": self.recovery, "cold_bits": self.cold_bits, "adaptive": self.adaptive,
        }

    def _meta_json(self) -> str:
        return json.dumps({
            **self._settings(), "policy": self.policy.name, "policy_args": asdict(self.policy),
            "offset": self.tokens_seen, "counters": {k: getattr(self, k) for k in COUNTERS},
            "unreplayed_from": self.unreplayed_from,
        })

    def split_heads(self, n_heads: int) -> list["HeapKVCache"]:
        """One one-head heap per KV head, each holding this heap's slots of its
        head under the same settings (seeds seed, seed + 1, ...): a head plan's
        layer is one heap until its heads must keep different counts
        (mlx_kv.heap.headwise), then becomes these."""
        saved = self.slots.saved(self.end) if self.slots.allocated else None
        meta = self._meta_json()
        heads = []
        for h in range(n_heads):
            head = HeapKVCache(policy=self.policy.for_head(h, n_heads), **{**self._settings(), "seed": self.seed + h})
            if saved is not None:
                head.state = {**self.slots.head_of(saved, h), "meta": meta}
            head.rope, head.diagnostics_every, head.calls = self.rope, self.diagnostics_every, self.calls
            head._replay_expected, head._info_fed = self._replay_expected, self._info_fed
            head._hidden = None if self._hidden is None else [self._hidden[h]]
            heads.append(head)
        if self.store is not None:  # (a heap that never evicted spilled nothing)
            self.store.close()
        return heads

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        """Forget the last n tokens (they are young, so still present)."""
        n = min(self.tokens_seen, n)
        if n <= 0 or not self.slots.allocated:
            return 0
        self.tokens_seen -= n
        if self.unreplayed_from is not None and self.unreplayed_from >= self.tokens_seen:
            self.unreplayed_from = None  # (what was owed is gone)
        gone = self.slots.positions[:, : self.end] >= self.tokens_seen
        self.slots.positions[:, : self.end][gone] = -1
        self.slots.tenured[:, : self.end][gone] = False
        self._sync_from_positions()
        return n

    def _sync_from_positions(self) -> None:
        """Rebuild the counters, free list and bias from `positions`."""
        old_end = self.end
        while self.end > 0 and (self.slots.positions[:, self.end - 1] < 0).all():
            self.end -= 1
        if self.end < old_end:
            self.slots.clear(self.end, old_end)  # slots from the end on hold their fills
        pos = self.slots.positions[:, : self.end]
        self._live = int((pos[0] >= 0).sum()) if len(pos) else 0
        dead = pos < 0
        n_dead = int(dead[0].sum()) if len(pos) else 0
        self._free = [np.array([np.flatnonzero(row)[i] for row in dead]) for i in range(n_dead - 1, -1, -1)]
        if self.slots.allocated:
            bias = np.zeros((self.slots.n_heads, self.slots.capacity), np.float32)
            bias[:, : self.end][dead] = -np.inf
            self.slots.bias = mx.array(bias)
            self.shifts.refresh(self.slots, self.end)

    def empty(self) -> bool:
        return not self.slots.allocated

    def size(self) -> int:
        return self.live

    @property
    def nbytes(self) -> int:
        """Bytes this layer holds: every slot field (keys, values, score
        accumulators, host bookkeeping), the cold tier and the RoPE shifts."""
        if not self.slots.allocated:
            return 0
        return self.slots.nbytes + self.shifts.nbytes(self.slots)

    @staticmethod
    def slot_bytes(head_dim: int, itemsize: int, positions: str = "absolute") -> int:
        """Bytes one slot of one KV head costs, everything counted (see nbytes)."""
        return slot_bytes(head_dim, itemsize) + (CacheShifts.bytes_per_slot(head_dim, itemsize) if positions == "cache" else 0)

    def set_token_info(self, start: int, surprisal: np.ndarray, entropy: np.ndarray) -> None:
        """Information signals for the tokens at positions start.. (see mlx_kv.information)."""
        self._info_fed = True
        if not self.slots.allocated:
            return
        pos = self.slots.positions[:, : self.end]
        index = pos - start
        hit = (index >= 0) & (index < len(surprisal))
        self.slots.info[0, :, : self.end][hit] = surprisal[index[hit]]
        self.slots.info[1, :, : self.end][hit] = entropy[index[hit]]
        if self._collect_pending:
            self._collect_pending = False
            self._collect()

    # ---------------------------------------------------------------- controls
    def set_budget(self, budget: int, *, now: bool = True) -> None:
        """Change the budget; shrinking collects and compacts at once (`now`),
        or leaves it to the next call over the budget, in batches, as a
        growing stream does (a head plan's small moves at decode steps)."""
        if budget < self.sinks + self.window + 1:
            raise ValueError(
                f"budget: {budget} tokens is smaller than sinks + window + 1 = {self.sinks + self.window + 1}"
            )
        shrinks = int(budget) < self.budget
        self.budget = int(budget)
        self._fit_to_budget()
        if not self.slots.allocated or not now:
            return
        if self.live > self.budget:
            self._collect()
        if shrinks and self.slots.capacity > self.budget:  # (growing frees nothing: no compaction)
            self._compact()

    def _fit_to_budget(self) -> None:
        """The batch a collection frees and the tenured cap, as the budget
        allows: a head plan's heads start at their floor (one slot of room)
        and grow, and must not keep collecting one slot at a time."""
        room = self.budget - self.sinks - self.window
        self.collect_batch = max(1, min(int(self._asked["collect_batch"] or default_collect_batch(self.budget)), room))
        tenured = self._asked["tenured"]
        self.tenured_cap = int(room // 4 if tenured is None else min(tenured, room))

    def set_policy(self, policy: Policy) -> None:
        """Switch policy; accumulated scores start again from zero."""
        self.policy = policy
        if not policy.replays:
            self.unreplayed_from = None  # (nothing will read the replay scores it owed)
        if self.slots.allocated:
            self.slots.reset_accumulators()

    # -------------------------------------------------------------- diagnostics
    @property
    def live(self) -> int:
        """Tokens kept per KV head (every head keeps the same count)."""
        return self._live

    def tier_counts(self) -> dict[str, int]:
        """Tokens per tier, counted on KV head 0 (all heads hold the same counts)."""
        return tier_counts(self.slots.positions[:1, : self.end], self.slots.tenured[:1, : self.end],
                           offset=self.tokens_seen, sinks=self.sinks, window=self.window)

    @property
    def cold_tokens(self) -> int:
        """Tokens per KV head stored in the quantized cold tier (0 without one)."""
        return self.slots.hot0

    def kept_positions(self) -> list[np.ndarray]:
        """Original positions kept by each KV head, in increasing order."""
        pos = self.slots.positions[:, : self.end]
        return [np.sort(row[row >= 0]) for row in pos]

    def cold_positions(self) -> list[np.ndarray]:
        """Original positions each KV head holds in the cold (quantized) tier, in increasing order."""
        pos = self.slots.positions[:, : self.slots.hot0]
        return [np.sort(row[row >= 0]) for row in pos]

    def spilled_positions(self) -> list[np.ndarray]:
        """Original positions each KV head holds on disk (the recovery tier; empty without one)."""
        if self.store is None:
            return [np.zeros(0, np.int64) for _ in range(self.slots.n_heads)]
        return self.store.spilled_positions()

    def sampled_attention(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, attention) per (kv_head, live slot): the attention its
        queries paid each token, per query that could see it (the policy's
        accumulators; for a policy that reads no attention, the dashboard's
        samples of the last query, one call in `diagnostics_every`)."""
        pos = self.slots.positions[:, : self.end]
        if not self.slots.allocated:
            return pos, np.zeros(pos.shape)
        acc, seen = (np.array(a[:, : self.end]) for a in (self.slots.acc, self.slots.seen))
        return pos, np.where((pos >= 0) & (seen > 0), mean_attention(acc, seen), np.nan)

    def token_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) per (kv_head, live slot) as the policy sees them now."""
        pos = self.slots.positions[:, : self.end]
        scores = self._host_scores()
        return pos, np.where(pos >= 0, scores, np.nan)

    # ---------------------------------------------------------------- internals
    def _allocate(self, keys: mx.array, values: mx.array, n_new: int) -> None:
        self.slots.allocate(self._capacity_for(n_new), keys=keys, values=values)
        if self.recovery:
            self.store = self._new_store()

    def _new_store(self) -> RecoveryStore | None:
        keys, values = self.slots.keys, self.slots.values
        try:
            return RecoveryStore.from_settings(self.recovery, keys.shape[1], keys.shape[3], values.shape[3])
        except OSError as exc:
            self.notes.append(lost_note(self.recovery.get("folder") or tempfile.gettempdir(), exc))
            return None

    def _drop_store(self, exc: OSError) -> None:
        """The spill file cannot be written or read (a full disk): evicted tokens
        are dropped from now on, as without the tier, and the user is told;
        never an error in the middle of a forward pass, which would leave the
        layers above this one a chunk behind it."""
        self.notes.append(lost_note(os.path.dirname(self.store.path), exc))
        self.store.close()  # frees what it held on the full disk
        self.store = None

    def _capacity_for(self, needed: int) -> int:
        """Grow in steps like KVCache, but never past the budget unless a
        prefill chunk needs it for the moment."""
        stepped = -(-needed // _STEP) * _STEP
        return max(needed, min(stepped, self.budget))

    def _grow(self, needed: int) -> None:
        self.slots.grow(self._capacity_for(needed))
        self.shifts.invalidate()

    def _make_room(self, n: int) -> None:
        """Room for n more slots at the end: reclaim dead slots first, then grow."""
        if self.end + n > self.slots.capacity:
            if self._live < self.end:
                self._compact(extra=n)
            if self.end + n > self.slots.capacity:
                self._grow(self.end + n)

    def _append(self, keys: mx.array, values: mx.array, n_new: int) -> None:
        self._make_room(n_new)
        start, stop = self.end, self.end + n_new
        self.slots.write_range(start, stop, keys=keys, values=values, positions=self.tokens_seen + np.arange(n_new))
        self.shifts.stamp_range(self.slots, start, stop, self._query_base, self._live)
        self.end = stop
        self._live += n_new

    def _write_into_dead_slot(self, keys: mx.array, values: mx.array, slots: np.ndarray) -> None:
        self.slots.write_slots(slots, keys=keys[0, :, 0, :], values=values[0, :, 0, :], positions=self.tokens_seen)
        self.shifts.stamp_slots(self.slots, slots, self._query_base, self._live)
        self._live += 1
        self._reused = slots

    def _host_scores(self) -> np.ndarray:
        return self.policy.score(SlotView(self.slots.host_view(self.end, self.policy.reads), self.tokens_seen))

    def _collect(self, slack: bool = False) -> None:
        """Evict down to the budget; with `slack` (decoding), collect_batch
        more, so decoding collects once per batch. A chunk's collection keeps
        exactly the budget: the next chunk collects anyway, and a document
        compressed once keeps what its budget says."""
        started = time.perf_counter()
        try:
            self._collect_inner(self.collect_batch if slack else 0)
        finally:
            self.collect_seconds += time.perf_counter() - started

    def _collect_inner(self, slack: int) -> None:
        end = self.end
        scores = self._host_scores()
        if self.rank_noise > 0:
            scores = noisy(scores, self.slots.positions[:, :end], self.rank_noise, self._rng)
        n_evict = self.live - (self.budget - slack)
        major = (self.collections + 1) % self.major_every == 0
        positions, tenured, survived = (a[:, :end] for a in (self.slots.positions, self.slots.tenured, self.slots.survived))
        before = positions.copy() if self.store is not None else None
        ranking_started = time.perf_counter()
        result = collect(
            positions, tenured, survived, scores,
            offset=self.tokens_seen, sinks=self.sinks, window=self.window, n_evict=n_evict,
            tenured_cap=self.tenured_cap, promote_after=self.promote_after, major=major,
        )
        self.rank_seconds += time.perf_counter() - ranking_started
        self.last_scores = scores
        n_victims = result.victims.shape[1]
        if n_victims and before is not None:
            self._spill(result.victims, before)
        if n_victims:
            self._live -= n_victims
            self.slots.bias[mx.array(np.repeat(np.arange(self.slots.n_heads), n_victims)),
                            mx.array(result.victims.reshape(-1))] = -mx.inf
            self._free.extend(result.victims[:, i] for i in range(n_victims - 1, -1, -1))
        self.shifts.refresh(self.slots, end)
        self.collections += 1
        self.evictions += result.victims.shape[1]
        self.promotions += result.promoted
        self.demotions += result.demoted
        self.ranked += result.ranked
        dead_fraction = 1.0 - self.live / max(1, end)
        if slack == 1 and n_victims <= 1 and self.slots.cold is None and self.slots.capacity <= self.budget:
            # A decode step that frees one slot for the token about to land
            # (a head at its floor, with one slot of room): the token takes
            # that slot, so compacting would copy the arrays at every step.
            return
        if dead_fraction > self.compact_threshold or self.slots.capacity > self.budget:
            self._compact()

    def _spill(self, victims: np.ndarray, positions: np.ndarray) -> None:
        rows = np.arange(victims.shape[0])[:, None]
        idx = mx.array(victims.astype(np.int32))[None, :, :, None]
        all_keys, all_values = self._full_kv()
        keys = np.array(mx.take_along_axis(all_keys, idx, axis=2)[0].astype(mx.float32))
        values = np.array(mx.take_along_axis(all_values, idx, axis=2)[0].astype(mx.float32))
        try:
            self.store.spill(positions[rows, victims], self.slots.rot[rows, victims], keys, values)
        except OSError as exc:
            self._drop_store(exc)

    def _recall(self, queries: mx.array, n_new: int) -> None:
        """Bring back the spilled pages this chunk's last queries may attend to."""
        H = self.slots.n_heads
        rows = min(self.recovery["query_rows"], n_new)
        q = np.array(queries[0, :, -rows:, :].astype(mx.float32))  # (Hq, rows, D)
        q = q.reshape(H, -1, q.shape[-1])  # the query heads of each KV head's group
        try:
            recalled = self.store.recall(q, self.recovery["recall_pages"])
        except OSError as exc:
            self._drop_store(exc)
            return
        if recalled is None:
            return
        scores = self._host_scores()
        alive = self.slots.positions[:, : self.end] >= 0
        seed_score = float(np.nanmax(np.where(alive, scores, np.nan))) if alive.any() else 0.0
        positions, rotated, keys, values = (np.stack(parts) for parts in zip(*recalled))
        n = positions.shape[1]
        self._make_room(n)
        start, stop = self.end, self.end + n
        # Recalled tokens start as the best kept token, so the next collection
        # keeps them; the queries that follow then score them for real.
        self.slots.write_range(
            start, stop, keys=mx.array(keys[None]).astype(self.slots.keys.dtype),
            values=mx.array(values[None]).astype(self.slots.values.dtype),
            acc=seed_score, seen=1.0, positions=positions, rot=rotated)
        self.end = stop
        self._live += n
        self.recalls += n
        self.shifts.refresh(self.slots, self.end)

    def _compact(self, extra: int = 0) -> None:
        """Reallocate the live slots contiguously, in position order, per head
        (with a cold tier: its tokens first, then the rest)."""
        end, live = self.end, self.live
        order, n_cold = compaction_order(
            self.slots.positions[:, :end], self.slots.tenured[:, :end], live=live, cold=self.slots.cold is not None,
            offset=self.tokens_seen, sinks=self.sinks, window=self.window)
        stamp = self.shifts.cold_stamp(self.slots, order, n_cold)
        self.slots.take(order, n_cold, self._capacity_for(max(live + extra, 1)), end, stamp, partial(shift_keys_host, self.rope))
        self._free = []
        self.shifts.stamped(self.slots, stamp)
        self.shifts.invalidate()
        self.end = live
        self.compactions += 1

def default_collect_batch(budget: int) -> int:
    """Slots a collection frees beyond the budget: budget/32, but at least
    budget/8 up to 16, 1..64. A collection's cost is mostly fixed (a host
    sync, the ranking, a compaction), so a small heap collecting every few
    steps pays it nearly every step: a retrieval split's ninety heads, most
    of them small, collected 19 times per decode step with budget/32."""
    return max(1, min(64, max(budget // 32, min(16, budget // 8))))


_LEGACY_STATE = ("keys", "values", "acc", "seen", "positions", "tenured", "survived", "rot", "info", "meta")


def _saved_dict(state) -> dict:
    """A saved state by field name; files written before states were dicts hold a tuple in this order."""
    return dict(state) if isinstance(state, dict) else dict(zip(_LEGACY_STATE, state))
