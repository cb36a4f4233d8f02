"""One layer's slice of the generational heap, speaking mlx-lm's cache protocol.

Storage is one (1, H, capacity, D) array for keys and one for values, like
mlx-lm's KVCache, plus per-(kv_head, slot) bookkeeping: the token's original
position (-1 once evicted), whether it is tenured, how many collections it
survived, and the policy's attention accumulators. Evicting marks a slot dead;
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
import time
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.base import create_causal_mask

from mlx_kv.attention import grouped_attention
from mlx_kv.heap.cold import ColdTier
from mlx_kv.heap.collector import collect, protected_mask
from mlx_kv.heap.recovery import RecoveryStore
from mlx_kv.policies import POLICIES, Policy
from mlx_kv.positions import check_rope, ranks, shift_keys

_STEP = 256


class HeapKVCache:
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
        seed: int = 0,
        positions: str = "absolute",
        rope: Any = None,
        recovery: dict | None = None,
        cold_bits: int | None = None,
    ) -> None:
        if budget < sinks + window + 1:
            raise ValueError(
                f"budget: {budget} tokens is smaller than sinks + window + 1 = {sinks + window + 1}"
            )
        self.budget = int(budget)
        self.sinks = int(sinks)
        self.window = int(window)
        room = self.budget - self.sinks - self.window
        self.collect_batch = int(collect_batch or max(1, min(64, self.budget // 32)))
        self.collect_batch = max(1, min(self.collect_batch, room))
        self.tenured_cap = int(room // 4 if tenured is None else min(tenured, room))
        self.promote_after = int(promote_after)
        self.major_every = int(major_every)
        self.policy = policy if policy is not None else POLICIES["h2o"]()
        self.compact_threshold = float(compact_threshold)
        self.rank_noise = float(rank_noise)
        self.score_block = int(score_block)
        self.seed = int(seed)
        if positions not in ("absolute", "cache"):
            raise ValueError(f"positions: must be 'absolute' or 'cache', got {positions!r}")
        self.position_mode = positions
        self.rope = rope
        self.recovery = dict(recovery) if recovery else None
        if cold_bits is not None:  # (the ColdTier made in _reset validates it)
            self.compact_threshold = 0.0  # the cold tier is rebuilt at compactions, so compact at each one
        self.cold_bits = cold_bits
        self.diagnostics_every = 16  # sample the last query's attention every N calls; 0 = never
        if positions == "cache" and rope is not None:
            check_rope(rope)
        self._reset()

    def _reset(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.tokens_seen = 0
        self.end = 0
        self.positions = np.zeros((0, 0), dtype=np.int64)
        self.tenured = np.zeros((0, 0), dtype=bool)
        self.survived = np.zeros((0, 0), dtype=np.int32)
        self.acc: mx.array | None = None
        self.seen: mx.array | None = None
        self.bias: mx.array | None = None  # (H, capacity): 0 on live slots, -inf on dead ones
        self._live = 0
        # positions="cache": where each stored key was rotated, and its rank now
        self._rot = np.zeros((0, 0), dtype=np.int32)
        self._rank = np.zeros((0, 0), dtype=np.int32)
        self._shift_mx: mx.array | None = None
        self._shift_nonzero = False
        self._query_base = 0
        self._free: list[np.ndarray] = []  # dead slots to reuse, one (H,) column per token
        self.last_scores = np.zeros((0, 0))
        self.evictions = 0
        self.promotions = 0
        self.demotions = 0
        self.compactions = 0
        self.collections = 0
        self.ranked = 0
        self.recalls = 0
        self.collect_seconds = 0.0  # wall time in collections, waiting for scores included
        self.rank_seconds = 0.0  # choosing victims and re-tenuring only
        self._reused: np.ndarray | None = None
        self.store: RecoveryStore | None = None
        self.info = np.zeros((0, 0, 0), dtype=np.float32)  # (2, H, capacity): surprisal, entropy
        # slots [0, _hot0) are the cold tier (quantized); self.keys/values hold slots _hot0..
        self.cold = ColdTier(self.cold_bits) if self.cold_bits is not None else None
        self._hot0 = 0
        self._collect_pending = False
        self._info_fed = False
        self.calls = 0
        self.attention_stats: dict[str, mx.array] = {}  # sampled: entropy, top-1%/5% shares
        self._rng = np.random.default_rng(self.seed)

    # ----------------------------------------------------------- cache protocol
    @property
    def offset(self) -> int:
        """The position mlx-lm rotates the next token at: the absolute count of
        tokens seen, or (positions="cache") the number of tokens kept."""
        return self._live if self.position_mode == "cache" else self.tokens_seen

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if keys.shape[0] != 1:
            raise ValueError("the heap supports batch size 1 only")
        n_new = keys.shape[2]
        self._reused = None
        self._query_base = self.offset  # where mlx-lm just rotated these queries and keys
        if self._collect_pending:
            self._collect_pending = False
            self._collect()
            self._query_base = self.offset
        if self.keys is None:
            self._allocate(keys, values, n_new)
        if n_new == 1 and not self._free and self._live + 1 > self.budget:
            # Full: collect on the scores gathered so far, before the token lands.
            self._collect()
        if n_new == 1 and self._free and self.cold is None:
            self._write_into_dead_slot(keys, values, self._free.pop())
        else:
            self._append(keys, values, n_new)
        self.tokens_seen += n_new
        return self._full_kv()

    def _full_kv(self) -> tuple[mx.array, mx.array]:
        """Keys and values of slots [0, end): the cold tier dequantized, then the hot slots."""
        hot_k = self.keys[..., : self.end - self._hot0, :]
        hot_v = self.values[..., : self.end - self._hot0, :]
        if not self._hot0:
            return hot_k, hot_v
        cold_k, cold_v = self.cold.dequantized()
        return mx.concatenate([cold_k, hot_k], axis=2), mx.concatenate([cold_v, hot_v], axis=2)

    @property
    def _capacity(self) -> int:
        return self._hot0 + self.keys.shape[2]

    def attend(self, queries: mx.array, keys: mx.array, values: mx.array, *, scale: float, mask: Any = None) -> mx.array:
        """Attention over the live slots; feeds the policy; collects if over budget."""
        n_new = queries.shape[2]
        self.calls += 1
        first = None if self._reused is not None else self.end - n_new
        dead_bias = self.bias[:, : self.end] if self._live < self.end else None
        keys = self._keys_for_attention(keys, n_new)
        observes = self.policy.observes
        if observes == "none":
            out = self._fast_attention(queries, keys, values, scale, dead_bias, n_new)
        else:
            rows = {"all": (0, n_new), "last": (n_new - 1, n_new),
                    "window": (max(0, n_new - self.policy.observation_window), n_new)}[observes]
            sample = self.diagnostics_every > 0 and self.calls % self.diagnostics_every == 0
            out, weights, count = grouped_attention(
                queries, keys, values, scale, first_query_slot=first,
                dead_bias=dead_bias, score_rows=rows, block=self._query_block(queries.shape[1]),
                keep_last_row=sample,
            )
            if sample:
                self.attention_stats = attention_summary(grouped_attention.last_row, self._live)
            acc, seen = self.acc[:, : self.end], self.seen[:, : self.end]
            acc, seen = self.policy.accumulate(acc, seen, weights, count)
            self.acc[:, : self.end] = acc
            self.seen[:, : self.end] = seen
            mx.async_eval(self.acc, self.seen)
        if self.store is not None and 1 < n_new <= self.recovery["recall_max_chunk"] and self.store.page_count:
            self._recall(queries, n_new)
        if self.live > self.budget:
            if self.policy.uses_info and n_new > 1 and self._info_fed:
                # The chunk's surprisal is known only once the whole model ran:
                # collect when it arrives (set_token_info) or at the next call.
                # (A driver that never feeds signals gets attention-only collections.)
                self._collect_pending = True
            else:
                self._collect()
        return out

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None):
        # `attend` builds its own masks; this serves code that bypasses the hook.
        if N == 1:
            return None
        if return_array or window_size is not None:
            return create_causal_mask(N, offset=self.end, window_size=window_size)
        return "causal"

    @property
    def state(self):
        if self.keys is None:
            return []
        end = self.end
        keys, values = self._full_kv()
        return (
            keys, values,
            self.acc[:, :end], self.seen[:, :end],
            mx.array(self.positions[:, :end].astype(np.int64)),
            mx.array(self.tenured[:, :end].astype(np.uint8)),
            mx.array(self.survived[:, :end]),
            mx.array(self._rot[:, :end]),
            mx.array(self.info[:, :, :end]),
            self._meta_json(),
        )

    @state.setter
    def state(self, v) -> None:
        keys, values, acc, seen, positions, tenured, survived, rot, info, meta = v
        settings = json.loads(meta)
        policy_cls = POLICIES[settings.pop("policy")]
        policy_args = settings.pop("policy_args")
        counters = settings.pop("counters")
        offset = settings.pop("offset")
        self.__init__(policy=policy_cls(**policy_args), **settings)
        self.keys, self.values, self.acc, self.seen = keys, values, acc, seen
        self.positions = np.array(positions).astype(np.int64)
        self.tenured = np.array(tenured).astype(bool)
        self.survived = np.array(survived).astype(np.int32)
        self._rot = np.array(rot).astype(np.int32)
        self._rank = np.zeros_like(self._rot)
        self.info = np.array(info).astype(np.float32)
        self.end = self.positions.shape[1]
        self.tokens_seen = offset
        self._sync_from_positions()
        if self.recovery:  # spilled pages are scratch space: a restored heap starts a fresh store
            self.store = RecoveryStore(keys.shape[1], keys.shape[3], values.shape[3],
                                       page_size=self.recovery["page_size"], max_bytes=self.recovery["max_bytes"],
                                       folder=self.recovery.get("folder"))
        for name, value in counters.items():
            setattr(self, name, value)
        if self.cold is not None and self.end:
            # Saved dequantized; quantized again here (one more rounding per save/restore).
            compactions = self.compactions
            self._compact()
            self.compactions = compactions

    @property
    def meta_state(self):
        return ""

    @classmethod
    def from_state(cls, state):
        obj = cls.__new__(cls)
        obj.state = state
        return obj

    def _meta_json(self) -> str:
        from dataclasses import asdict

        return json.dumps({
            "budget": self.budget, "sinks": self.sinks, "window": self.window,
            "tenured": self.tenured_cap, "promote_after": self.promote_after,
            "major_every": self.major_every, "collect_batch": self.collect_batch,
            "compact_threshold": self.compact_threshold, "rank_noise": self.rank_noise,
            "score_block": self.score_block, "seed": self.seed, "positions": self.position_mode,
            "recovery": self.recovery, "cold_bits": self.cold_bits,
            "policy": self.policy.name, "policy_args": asdict(self.policy),
            "offset": self.tokens_seen,
            "counters": {k: getattr(self, k) for k in (
                "evictions", "promotions", "demotions", "compactions", "collections", "ranked", "recalls")},
        })

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        """Forget the last n tokens (they are young, so still present)."""
        n = min(self.tokens_seen, n)
        if n <= 0 or self.keys is None:
            return 0
        self.tokens_seen -= n
        gone = self.positions[:, : self.end] >= self.tokens_seen
        self.positions[:, : self.end][gone] = -1
        self.tenured[:, : self.end][gone] = False
        self._sync_from_positions()
        return n

    def _sync_from_positions(self) -> None:
        """Rebuild the counters, free list and bias from `positions`."""
        while self.end > 0 and (self.positions[:, self.end - 1] < 0).all():
            self.end -= 1
        pos = self.positions[:, : self.end]
        self._live = int((pos[0] >= 0).sum()) if len(pos) else 0
        dead = pos < 0
        n_dead = int(dead[0].sum()) if len(pos) else 0
        self._free = [np.array([np.flatnonzero(row)[i] for row in dead]) for i in range(n_dead - 1, -1, -1)]
        if self.keys is not None:
            cap = self._capacity
            bias = np.zeros((self.positions.shape[0], cap), np.float32)
            bias[:, : self.end][dead] = -np.inf
            self.bias = mx.array(bias)
            self._refresh_ranks()

    def empty(self) -> bool:
        return self.keys is None

    def size(self) -> int:
        return self.live

    @property
    def nbytes(self) -> int:
        """Bytes this layer holds: keys, values, score accumulators and the host bookkeeping."""
        if self.keys is None:
            return 0
        device = sum(a.nbytes for a in (self.keys, self.values, self.acc, self.seen, self.bias))
        if self.position_mode == "cache":  # the RoPE shifts: dropped at collections, rebuilt at the next call
            device += 4 * self.bias.size
        if self.cold is not None:
            device += self.cold.nbytes
        host = sum(a.nbytes for a in (self.positions, self.tenured, self.survived, self._rot, self._rank, self.info))
        return device + host

    @staticmethod
    def slot_bytes(head_dim: int, itemsize: int, positions: str = "absolute") -> int:
        """Bytes one slot of one KV head costs, everything counted (see nbytes)."""
        device = 2 * head_dim * itemsize + 3 * 4 + (4 if positions == "cache" else 0)  # K, V, acc, seen, bias, shift
        host = 8 + 1 + 4 + 4 + 4 + 8  # position, tenure flag, survivals, rotation, rank, surprisal + entropy
        return device + host

    def set_token_info(self, start: int, surprisal: np.ndarray, entropy: np.ndarray) -> None:
        """Information signals for the tokens at positions start.. (see mlx_kv.information)."""
        self._info_fed = True
        if self.keys is None:
            return
        pos = self.positions[:, : self.end]
        index = pos - start
        hit = (index >= 0) & (index < len(surprisal))
        self.info[0, :, : self.end][hit] = surprisal[index[hit]]
        self.info[1, :, : self.end][hit] = entropy[index[hit]]
        if self._collect_pending:
            self._collect_pending = False
            self._collect()

    # ---------------------------------------------------------------- controls
    def set_budget(self, budget: int) -> None:
        """Change the budget now; shrinking collects and compacts at once."""
        if budget < self.sinks + self.window + 1:
            raise ValueError(
                f"budget: {budget} tokens is smaller than sinks + window + 1 = {self.sinks + self.window + 1}"
            )
        self.budget = int(budget)
        room = self.budget - self.sinks - self.window
        self.collect_batch = max(1, min(self.collect_batch, room))
        self.tenured_cap = min(self.tenured_cap, room)
        if self.keys is None:
            return
        if self.live > self.budget:
            self._collect()
        if self._capacity > self.budget:
            self._compact()

    def set_policy(self, policy: Policy) -> None:
        """Switch policy; accumulated scores start again from zero."""
        self.policy = policy
        if self.acc is not None:
            self.acc = mx.zeros_like(self.acc)
            self.seen = mx.zeros_like(self.seen)

    # -------------------------------------------------------------- diagnostics
    @property
    def live(self) -> int:
        """Tokens kept per KV head (every head keeps the same count)."""
        return self._live

    def tier_counts(self) -> dict[str, int]:
        """Tokens per tier, counted on KV head 0 (all heads hold the same counts)."""
        pos = self.positions[:, : self.end]
        alive = pos >= 0
        sinks = alive & (pos < self.sinks)
        young = alive & ~sinks & (pos >= self.tokens_seen - self.window)
        old = alive & ~protected_mask(pos, self.tokens_seen, self.sinks, self.window)
        tenured = old & self.tenured[:, : self.end]
        return {
            "sinks": int(sinks[0].sum()) if len(pos) else 0,
            "young": int(young[0].sum()) if len(pos) else 0,
            "intermediate": int((old & ~tenured)[0].sum()) if len(pos) else 0,
            "tenured": int(tenured[0].sum()) if len(pos) else 0,
        }

    @property
    def cold_tokens(self) -> int:
        """Tokens per KV head stored in the quantized cold tier (0 without one)."""
        return self._hot0

    def kept_positions(self) -> list[np.ndarray]:
        """Original positions kept by each KV head, in increasing order."""
        pos = self.positions[:, : self.end]
        return [np.sort(row[row >= 0]) for row in pos]

    def token_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) per (kv_head, live slot) as the policy sees them now."""
        pos = self.positions[:, : self.end]
        scores = self._host_scores()
        return pos, np.where(pos >= 0, scores, np.nan)

    # ---------------------------------------------------------------- internals
    def _allocate(self, keys: mx.array, values: mx.array, n_new: int) -> None:
        _, H, _, Dk = keys.shape
        cap = self._capacity_for(n_new)
        self.keys = mx.zeros((1, H, cap, Dk), keys.dtype)
        self.values = mx.zeros((1, H, cap, values.shape[3]), values.dtype)
        self.acc = mx.zeros((H, cap), mx.float32)
        self.seen = mx.zeros((H, cap), mx.float32)
        self.bias = mx.zeros((H, cap), mx.float32)
        self.positions = np.full((H, cap), -1, dtype=np.int64)
        self.tenured = np.zeros((H, cap), dtype=bool)
        self.survived = np.zeros((H, cap), dtype=np.int32)
        self._rot = np.zeros((H, cap), dtype=np.int32)
        self._rank = np.zeros((H, cap), dtype=np.int32)
        self.info = np.full((2, H, cap), np.nan, dtype=np.float32)
        if self.recovery:
            self.store = RecoveryStore(H, Dk, values.shape[3], page_size=self.recovery["page_size"],
                                       max_bytes=self.recovery["max_bytes"], folder=self.recovery.get("folder"))

    def _capacity_for(self, needed: int) -> int:
        """Grow in steps like KVCache, but never past the budget unless a
        prefill chunk needs it for the moment."""
        stepped = -(-needed // _STEP) * _STEP
        return max(needed, min(stepped, self.budget))

    def _grow(self, needed: int) -> None:
        cap = self._capacity_for(needed)
        extra = cap - self._capacity
        H = self.keys.shape[1]
        self.keys = mx.concatenate([self.keys, mx.zeros((1, H, extra, self.keys.shape[3]), self.keys.dtype)], axis=2)
        self.values = mx.concatenate([self.values, mx.zeros((1, H, extra, self.values.shape[3]), self.values.dtype)], axis=2)
        self.acc = mx.concatenate([self.acc, mx.zeros((H, extra), mx.float32)], axis=1)
        self.seen = mx.concatenate([self.seen, mx.zeros((H, extra), mx.float32)], axis=1)
        self.bias = mx.concatenate([self.bias, mx.zeros((H, extra), mx.float32)], axis=1)
        self.positions = np.concatenate([self.positions, np.full((H, extra), -1, np.int64)], axis=1)
        self.tenured = np.concatenate([self.tenured, np.zeros((H, extra), bool)], axis=1)
        self.survived = np.concatenate([self.survived, np.zeros((H, extra), np.int32)], axis=1)
        self._rot = np.concatenate([self._rot, np.zeros((H, extra), np.int32)], axis=1)
        self._rank = np.concatenate([self._rank, np.zeros((H, extra), np.int32)], axis=1)
        self.info = np.concatenate([self.info, np.full((2, H, extra), np.nan, np.float32)], axis=2)
        self._shift_mx = None

    def _query_block(self, n_query_heads: int) -> int:
        """Rows of queries per attention block: at most score_block, and few
        enough that one block's weights stay near 16M floats (64 MB) however
        long the context."""
        return max(16, min(self.score_block, (1 << 24) // max(1, n_query_heads * self.end)))

    def _make_room(self, n: int) -> None:
        """Room for n more slots at the end: reclaim dead slots first, then grow."""
        if self.end + n > self._capacity:
            if self._live < self.end:
                self._compact(extra=n)
            if self.end + n > self._capacity:
                self._grow(self.end + n)

    def _append(self, keys: mx.array, values: mx.array, n_new: int) -> None:
        self._make_room(n_new)
        start, stop = self.end, self.end + n_new
        self.keys[..., start - self._hot0:stop - self._hot0, :] = keys
        self.values[..., start - self._hot0:stop - self._hot0, :] = values
        self.acc[:, start:stop] = 0.0
        self.seen[:, start:stop] = 0.0
        self.bias[:, start:stop] = 0.0
        self.positions[:, start:stop] = self.tokens_seen + np.arange(n_new)
        self._set_new_shift(np.s_[:, start:stop])
        self.tenured[:, start:stop] = False
        self.survived[:, start:stop] = 0
        self.info[:, :, start:stop] = np.nan
        self.end = stop
        self._live += n_new

    def _write_into_dead_slot(self, keys: mx.array, values: mx.array, slots: np.ndarray) -> None:
        H = keys.shape[1]
        heads = np.arange(H)
        h_idx, s_idx = mx.array(heads), mx.array(slots)
        self.keys[0, h_idx, s_idx, :] = keys[0, :, 0, :]
        self.values[0, h_idx, s_idx, :] = values[0, :, 0, :]
        self.acc[h_idx, s_idx] = 0.0
        self.seen[h_idx, s_idx] = 0.0
        self.bias[h_idx, s_idx] = 0.0
        self.positions[heads, slots] = self.tokens_seen
        self._set_new_shift((heads, slots))
        self._live += 1
        self.tenured[heads, slots] = False
        self.survived[heads, slots] = 0
        self.info[:, heads, slots] = np.nan
        self._reused = slots

    def _set_new_shift(self, where) -> None:
        """New tokens rank right after the kept ones; mlx-lm rotated them at
        the query base, which differs from their rank only just after a collection."""
        if self.position_mode != "cache":
            return
        n = self._rot[where].shape[-1] if isinstance(where[1], slice) else 1
        steps = np.arange(n) if isinstance(where[1], slice) else 0
        self._rot[where] = self._query_base + steps
        self._rank[where] = self._live + steps
        if self._live != self._query_base:
            self._shift_mx = None  # a shift is now owed; rebuild before attention
        elif self._shift_mx is not None:
            if isinstance(where[1], slice):
                self._shift_mx[:, where[1]] = 0
            else:
                self._shift_mx[mx.array(where[0]), mx.array(where[1])] = 0

    def _refresh_ranks(self) -> None:
        """After evictions every survivor's rank may drop: it is owed the difference."""
        if self.position_mode != "cache" or self.keys is None:
            return
        self._rank[:, : self.end] = ranks(self.positions[:, : self.end])
        self._shift_mx = None

    def _keys_for_attention(self, keys: mx.array, n_new: int) -> mx.array:
        if self.position_mode != "cache":
            return keys
        if self.rope is None:
            raise ValueError("positions: 'cache' needs the model's rope; build the heap with make_heap_cache(model, ...)")
        base = self._query_base - (self._live - n_new)
        if self._shift_mx is None:
            shift = np.where(self.positions >= 0, self._rank - self._rot, 0)
            self._shift_nonzero = bool(shift.any())
            self._shift_mx = mx.array(shift.astype(np.int32))
        if base == 0 and not self._shift_nonzero:
            return keys
        return shift_keys(self.rope, keys, self._shift_mx[:, : self.end] + base)

    def _host_scores(self) -> np.ndarray:
        end = self.end
        acc = np.array(self.acc[:, :end]) if self.policy.observes != "none" else np.zeros(self.positions[:, :end].shape)
        seen = np.array(self.seen[:, :end]) if self.policy.observes != "none" else acc
        if self.policy.uses_info:
            return self.policy.scores(acc, seen, self.positions[:, :end], self.tokens_seen, info=self.info[:, :, :end])
        return self.policy.scores(acc, seen, self.positions[:, :end], self.tokens_seen)

    def _collect(self) -> None:
        started = time.perf_counter()
        try:
            self._collect_inner()
        finally:
            self.collect_seconds += time.perf_counter() - started

    def _collect_inner(self) -> None:
        end = self.end
        scores = self._host_scores()
        if self.rank_noise > 0:
            scores = _normalise(scores, self.positions[:, :end]) + self._rng.normal(0.0, self.rank_noise, scores.shape)
        n_evict = self.live - (self.budget - self.collect_batch)
        major = (self.collections + 1) % self.major_every == 0
        positions, tenured, survived = (a[:, :end] for a in (self.positions, self.tenured, self.survived))
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
            self.bias[mx.array(np.repeat(np.arange(self.bias.shape[0]), n_victims)),
                      mx.array(result.victims.reshape(-1))] = -mx.inf
            self._free.extend(result.victims[:, i] for i in range(n_victims - 1, -1, -1))
        self._refresh_ranks()
        self.collections += 1
        self.evictions += result.victims.shape[1]
        self.promotions += result.promoted
        self.demotions += result.demoted
        self.ranked += result.ranked
        dead_fraction = 1.0 - self.live / max(1, end)
        if dead_fraction > self.compact_threshold or self._capacity > self.budget:
            self._compact()

    def _spill(self, victims: np.ndarray, positions: np.ndarray) -> None:
        rows = np.arange(victims.shape[0])[:, None]
        idx = mx.array(victims.astype(np.int32))[None, :, :, None]
        all_keys, all_values = self._full_kv()
        keys = np.array(mx.take_along_axis(all_keys, idx, axis=2)[0].astype(mx.float32))
        values = np.array(mx.take_along_axis(all_values, idx, axis=2)[0].astype(mx.float32))
        self.store.spill(positions[rows, victims], self._rot[rows, victims], keys, values)

    def _recall(self, queries: mx.array, n_new: int) -> None:
        """Bring back the spilled pages this chunk's last queries may attend to."""
        H = self.keys.shape[1]
        rows = min(self.recovery["query_rows"], n_new)
        q = np.array(queries[0, :, -rows:, :].astype(mx.float32))  # (Hq, rows, D)
        q = q.reshape(H, -1, q.shape[-1])  # the query heads of each KV head's group
        recalled = self.store.recall(q, self.recovery["recall_pages"])
        if recalled is None:
            return
        scores = self._host_scores()
        alive = self.positions[:, : self.end] >= 0
        seed_score = float(np.nanmax(np.where(alive, scores, np.nan))) if alive.any() else 0.0
        positions, rotated, keys, values = (np.stack(parts) for parts in zip(*recalled))
        n = positions.shape[1]
        self._make_room(n)
        start, stop = self.end, self.end + n
        self.keys[..., start - self._hot0:stop - self._hot0, :] = mx.array(keys[None]).astype(self.keys.dtype)
        self.values[..., start - self._hot0:stop - self._hot0, :] = mx.array(values[None]).astype(self.values.dtype)
        # Recalled tokens start as the best kept token, so the next collection
        # keeps them; the queries that follow then score them for real.
        self.acc[:, start:stop] = seed_score
        self.seen[:, start:stop] = 1.0
        self.bias[:, start:stop] = 0.0
        self.positions[:, start:stop] = positions
        self._rot[:, start:stop] = rotated
        self.info[:, :, start:stop] = np.nan
        self.tenured[:, start:stop] = False
        self.survived[:, start:stop] = 0
        self.end = stop
        self._live += n
        self.recalls += n
        self._refresh_ranks()

    def _compact(self, extra: int = 0) -> None:
        """Reallocate the live slots contiguously, in position order, per head
        (with a cold tier: its tokens first, then the rest)."""
        end, live = self.end, self.live
        pos = self.positions[:, :end]
        alive = pos >= 0
        H = pos.shape[0]
        n_cold = 0
        sort_key = np.where(alive, pos, np.iinfo(np.int64).max)
        if self.cold is not None:
            cold = alive & ~protected_mask(pos, self.tokens_seen, self.sinks, self.window) & ~self.tenured[:, :end]
            n_cold = int(cold.sum(axis=1).min()) if H else 0
            # the same count in every head: each head's oldest cold-eligible tokens
            if n_cold:
                oldest = np.sort(np.where(cold, pos, np.iinfo(np.int64).max), axis=1)[:, n_cold - 1: n_cold]
                cold &= pos <= oldest
            sort_key = np.where(cold, sort_key - np.iinfo(np.int64).max // 2, sort_key)
        order = np.argsort(sort_key, axis=1, kind="stable")[:, :live]
        idx = mx.array(order.astype(np.int32))
        cap = self._capacity_for(max(live + extra, 1))
        hot_k, hot_v = self.keys[..., : end - self._hot0, :], self.values[..., : end - self._hot0, :]
        hot_order = order[:, n_cold:]
        if self._hot0 and (hot_order < self._hot0).any():  # a cold token left the tier (e.g. tenured)
            source_k, source_v = self._full_kv()  # (before the rebuild below replaces the tier)
        else:
            source_k, source_v, hot_order = hot_k, hot_v, hot_order - self._hot0
        if self.cold is not None:
            self.cold.rebuild(order[:, :n_cold], self._hot0, hot_k, hot_v)
        hot_idx = mx.array(hot_order.astype(np.int32))[None, :, :, None]
        new_k = mx.take_along_axis(source_k, hot_idx, axis=2)
        new_v = mx.take_along_axis(source_v, hot_idx, axis=2)
        acc = mx.take_along_axis(self.acc[:, :end], idx, axis=1)
        seen = mx.take_along_axis(self.seen[:, :end], idx, axis=1)
        pad = cap - live
        self.keys = mx.concatenate([new_k, mx.zeros((1, H, pad, new_k.shape[3]), new_k.dtype)], axis=2) if pad else new_k
        self.values = mx.concatenate([new_v, mx.zeros((1, H, pad, new_v.shape[3]), new_v.dtype)], axis=2) if pad else new_v
        self._hot0 = n_cold
        self.acc = mx.concatenate([acc, mx.zeros((H, pad), mx.float32)], axis=1) if pad else acc
        self.seen = mx.concatenate([seen, mx.zeros((H, pad), mx.float32)], axis=1) if pad else seen
        self.bias = mx.zeros((H, cap), mx.float32)
        self._free = []
        rows = np.arange(H)[:, None]
        self.positions = _padded(pos[rows, order], cap, -1)
        self.tenured = _padded(self.tenured[:, :end][rows, order], cap, False)
        self.survived = _padded(self.survived[:, :end][rows, order], cap, 0)
        self._rot = _padded(self._rot[:, :end][rows, order], cap, 0)
        self._rank = _padded(self._rank[:, :end][rows, order], cap, 0)
        self.info = np.stack([_padded(self.info[i, :, :end][rows, order], cap, np.nan) for i in range(2)])
        self._shift_mx = None
        self.end = live
        self.compactions += 1
        cold_arrays = (*self.cold.keys, *self.cold.values) if self.cold is not None and self.cold.keys else ()
        mx.eval(self.keys, self.values, self.acc, self.seen, *cold_arrays)

    def _fast_attention(self, queries, keys, values, scale, dead_bias, n_new):
        if dead_bias is None:
            mask = "causal" if n_new > 1 else None
        else:
            G = queries.shape[1] // keys.shape[1]
            bias = mx.repeat(dead_bias, G, axis=0)[None, :, None, :]
            if n_new > 1:
                cols = mx.arange(self.end)
                rows = self.end - n_new + mx.arange(n_new)
                bias = mx.where(cols[None, :] <= rows[:, None], bias, -mx.inf)
            mask = bias.astype(queries.dtype)
        return mx.fast.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)


def attention_summary(weights: mx.array, live: int) -> dict[str, mx.array]:
    """Entropy (nats) and the mass on the top 1% / 5% of live keys, per KV head,
    averaged over the group's query heads; lazy, read when someone looks."""
    w = weights.astype(mx.float32)
    entropy = -(w * mx.log(mx.maximum(w, 1e-30))).sum(axis=-1).mean(axis=-1)
    ordered = mx.sort(w, axis=-1)[..., ::-1]
    share = {}
    for name, fraction in (("top1", 0.01), ("top5", 0.05)):
        k = max(1, int(np.ceil(live * fraction)))
        share[name] = ordered[..., :k].sum(axis=-1).mean(axis=-1)
    return {"entropy": entropy, "top1": share["top1"], "top5": share["top5"], "keys": mx.array(live)}


def _padded(a: np.ndarray, cap: int, fill) -> np.ndarray:
    out = np.full((a.shape[0], cap), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _normalise(scores: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Scale each head's live scores to [0, 1] so rank_noise means the same for every policy."""
    alive = positions >= 0
    lo = np.where(alive, scores, np.inf).min(axis=1, keepdims=True)
    hi = np.where(alive, scores, -np.inf).max(axis=1, keepdims=True)
    return (scores - lo) / np.maximum(hi - lo, 1e-12)
