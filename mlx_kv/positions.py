"""Re-indexing RoPE positions so a long stream stays inside the trained range.

mlx-lm rotates each key at its absolute position before the cache sees it.
With positions="cache" the heap instead numbers the kept tokens 0..n-1 in
order (StreamingLLM's "positions within the cache"): mlx-lm rotates new
tokens at `cache.offset` (the kept count), and keys whose rank dropped after
evictions are rotated by the difference, llama.cpp-style. The shift is
always applied to the key as it was first stored, never to an already
shifted copy, so rounding does not accumulate. The shifted keys are
computed in `attend` and kept until the shifts change (the next
collection): rotating every kept key through the rope kernel cost a
cosine and a sine per channel pair, ~8 ms per layer at 2k keys on this
CPU, far more than the decode step's attention, so recomputing them per
token made a 30-layer model decode at half KVCache's speed at 8k (the
cosines and sines are now looked up, `shift_keys`). The copy spans the slots up
to the capacity, and the tokens appended between collections are written
into it in place (concatenating them cost ~0.3 ms per layer per token at
2k keys). It costs the keys' bytes again, and is counted in `nbytes` and
the budgets in bytes.

RoPE is a rotation linear in the position, so R(a + d) k = R(d) R(a) k for
the model's own rope object (plain, linear-scaled or Llama-3 frequencies).
Variants that also rescale the vectors (YaRN's mscale) are refused.

A cold tier (mlx_kv.heap.cold) stores keys packed, which cannot be rotated:
its keys are rotated to their rank as they turn cold, and a decode step
rotates each KV head's queries once, by the middle of the shifts its cold
keys are owed since (q . R(s) k = (R(-s) q) . k). A cold key is then off by
at most half the spread of those shifts; past `cold_drift` positions the
tier is re-stamped at the next compaction. Distant tokens tolerate coarse
positions (Self-Extend, Jin et al. 2024, groups them by floor division).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import mlx.core as mx
import numpy as np

if TYPE_CHECKING:
    from mlx_kv.heap.slots import SlotTable

_PURE_ROTATIONS = ("RoPE", "Llama3RoPE")
COLD_DRIFT = 16  # positions a packed cold key may be off before the tier is re-stamped


def check_rope(rope: Any) -> None:
    name = type(rope).__name__
    if name not in _PURE_ROTATIONS:
        raise ValueError(
            f"positions: 'cache' needs a pure-rotation RoPE ({', '.join(_PURE_ROTATIONS)}); this model uses {name}"
        )


def ranks(positions: np.ndarray) -> np.ndarray:
    """Each live slot's index in position order (its position within the cache); -1 for dead slots."""
    alive = positions >= 0
    order = np.argsort(np.where(alive, positions, np.iinfo(np.int64).max), axis=1, kind="stable")
    out = np.full(positions.shape, -1, dtype=np.int64)
    n_live = alive.sum(axis=1)
    for head, n in enumerate(n_live):
        out[head, order[head, :n]] = np.arange(n)
    return out


def shift_keys(rope: Any, keys: mx.array, shifts: mx.array, span: tuple[int, int] | None = None) -> mx.array:
    """Rotate each key (1, H, L, D) by its own position shift (H, L).

    Given `span` (the least and the greatest shift, which the caller knows
    on the host), a pure-rotation rope's cosines and sines are looked up in
    a table (`_RotationTable`) instead of computed: the rope kernel spends
    nearly all its time on them (2.6 ms for 2,048 keys of 64 dims on this
    CPU against 0.2 ms looked up), and a layer split per head under
    positions="cache" rotates its kept keys after every collection."""
    _, H, L, D = keys.shape
    table = _RotationTable.covering(rope, *span) if span is not None else None
    if table is None:
        flat = keys.reshape(H * L, 1, 1, D)
        return rope(flat, offset=shifts.reshape(-1)).reshape(1, H, L, D)
    return table.rotate(keys, shifts)


def shift_keys_host(rope: Any, keys: mx.array, shifts: np.ndarray) -> mx.array:
    """`shift_keys` with shifts held on the host: their span is read off them, so the rotation is looked up."""
    span = (int(shifts.min()), int(shifts.max())) if shifts.size else None
    return shift_keys(rope, keys, mx.array(shifts), span)


class _RotationTable:
    """A rope's cosine and sine for each channel pair at every shift of a
    range, as the rope itself computes them (read off a probe vector it
    rotates), so a rotation looked up here equals the rope's. One table per
    rope setting, shared by every heap of a model; under positions="cache"
    shifts stay within about twice a heap's capacity (every key is rotated
    at a rank, never at an absolute position), so the table stays a few
    times that many rows whatever the stream's length: 7,546 rows, 1.9 MB,
    for SmolLM2 at a 512-token budget, against 12 MB of kept keys in its 30
    layers. Being shared, it is not counted in any heap's `nbytes`."""

    _tables: dict[tuple, "_RotationTable"] = {}

    def __init__(self, rope: Any, lo: int, hi: int) -> None:
        self.dims, self.traditional, self.lo = int(rope.dims), bool(rope.traditional), lo
        half = self.dims // 2
        first = np.zeros(self.dims, np.float32)  # 1 in the first channel of each pair
        first[slice(0, None, 2) if self.traditional else slice(0, half)] = 1.0
        n = hi - lo + 1
        probe = mx.broadcast_to(mx.array(first).reshape(1, 1, 1, -1), (n, 1, 1, self.dims))
        rotated = rope(probe, offset=mx.arange(lo, hi + 1)).reshape(n, self.dims)
        self.cos, self.sin = self._pairs(rotated)
        mx.eval(self.cos, self.sin)

    @property
    def hi(self) -> int:
        return self.lo + self.cos.shape[0] - 1

    @classmethod
    def covering(cls, rope: Any, lo: int, hi: int) -> "_RotationTable | None":
        """The table kept for this rope's setting, grown to cover shifts lo..hi
        (with a margin, so a slowly widening span rebuilds it rarely); None:
        not a pure rotation (its own kernel rotates)."""
        if type(rope).__name__ not in _PURE_ROTATIONS:
            return None
        freqs = getattr(rope, "_freqs", None)
        key = (type(rope).__name__, rope.dims, rope.traditional, getattr(rope, "base", None), getattr(rope, "scale", None),
               None if freqs is None else tuple(np.array(freqs).tolist()))
        table = cls._tables.get(key)
        if table is None or lo < table.lo or hi > table.hi:
            if table is not None:
                lo, hi = min(lo, table.lo), max(hi, table.hi)
            margin = max(256, (hi - lo) // 2)
            table = cls._tables[key] = cls(rope, lo - margin, hi + margin)
        return table

    def _pairs(self, x: mx.array) -> tuple[mx.array, mx.array]:
        """The first and second channel of each rotated pair."""
        x = x[..., : self.dims]
        if self.traditional:
            return x[..., 0::2], x[..., 1::2]
        half = self.dims // 2
        return x[..., :half], x[..., half:]

    def rotate(self, keys: mx.array, shifts: mx.array) -> mx.array:
        """Each key (1, H, L, D) turned by its shift (H, L), within the table's range."""
        _, H, L, _ = keys.shape
        index = shifts.reshape(-1) - self.lo
        cos, sin = (mx.take(t, index, axis=0).reshape(1, H, L, -1) for t in (self.cos, self.sin))
        a, b = self._pairs(keys)
        turned = (a * cos - b * sin, a * sin + b * cos)
        if self.traditional:
            out = mx.stack(turned, axis=-1).reshape(keys.shape[:3] + (self.dims,))
        else:
            out = mx.concatenate(turned, axis=-1)
        out = out.astype(keys.dtype)
        return out if self.dims == keys.shape[-1] else mx.concatenate([out, keys[..., self.dims:]], axis=-1)


class AbsoluteShifts:
    """positions="absolute": every key stays where mlx-lm rotated it."""

    slot_bytes = 0

    def stamp_range(self, slots: "SlotTable", start: int, stop: int, query_base: int, live: int) -> None:
        pass

    def stamp_slots(self, slots: "SlotTable", where: np.ndarray, query_base: int, live: int) -> None:
        pass

    def refresh(self, slots: "SlotTable", end: int) -> None:
        pass

    def invalidate(self) -> None:
        pass

    def keys(self, rope: Any, slots: "SlotTable", keys: mx.array, end: int, base: int) -> mx.array:
        return keys

    def hot_keys(self, rope: Any, slots: "SlotTable", keys: mx.array, end: int, base: int) -> mx.array:
        return keys

    def cold_queries(self, rope: Any, slots: "SlotTable", queries: mx.array, base: int) -> mx.array:
        return queries

    def cold_stamp(self, slots: "SlotTable", order: np.ndarray, n_cold: int) -> np.ndarray | None:
        return None

    def stamped(self, slots: "SlotTable", stamp: np.ndarray | None) -> None:
        pass

    def nbytes(self, slots: "SlotTable") -> int:
        return 0


class _Rotated(NamedTuple):
    """The shifted keys positions="cache" keeps between collections."""

    start: int  # the first slot they cover (the cold tier's packed rows aside)
    base: int  # the query base they are rotated for: each key at its shift plus this
    keys: mx.array  # (1, H, capacity - start, D)
    held: int  # how many of its rows hold their key now


class CacheShifts(AbsoluteShifts):
    """positions="cache": what each stored key is owed, kept on the device as
    one (H, capacity) int32 array, rebuilt lazily from the slot table's `rot`
    (where mlx-lm rotated the key) and `rank` (its rank in the cache now)."""

    slot_bytes = 4  # counted whether or not the array is built at the moment

    def __init__(self, cold_drift: int | None = None) -> None:
        self._shift: mx.array | None = None
        self._span = (0, 0)  # the least and greatest shift in _shift (host-side, for the rotation table)
        self._nonzero = False
        self._rotated: _Rotated | None = None
        self._cold_shift: mx.array | None = None  # (H,) what a head's queries are rotated back by for its cold keys
        self.cold_drift = COLD_DRIFT if cold_drift is None else cold_drift
        self.restamps = 0

    def stamp_range(self, slots: "SlotTable", start: int, stop: int, query_base: int, live: int) -> None:
        """New tokens rank right after the kept ones; mlx-lm rotated them at
        the query base, which differs from their rank just after a collection
        and, in a layer split per head (mlx_kv.heap.headwise), in every head
        that keeps another count than the first: those are owed the
        difference at every step, so it is written, not rebuilt."""
        steps = np.arange(stop - start)
        slots.rot[:, start:stop] = query_base + steps
        slots.rank[:, start:stop] = live + steps
        self._owe((slice(None), slice(start, stop)), live - query_base)

    def stamp_slots(self, slots: "SlotTable", where: np.ndarray, query_base: int, live: int) -> None:
        """One new token in slot where[h] of each head h."""
        heads = np.arange(len(where))
        slots.rot[heads, where] = query_base
        slots.rank[heads, where] = live
        self._rotated = None  # a dead slot's rotated key is stale now
        self._owe((mx.array(heads), mx.array(where)), live - query_base)

    def _owe(self, index: tuple, owed: int) -> None:
        """New tokens at `index` of the shift array are owed `owed` (their rank
        less where mlx-lm rotated them): written in, not rebuilt."""
        if self._shift is not None:
            self._shift[index] = owed
            self._nonzero = self._nonzero or owed != 0
            self._span = (min(self._span[0], owed), max(self._span[1], owed))

    def refresh(self, slots: "SlotTable", end: int) -> None:
        """After evictions every survivor's rank may drop: it is owed the difference."""
        if not slots.allocated:
            return
        slots.rank[:, :end] = ranks(slots.positions[:, :end])
        self._drop()

    def invalidate(self) -> None:
        self._drop()

    def _drop(self) -> None:
        self._shift, self._rotated = None, None

    def _owed(self, slots: "SlotTable") -> mx.array:
        if self._shift is None:
            shift = np.where(slots.positions >= 0, slots.rank - slots.rot, 0)
            self._nonzero = bool(shift.any())
            self._span = (int(shift.min()), int(shift.max())) if shift.size else (0, 0)
            self._shift = mx.array(shift.astype(np.int32))
            cold = shift[:, : slots.hot0]
            mid = (cold.min(axis=1) + cold.max(axis=1)) // 2 if slots.hot0 else np.zeros(len(shift), np.int64)
            self._cold_shift = mx.array(mid.astype(np.int32))
        return self._shift

    def keys(self, rope: Any, slots: "SlotTable", keys: mx.array, end: int, base: int) -> mx.array:
        """The keys of slots [0, end) rotated to their rank, plus `base` (where
        the queries were rotated relative to the kept count)."""
        if rope is None:
            raise ValueError("positions: 'cache' needs the model's rope; build the heap with make_heap_cache(model, ...)")
        return self._shifted(rope, slots, keys, 0, end, base)

    def hot_keys(self, rope: Any, slots: "SlotTable", keys: mx.array, end: int, base: int) -> mx.array:
        """The keys of slots [hot0, end) (the tier's packed rows aside) rotated as `keys` rotates them."""
        return self._shifted(rope, slots, keys, slots.hot0, end, base)

    def _shifted(self, rope: Any, slots: "SlotTable", keys: mx.array, start: int, end: int, base: int) -> mx.array:
        """Slots [start, end) of the keys (`keys` holds just those) at their shift plus `base`."""
        shift = self._owed(slots)
        if base == 0 and not self._nonzero:
            return keys
        n = end - start
        kept = self._rotated
        if kept is None or kept.start != start or kept.base != base or n > kept.keys.shape[2]:
            # the copy spans every slot from `start` to the capacity, so the
            # tokens appended until the next drop are written into it in place
            # (a token's own call attends it at the base that cancels its shift)
            rotated = shift_keys(rope, keys, shift[:, start:end] + base, (self._span[0] + base, self._span[1] + base))
            room = max(n, slots.capacity - start) - n
            buffer = mx.concatenate([rotated, mx.zeros(rotated.shape[:2] + (room, rotated.shape[3]), rotated.dtype)],
                                    axis=2) if room else rotated
        else:  # slots appended since were stamped at the shift this base cancels (their calls had this base)
            buffer, have = kept.keys, kept.held
            if n > have:
                buffer[:, :, have:n] = keys[:, :, have:n]
        self._rotated = _Rotated(start, base, buffer, n)
        return buffer[:, :, :n]

    def cold_queries(self, rope: Any, slots: "SlotTable", queries: mx.array, base: int) -> mx.array:
        """A decode token's queries (1, Hq, 1, D) rotated back, per KV head, by
        the middle of the shifts its cold keys are owed (plus `base`)."""
        self._owed(slots)
        shift = self._cold_shift + base
        H = shift.shape[0]
        _, n_q, S, D = queries.shape
        return rope(queries.reshape(H, n_q // H, S, D), offset=-shift).reshape(queries.shape)

    def cold_stamp(self, slots: "SlotTable", order: np.ndarray, n_cold: int) -> np.ndarray | None:
        """(H, n_cold) the RoPE shift each key going cold (slots order[:, :n_cold])
        is owed (its rank, kept current by the stamps and `refresh`, less
        where it was rotated), which the cold tier applies as it quantizes:
        new cold keys' in full, already cold keys' only once any head's have
        spread past twice `cold_drift` (every one of them then re-stamped)."""
        if slots.cold is None or not n_cold:
            return None
        cold = order[:, :n_cold]
        heads = np.arange(len(cold))[:, None]
        owed = slots.rank[heads, cold] - slots.rot[heads, cold]
        old = cold < slots.hot0
        lo = np.where(old, owed, owed.max()).min(axis=1)
        hi = np.where(old, owed, owed.min()).max(axis=1)
        if (old.any(axis=1) & (hi - lo > 2 * self.cold_drift)).any():
            self.restamps += 1
        else:
            owed = np.where(old, 0, owed)
        return owed.astype(np.int32)

    def stamped(self, slots: "SlotTable", stamp: np.ndarray | None) -> None:
        """After the compaction that applied `stamp`: the cold keys were rotated
        by it (the compaction's `invalidate` drops the shifts built before)."""
        if stamp is not None:
            slots.rot[:, : stamp.shape[1]] += stamp

    @classmethod
    def bytes_per_slot(cls, head_dim: int, itemsize: int) -> int:
        """The shift and the shifted key kept between collections, counted whether built or not."""
        return cls.slot_bytes + head_dim * itemsize

    def nbytes(self, slots: "SlotTable") -> int:
        return self.bytes_per_slot(slots.keys.shape[-1], slots.keys.dtype.size) * slots.n_heads * slots.capacity


def key_shifts(mode: str) -> AbsoluteShifts:
    return CacheShifts() if mode == "cache" else AbsoluteShifts()
