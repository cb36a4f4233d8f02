"""One layer's per-slot arrays, declared once.

The heap keeps a dozen arrays per (kv_head, slot): keys and values on the
device, the policy's accumulators and the dead-slot bias beside them, and
host-side bookkeeping (position, tier, age, rotation, information signals).
Every one of them is grown, compacted, written and saved the same way, so
each is a `Field` of SLOTS and the table derives all of that from the
declaration; a new per-slot field is one more line here.

Slot s of every field belongs to the same token. Fields marked `cold` (keys
and values) store only slots [hot0, capacity) at the model's dtype; slots
below hot0 live quantized in the cold tier (mlx_kv.heap.cold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import mlx.core as mx
import numpy as np

from mlx_kv.heap.cold import ColdTier


@dataclass(frozen=True)
class Field:
    name: str
    dtype: Any  # an mx dtype on the device, a numpy dtype on the host; None: the model's (keys, values)
    fill: Any  # what a slot holds until something is written to it
    device: bool  # an mx.array next to attention, or a numpy array on the host
    saved: bool  # part of `state`; the others are rebuilt from what is
    channels: int = 0  # a leading axis of this many channels (the information signals)
    model_rows: bool = False  # shaped (1, H, slots, D) like the model's keys/values, whose dtype and D it takes
    cold: bool = False  # slots below hot0 live quantized in the cold tier
    folded: bool = False  # a policy accumulator: folded on the device at each call, read at collections
    reset: bool = True  # a new token's slot starts at `fill`; False: the field's owner writes it
    moved: bool = True  # compaction moves it with its token; False: every kept slot restarts at `fill`
    axis: int = field(init=False)  # the slot axis; the head axis is just before it

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", 2 if self.model_rows or self.channels else 1)
        if self.folded and not (self.device and self.axis == 1):
            raise ValueError(f"slot field {self.name}: an accumulator is an (H, slots) device array")
        if self.cold and not self.model_rows:
            raise ValueError(f"slot field {self.name}: only keys/values rows can be stored in the cold tier")
        if self.model_rows and not self.device:
            raise ValueError(f"slot field {self.name}: keys/values rows live on the device")

    def slot_bytes(self, head_dim: int, itemsize: int) -> int:
        """Bytes one slot of one head costs in this field."""
        if self.model_rows:
            return head_dim * itemsize
        size = np.dtype(self.dtype).itemsize if not self.device else self.dtype.size
        return size * max(1, self.channels)


SLOTS: tuple[Field, ...] = (
    Field("keys", None, 0.0, device=True, saved=True, model_rows=True, cold=True),
    Field("values", None, 0.0, device=True, saved=True, model_rows=True, cold=True),
    Field("acc", mx.float32, 0.0, device=True, saved=True, folded=True),  # attention, as the policy folds it
    Field("seen", mx.float32, 0.0, device=True, saved=True, folded=True),  # queries that could see the slot
    # the most attention a replay of the slot's chunk paid it (mlx_kv.replay); 0 until replayed
    Field("recon", mx.float32, 0.0, device=True, saved=True, folded=True),
    Field("bias", mx.float32, 0.0, device=True, saved=False, moved=False),  # 0 on live slots, -inf on dead ones
    Field("positions", np.int64, -1, device=False, saved=True),  # the token's original position; -1: dead
    Field("tenured", np.bool_, False, device=False, saved=True),
    Field("survived", np.int32, 0, device=False, saved=True),  # collections survived
    # positions="cache" (mlx_kv.positions stamps them): where the stored key was rotated, its rank in the cache now
    Field("rot", np.int32, 0, device=False, saved=True, reset=False),
    Field("rank", np.int32, 0, device=False, saved=False, reset=False),
    Field("info", np.float32, np.nan, device=False, saved=True, channels=2),  # surprisal, entropy; nan: unknown
)


def slot_bytes(head_dim: int, itemsize: int, fields: tuple[Field, ...] | None = None) -> int:
    """Bytes one slot of one KV head costs in every field (see SlotTable.nbytes)."""
    return sum(f.slot_bytes(head_dim, itemsize) for f in fields or SLOTS)


class SlotTable:
    """The per-slot arrays of one layer: one attribute per field, named as
    declared, each `capacity` slots wide (cold fields: capacity - hot0)."""

    def __init__(self, cold: ColdTier | None = None, fields: tuple[Field, ...] | None = None) -> None:
        self.fields = fields = fields or SLOTS
        self._by_name = {f.name: f for f in fields}
        self.folded = tuple(f.name for f in fields if f.folded)
        # Worked out once for the writes every decode step makes: the fills of
        # a new slot, and which of the index forms built per write each field takes.
        self._fills = {f.name: f.fill for f in fields if f.reset}
        self._range_form = {f.name: ((2 if f.cold else 1) if f.axis == 2 else 0) for f in fields}
        self._slot_form = {f.name: _slot_form(f) for f in fields}
        self.cold = cold
        self.hot0 = 0  # slots [0, hot0) of the cold fields are in the cold tier
        self.capacity = 0
        self.n_heads = 0
        self.allocated = False
        self._rows: dict[str, tuple[Any, int]] = {}  # model_rows fields: (dtype, D)
        for f in fields:  # empty until the first tokens say how many heads (and, for keys, which dtype)
            setattr(self, f.name, None if f.model_rows else self._blank(f, 0))

    # ------------------------------------------------------------ allocation
    def allocate(self, capacity: int, **like: mx.array) -> None:
        """Empty slots for the heads of the first tokens; `like` are their keys
        and values, by field name, for the fields shaped like them."""
        self.n_heads = next(iter(like.values())).shape[1]
        self._rows = {name: (a.dtype, a.shape[-1]) for name, a in like.items()}
        for f in self.fields:
            setattr(self, f.name, self._blank(f, capacity))
        self.capacity, self.hot0, self.allocated = capacity, 0, True

    def grow(self, capacity: int) -> None:
        for f in self.fields:
            setattr(self, f.name, self._padded(f, getattr(self, f.name), capacity - (self.hot0 if f.cold else 0)))
        self.capacity = capacity

    def _padded(self, f: Field, kept, width: int):
        """`kept` slots first, then blank ones up to `width` (all blank for kept None)."""
        if kept is None:
            return self._blank(f, width)
        n = kept.shape[f.axis]
        if n == width:
            return kept
        if f.device:
            return mx.concatenate([kept, self._blank(f, width - n)], axis=f.axis)
        out = self._blank(f, width)  # host fields keep their slot axis last
        out[..., :n] = kept
        return out

    def _blank(self, f: Field, n: int):
        if f.model_rows:
            dtype, width = self._rows[f.name]
            return mx.full((1, self.n_heads, n, width), f.fill, dtype)
        shape = ((f.channels,) if f.channels else ()) + (self.n_heads, n)
        return mx.full(shape, f.fill, f.dtype) if f.device else np.full(shape, f.fill, f.dtype)

    # ---------------------------------------------------------------- writes
    def write_range(self, start: int, stop: int, **data: Any) -> None:
        """New tokens in slots [start, stop) of every head: the given fields
        from `data`. The slots must hold their fills, as every slot from the
        layer's end on does (allocation, growth and compaction leave them so,
        and `clear` what a shrinking end gives back): a decode token then
        writes only what it brings."""
        self._write(start, stop, data)

    def clear(self, start: int, stop: int) -> None:
        """Slots [start, stop) back to their fills (their owners' fields aside)."""
        self._write(start, stop, self._fills)

    def _write(self, start: int, stop: int, data: dict[str, Any]) -> None:
        every, span = slice(None), slice(start, stop)
        forms = ((every, span), (every, every, span), (every, every, slice(start - self.hot0, stop - self.hot0)))
        arrays, form = self.__dict__, self._range_form
        for name, value in data.items():
            arrays[name][forms[form[name]]] = value

    def write_slots(self, slots: np.ndarray, **data: Any) -> None:
        """A new token in one slot per head, slots[h] for head h (a dead slot
        being reused): the given fields from `data` (model_rows: (H, D)),
        the others back to their fills (their owners' fields aside)."""
        every, heads = slice(None), np.arange(len(slots))
        h_dev, s_dev = mx.array(heads), mx.array(slots)
        s_hot = mx.array(slots - self.hot0) if self.hot0 else s_dev
        # (model rows index their batch axis with 0: a slice there costs MLX an arange and reshapes per write)
        forms = ((h_dev, s_dev), (0, h_dev, s_dev), (0, h_dev, s_hot), (heads, slots), (every, heads, slots),
                 (every, h_dev, s_dev))
        arrays, form = self.__dict__, self._slot_form
        for name, value in {**self._fills, **data}.items():
            arrays[name][forms[form[name]]] = value

    def fold(self, end: int, accumulate: Callable[..., dict[str, mx.array]], weights: mx.array,
             count: mx.array, settle: bool = True) -> None:
        """Fold one call's attention into the accumulators of slots [0, end)
        with `accumulate` (the policy's), and with `settle` start computing
        them. Without it the sums stay lazy until a later settle or a read:
        scheduling them apart from the step's own graph cost a decode step a
        quarter of its time here (h2o, 2k keys), and weights that the call's
        output already computed hold nothing else alive."""
        arrays, current, written = self.__dict__, {}, []
        for name in self.folded:
            current[name] = arrays[name][:, :end]
        for name, folded in accumulate(current, weights, count).items():
            target = arrays[name]
            target[:, :end] = folded
            written.append(target)
        if settle:
            mx.async_eval(written)

    def reset_accumulators(self) -> None:
        """Back to their fill: a new policy starts afresh."""
        for name in self.folded:
            a = getattr(self, name)
            setattr(self, name, mx.full(a.shape, self._by_name[name].fill, a.dtype))

    # ----------------------------------------------------------------- reads
    def used(self, name: str, end: int):
        """Field `name` of slots [0, end) as stored (cold fields: their hot part)."""
        f = self._by_name[name]
        offset = self.hot0 if f.cold else 0
        return getattr(self, name)[(slice(None),) * f.axis + (slice(0, end - offset),)]

    def full(self, name: str, end: int) -> mx.array:
        """Field `name` of slots [0, end), the cold tier's slots dequantized."""
        hot = self.used(name, end)
        f = self._by_name[name]
        if not (self.hot0 and f.cold):
            return hot
        return mx.concatenate([self.cold.dequantized(name), hot], axis=f.axis)

    def host_view(self, end: int, reads: tuple[str, ...]) -> dict[str, np.ndarray]:
        """What a policy reads at a collection, slots [0, end): host copies of
        the accumulators it `reads` (zeros for the others: no device sync for
        what nobody looks at), the keys or values (1, H, slots, D -> H, slots, D,
        the cold tier's dequantized) only if it reads them, and the host
        fields as they are."""
        view = {}
        for f in self.fields:
            if f.model_rows:
                if f.name in reads:
                    view[f.name] = np.array(self.full(f.name, end)[0])
            elif f.folded:
                view[f.name] = np.array(self.used(f.name, end)) if f.name in reads else np.zeros((self.n_heads, end))
            elif not f.device:
                view[f.name] = self.used(f.name, end)
        return view

    @property
    def nbytes(self) -> int:
        if not self.allocated:
            return 0
        cold = self.cold.nbytes if self.cold is not None else 0
        return cold + sum(getattr(self, f.name).nbytes for f in self.fields)

    # ------------------------------------------------------------ compaction
    def take(self, order: np.ndarray, n_cold: int, capacity: int, end: int, key_shift: np.ndarray | None = None,
             rotate: Callable[[mx.array, np.ndarray], mx.array] | None = None) -> None:
        """Keep the slots `order` (H, n) of [0, end), in that order per head,
        the first n_cold of each head in the cold tier (its keys rotated by
        `key_shift`, see ColdTier.rebuild); room for `capacity`."""
        cold = [f for f in self.fields if f.cold]
        hot = {f.name: self.used(f.name, end) for f in cold}
        hot_order = order[:, n_cold:]
        if self.hot0 and (hot_order < self.hot0).any():  # a cold token left the tier (e.g. tenured)
            sources = {f.name: self.full(f.name, end) for f in cold}  # (before the rebuild replaces the tier)
        else:
            sources, hot_order = hot, hot_order - self.hot0
        if self.cold is not None:
            self.cold.rebuild(order[:, :n_cold], self.hot0, hot, key_shift, rotate)
        index = (order, mx.array(order.astype(np.int32)), np.arange(self.n_heads)[:, None])
        hot_index = (hot_order, mx.array(hot_order.astype(np.int32)), None)
        for f in self.fields:
            if not f.moved:
                kept = None
            elif f.cold:
                kept = _gather(f, sources[f.name], hot_index)
            else:
                kept = _gather(f, self.used(f.name, end), index)
            setattr(self, f.name, self._padded(f, kept, capacity - (n_cold if f.cold else 0)))
        self.hot0, self.capacity = n_cold, capacity
        cold_arrays = self.cold.arrays() if self.cold is not None else []
        # scheduled, not waited for: waiting here made a decode step wait for
        # the work queued before it at every collection (a 2k session's 90
        # head heaps collect ~5 times a step: a fifth of its time)
        mx.async_eval([getattr(self, f.name) for f in self.fields if f.device and f.moved] + list(cold_arrays))

    # --------------------------------------------------------- serialization
    def saved(self, end: int) -> dict[str, mx.array]:
        """The saved fields of slots [0, end), at full precision, as mx arrays."""
        out = {}
        for f in self.fields:
            if not f.saved:
                continue
            a = self.full(f.name, end) if f.device else self.used(f.name, end)
            out[f.name] = a if f.device else mx.array(a.astype(np.uint8) if a.dtype == np.bool_ else a)
        return out

    def head_of(self, saved: dict[str, mx.array], head: int) -> dict[str, mx.array]:
        """KV head `head`'s part of what `saved` wrote, as a one-head table writes it."""
        return {name: a[(slice(None),) * (self._by_name[name].axis - 1) + (slice(head, head + 1),)]
                for name, a in saved.items()}

    @classmethod
    def from_saved(cls, arrays: dict[str, mx.array], cold: ColdTier | None = None,
                   fields: tuple[Field, ...] | None = None) -> "SlotTable":
        """A table holding exactly the slots `saved` wrote; fields it lacks
        (not saved, or newer than the file) start at their fill."""
        table = cls(cold, fields)
        fields = table.fields
        keys = arrays["keys"]
        table.n_heads, n = keys.shape[1], keys.shape[2]
        table._rows = {f.name: (arrays[f.name].dtype, arrays[f.name].shape[-1]) for f in fields if f.model_rows}
        for f in fields:
            if f.saved and f.name in arrays:
                a = arrays[f.name]
                setattr(table, f.name, a if f.device else np.array(a).astype(f.dtype))
            else:
                setattr(table, f.name, table._blank(f, n))
        table.capacity, table.allocated = n, True
        return table


def _slot_form(f: Field) -> int:
    """Which of write_slots' index forms field f takes."""
    if not f.device:
        return 4 if f.channels else 3
    if f.model_rows:
        return 2 if f.cold else 1
    return 5 if f.channels else 0


def _gather(f: Field, a, index: tuple):
    """Slots `order` (H, n) of each head of `a`; index is (order, the same
    on the device, head numbers as a column)."""
    order, on_device, heads = index
    if f.device:
        shape = (1,) * (f.axis - 1) + order.shape + (1,) * (a.ndim - f.axis - 1)
        return mx.take_along_axis(a, on_device.reshape(shape), axis=f.axis)
    return a[(slice(None),) * (f.axis - 1) + (heads, order)]

