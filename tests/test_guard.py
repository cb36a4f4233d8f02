"""Memory guard: pressure tightens the heap, calm relaxes it, the session answers on."""

from dataclasses import dataclass

from mlx_kv.engine import Session
from mlx_kv.guard import MemoryGuard
from mlx_kv.heap.headwise import heaps

DOC = " ".join(f"w{i % 90}" for i in range(1200))


@dataclass
class FakeSample:
    pressure: str = "normal"
    swap_out_rate: float | None = 0.0


def test_pressure_shrinks_the_budget_and_calm_restores_it(tiny_model_dir):
    session = Session.load(str(tiny_model_dir), budget=400, window=16)
    session.ingest(DOC)
    guard = MemoryGuard(session, shrink=0.5, calm_samples=3)
    trace = []
    samples = ([FakeSample()] + [FakeSample("warn")] + [FakeSample(swap_out_rate=50 * 2**20)]
               + [FakeSample("critical")] * 3 + [FakeSample()] * 3)
    for sample in samples:
        event = guard.observe(sample)
        trace.append((sample.pressure, session.cache[0].budget, session.cache[0].live, str(event) if event else ""))
        assert all(layer.live <= layer.budget for layer in session.cache)
        assert list(session.chat("w1 w2", max_tokens=3)) is not None  # answers on
    budgets = [b for _, b, _, _ in trace]
    assert budgets[:4] == [400, 200, 100, 50]
    assert min(budgets) == 50  # floor: 1/8 of the user's budget
    assert budgets[-1] == 400 and guard.events[-1].action == "relax"
    assert "memory pressure warn" in trace[1][3] and "swapping out" in trace[2][3]


def test_the_session_owns_its_guard_and_a_new_budget_resets_it(tiny_model_dir):
    session = Session.load(str(tiny_model_dir), budget=400, window=16)
    assert session.observe_system(FakeSample()) is None
    note = session.observe_system(FakeSample("warn"))
    assert note == "memory guard: tighten heap to 200 tokens/layer (memory pressure warn)"
    assert session.cache[0].budget == 200
    session.set_budget(300)  # the user's new budget: calm samples restore to it, not to 400
    assert session.observe_system(FakeSample("critical")).startswith("memory guard: tighten heap to 150")
    for _ in range(4):
        assert session.observe_system(FakeSample()) is None
    assert "relax heap to 300" in session.observe_system(FakeSample())
    session.observe_system(FakeSample("warn"))
    session.clear()  # a fresh heap at the user's budget, and a fresh guard
    assert session.cache[0].budget == 300 and session.observe_system(FakeSample()) is None


def test_a_tightened_heap_gives_its_memory_back_to_the_kernel(tiny_model_dir, monkeypatch):
    """Shrinking empties MLX's cache and trims the C heap (without the trim the
    freed arrays stayed resident: the default model's RSS did not move when the
    guard halved a 4096-token heap); growing does neither."""
    import mlx.core as mx

    import mlx_kv.engine as engine

    calls = []
    monkeypatch.setattr(engine, "release_freed_memory", lambda: calls.append("trim"))
    monkeypatch.setattr(mx, "clear_cache", lambda: calls.append("clear"))
    session = Session.load(str(tiny_model_dir), budget=400, window=16)
    session.ingest(" ".join(f"w{i % 90}" for i in range(600)))
    session.set_layer_budgets([200] * len(session.cache))
    assert calls == ["clear", "trim"]
    assert all(unit.slots.capacity <= unit.budget for unit in heaps(session.cache))  # (each KV head's own arrays)
    assert sum(unit.budget for unit in heaps(session.cache)) == 200 * len(heaps(session.cache))
    session.set_layer_budgets([400] * len(session.cache))
    assert calls == ["clear", "trim"]

