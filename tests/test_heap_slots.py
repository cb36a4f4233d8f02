"""The slot table: a field declared once is allocated, written, grown, compacted, counted and saved."""

from dataclasses import dataclass
from typing import ClassVar

import mlx.core as mx
import numpy as np
import pytest

from mlx_kv.heap import slots as slots_module
from mlx_kv.heap.cold import ColdTier
from mlx_kv.heap.layer import HeapKVCache
from mlx_kv.heap.slots import SLOTS, Field, SlotTable, slot_bytes
from mlx_kv.policies import H2O, POLICIES, Policy, SlotView

H, D = 2, 32
NOVEL = Field("novel", mx.float32, 0.0, device=True, saved=True, folded=True)
AGE = Field("age", np.int16, 7, device=False, saved=True)
FIELDS = SLOTS + (NOVEL, AGE)


def _kv(n, seed=0):
    rng = np.random.default_rng(seed)
    return (mx.array(rng.normal(size=(1, H, n, D)).astype(np.float32)),
            mx.array(rng.normal(size=(1, H, n, D)).astype(np.float32)))


def test_a_new_field_is_allocated_written_grown_and_counted():
    table = SlotTable(fields=FIELDS)
    keys, values = _kv(6)
    table.allocate(8, keys=keys, values=values)
    assert table.novel.shape == (H, 8) and table.age.shape == (H, 8) and (table.age == 7).all()
    table.write_range(0, 6, keys=keys, values=values, positions=np.arange(6), novel=mx.arange(6) * 1.0, age=1)
    for slots in (np.array([6, 7]), np.array([7, 6])):  # one slot per head
        table.write_slots(slots, keys=keys[0, :, 0], values=values[0, :, 0], positions=6, age=2)
    assert table.age[:, :6].tolist() == [[1] * 6] * 2 and table.age[:, 6:].tolist() == [[2, 2]] * 2
    assert np.array(table.novel)[:, 6:].tolist() == [[0.0, 0.0]] * 2  # written slots not given a value: the fill
    table.grow(12)
    assert table.capacity == 12 and table.novel.shape == (H, 12) and (table.age[:, 8:] == 7).all()
    assert np.array(table.novel)[0, :6].tolist() == [0, 1, 2, 3, 4, 5]
    per_slot = slot_bytes(D, 4, FIELDS)
    assert per_slot == slot_bytes(D, 4) + 4 + 2
    assert table.nbytes == per_slot * H * 12


def test_a_new_field_moves_with_its_token_when_compacted_and_survives_a_save():
    table = SlotTable(fields=FIELDS)
    keys, values = _kv(10)
    table.allocate(10, keys=keys, values=values)
    table.write_range(0, 10, keys=keys, values=values, positions=np.arange(10),
                      novel=mx.arange(10) * 10.0, age=np.arange(10))
    order = np.array([[9, 2, 4], [0, 1, 8]])
    table.take(order, 0, capacity=5, end=10)
    assert table.capacity == 5 and table.positions.tolist() == [[9, 2, 4, -1, -1], [0, 1, 8, -1, -1]]
    assert np.array(table.novel).tolist() == [[90, 20, 40, 0, 0], [0, 10, 80, 0, 0]]
    assert table.age.tolist() == [[9, 2, 4, 7, 7], [0, 1, 8, 7, 7]]
    np.testing.assert_array_equal(np.array(table.keys)[0, 1, :3], np.array(keys)[0, 1, [0, 1, 8]])
    saved = table.saved(3)
    assert {"novel", "age", "keys", "positions"} <= set(saved) and "bias" not in saved and "rank" not in saved
    back = SlotTable.from_saved(saved, fields=FIELDS)
    assert np.array(back.novel).tolist() == [[90, 20, 40], [0, 10, 80]] and back.age.dtype == np.int16
    older = SlotTable.from_saved({k: v for k, v in saved.items() if k != "age"}, fields=FIELDS)
    assert (older.age == 7).all()  # a file written before the field existed: its fill


def test_cold_fields_are_gathered_through_the_cold_tier():
    table = SlotTable(ColdTier(8))
    keys, values = _kv(10, seed=1)
    table.allocate(10, keys=keys, values=values)
    table.write_range(0, 10, keys=keys, values=values, positions=np.arange(10))
    table.take(np.tile(np.arange(10), (H, 1)), 4, capacity=10, end=10)
    assert table.hot0 == 4 and table.keys.shape[2] == 6 and table.cold.size == 4
    full = np.array(table.full("keys", 10))
    np.testing.assert_array_equal(full[:, :, 4:], np.array(keys)[:, :, 4:])  # hot rows exact
    np.testing.assert_allclose(full[:, :, :4], np.array(keys)[:, :, :4], atol=0.05)  # cold rows quantized
    assert table.full("acc", 10).shape == (H, 10)  # a field the cold tier does not hold is never split
    # a cold token moving back to the hot part keeps its quantized value
    table.take(np.tile(np.array([0, 1, 2, 3, 4, 5]), (H, 1))[:, ::-1].copy(), 0, capacity=6, end=10)
    assert table.hot0 == 0
    np.testing.assert_array_equal(np.array(table.keys)[:, :, 2:], full[:, :, 3::-1])


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="accumulator"):
        Field("x", np.float32, 0.0, device=False, saved=True, folded=True)
    with pytest.raises(ValueError, match="cold tier"):
        Field("x", mx.float32, 0.0, device=True, saved=True, cold=True)


def _fed_heap(policy=None, **settings):
    layer = HeapKVCache(24, sinks=2, window=4, policy=policy or H2O(), **settings)
    rng = np.random.default_rng(0)
    for t in range(60):
        k = mx.array(rng.normal(size=(1, H, 1, D)).astype(np.float32))
        q = mx.array(rng.normal(size=(1, 2 * H, 1, D)).astype(np.float32))
        kk, vv = layer.update_and_fetch(k, k)
        mx.eval(layer.attend(q, kk, vv, scale=D ** -0.5))
    return layer


def test_a_heap_counts_every_slot_field_in_nbytes():
    layer = _fed_heap(compact_threshold=0.5)
    assert layer.nbytes == HeapKVCache.slot_bytes(D, 4) * H * layer.slots.capacity
    assert not hasattr(_fed_heap(cold_bits=8), "bits")  # mlx-lm would route a cache with `bits` to quantized SDPA


def test_restoring_state_keeps_the_heaps_own_settings_and_reads_old_tuple_states():
    layer = _fed_heap()
    twin = HeapKVCache(24, sinks=2, window=4, policy=H2O())
    twin.diagnostics_every = 1
    twin.state = layer.state
    assert twin.diagnostics_every == 1  # set on this object, not re-initialised
    assert [list(k) for k in twin.kept_positions()] == [list(k) for k in layer.kept_positions()]
    assert twin.tokens_seen == layer.tokens_seen and twin.evictions == layer.evictions
    state = layer.state
    legacy = [state[k] for k in ("keys", "values", "acc", "seen", "positions", "tenured", "survived", "rot",
                                 "info", "meta")]
    old = HeapKVCache.from_state(legacy)
    assert [list(k) for k in old.kept_positions()] == [list(k) for k in layer.kept_positions()]
    np.testing.assert_array_equal(np.array(old.slots.acc), np.array(layer.slots.acc[:, : layer.end]))


@dataclass
class PeakAttention(Policy):
    """The best single call's mean attention a token ever drew: an accumulator folded by max."""

    name: ClassVar[str] = "peak"

    def accumulate(self, folded, weights, count):
        return {**super().accumulate(folded, weights, count),
                "novel": mx.maximum(folded["novel"], weights / mx.maximum(count, 1.0))}

    def score(self, view: SlotView) -> np.ndarray:
        return view.novel


def test_a_new_accumulator_costs_one_declaration_and_the_policy_that_reads_it(monkeypatch):
    monkeypatch.setattr(slots_module, "SLOTS", SLOTS + (NOVEL,))
    monkeypatch.setitem(POLICIES, "peak", PeakAttention)
    layer = _fed_heap(PeakAttention(), collect_batch=4)  # (collections of one slot refill it, never compact)
    novel = np.array(layer.slots.novel[:, : layer.end])
    alive = layer.slots.positions[:, : layer.end] >= 0
    assert layer.evictions > 0 and layer.compactions > 0
    assert 0 < novel[alive].max() <= 1 and np.all(novel[alive] >= 0)
    assert HeapKVCache.slot_bytes(D, 4) == slot_bytes(D, 4, SLOTS) + 4  # budgets in bytes count it too
    assert layer.nbytes == HeapKVCache.slot_bytes(D, 4) * H * layer.slots.capacity
    restored = HeapKVCache.from_state(layer.state)
    np.testing.assert_array_equal(np.array(restored.slots.novel), novel)


def test_slots_from_the_end_on_hold_their_fills_so_a_new_token_writes_only_what_it_brings():
    layer = _fed_heap(collect_batch=4)  # (compacting collections: the last tokens sit in the last slots)
    layer.trim(3)  # gives the last three slots back
    slots, end = layer.slots, layer.end
    assert layer.tokens_seen == 57 and end < slots.capacity
    for f in slots.fields:
        if f.reset and f.name != "keys" and f.name != "values":
            tail = np.array(getattr(slots, f.name))[..., end:]
            assert np.all((tail == f.fill) | (np.isnan(tail) & np.isnan(f.fill))), f.name
    np.testing.assert_array_equal(np.array(slots.keys)[:, :, end:], 0.0)


def test_a_one_slot_collection_lets_the_next_token_take_the_slot_instead_of_compacting():
    """A head with one slot of room (a head plan's floor) collects at every
    decode step; copying its arrays each time made decoding 30% slower."""
    layer = _fed_heap(collect_batch=1)  # budget 24
    assert layer.collections > 30 and layer.compactions <= 1
    assert layer.live == 24 and layer.end <= layer.slots.capacity <= 24
    assert sorted(np.concatenate(layer.kept_positions()).tolist()) == sorted(
        layer.slots.positions[:, : layer.end][layer.slots.positions[:, : layer.end] >= 0].tolist())
