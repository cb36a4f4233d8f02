"""What the heap remembers of each turn (Session.memory_map), the overflow
modes, regenerate, and the tiers' positions the map reads."""

import threading

import numpy as np
import pytest

from conftest import write_model_folder
from mlx_kv.engine import Session
from mlx_kv.errors import UserError
from mlx_kv.events import DownloadNote
from mlx_kv.memory_map import holder_counts, memory_map

DOC = " ".join(f"w{i % 90}" for i in range(1500))


@pytest.fixture
def session(tiny_model_dir):
    return Session.load(str(tiny_model_dir), budget=96, policy="h2o", window=16)


def test_spans_cover_every_position_in_order(session, tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text(DOC)
    session.ingest(str(doc))
    list(session.chat("w1 w2 w3", max_tokens=6))
    kinds = [(s["kind"], s["source"]) for s in session.spans]
    assert kinds == [("document", "notes.txt"), ("user", ""), ("assistant", "")]
    assert session.spans[0]["start"] == 0
    for a, b in zip(session.spans, session.spans[1:]):
        assert a["stop"] == b["start"]
    assert session.spans[-1]["stop"] == session.tokens_seen
    assert [session.transcript[s["turn"]]["role"] for s in session.spans] == ["document", "user", "assistant"]


def test_the_map_counts_what_every_layer_and_head_keeps(session):
    session.ingest(DOC)
    list(session.chat("w5 w6", max_tokens=4))
    m = session.memory_map(detail=(0,))
    assert (m.layers, m.heads) == (2, 2) and m.pairs == 4 and m.tokens_seen == session.tokens_seen
    doc, asked, reply = m.spans
    # a 1,500-token document in a 96-token heap: most of it is gone, the newest turns are whole
    assert doc.kept < 0.1 and doc.evicted > 0.9
    assert asked.kept == 1.0 and (reply.length == 0 or reply.kept == 1.0)
    t = doc.tokens
    assert len(t.texts) == len(t.kept) == doc.length
    assert t.kept[0] == 1.0  # the sinks
    assert "".join(t.texts).split()[:3] == ["w0", "w1", "w2"]
    # the per-token shares agree with the heap's own kept positions
    want = np.zeros(doc.length)
    for layer in session.cache:
        for row in layer.kept_positions():
            want[row[row < doc.stop]] += 1
    assert np.allclose(np.array(t.kept), want / 4)
    assert np.isclose(doc.kept, want.mean() / 4)
    assert set(t.cold) == {0.0} and set(t.spilled) == {0.0}  # no cold tier, no recovery tier
    assert asked.tokens is None  # detail only where it was asked for


def test_cold_and_spilled_tokens_are_marked(tmp_path):
    folder = write_model_folder(tmp_path / "hd32", hidden_size=128, num_attention_heads=4)
    cold = Session.load(str(folder), budget=96, window=16, cold_bits=4)
    cold.ingest(DOC)
    t = cold.memory_map(detail=(0,)).spans[0].tokens
    assert any(c > 0 for c in t.cold)
    assert all(c <= k for c, k in zip(t.cold, t.kept))  # cold tokens are kept tokens
    layer = cold.cache[0]
    assert sum(len(r) for r in layer.cold_positions()) == layer.cold_tokens * len(layer.kept_positions())

    spilled = Session.load(str(folder), budget=96, window=16, recovery="64MB")
    spilled.ingest(DOC)
    t = spilled.memory_map(detail=(0,)).spans[0].tokens
    assert sum(t.spilled) > 0
    assert all(k + s <= 1.0 + 1e-9 for k, s in zip(t.kept, t.spilled))  # a pair keeps a token or spilled it
    rows = spilled.cache[0].spilled_positions()
    kept = spilled.cache[0].kept_positions()
    for on_disk, in_memory in zip(rows, kept):
        assert len(on_disk) and not set(on_disk.tolist()) & set(in_memory.tolist())


def test_holder_counts_on_stand_in_layers():
    class Layer:
        def __init__(self, rows):
            self.rows = [np.array(r) for r in rows]

        def kept_positions(self):
            return self.rows

        def cold_positions(self):
            return [r[:1] for r in self.rows]

        def spilled_positions(self):
            return [np.array([9, 3]), np.array([])]

    layers = [Layer([[0, 1, 5], [0, 2, 5]]), Layer([[0, 1, 2], [0, 5, 7]])]
    kept, cold, spilled, pairs = holder_counts(layers, 0, 8, tiers=True)
    assert pairs == 4
    assert kept.tolist() == [4, 2, 2, 0, 0, 3, 0, 1]
    assert cold.tolist() == [4, 0, 0, 0, 0, 0, 0, 0]
    assert spilled.tolist() == [0, 0, 0, 2, 0, 0, 0, 0]  # 9 is outside the range
    m = memory_map(layers, [{"kind": "document", "source": "a", "turn": 0, "start": 0, "stop": 8}], 8, (0,))
    assert m.spans[0].kept == pytest.approx(12 / 32)
    assert m.spans[0].tokens.texts == ("",) * 8


def test_overflow_stop_refuses_what_would_evict(session):
    session.set_overflow("stop")
    with pytest.raises(UserError, match=r"context full \(overflow: stop\): .* needs 1,500 tokens and 96 of the 96"):
        session.ingest(DOC)
    assert session.transcript == [] and session.tokens_seen == 0  # nothing was read
    session.ingest(" ".join(["w3"] * 60))
    pieces = list(session.chat("w1 w2", max_tokens=200))
    assert session.tokens_seen <= 96  # the reply ended at the budget
    assert session.cache[0].evictions == 0
    with pytest.raises(UserError, match="context full"):
        list(session.chat("w4 w5 w6 w7", max_tokens=5))
    assert session.transcript[-1]["content"] == "".join(pieces)  # the refused message is not kept
    session.set_overflow("heap")
    assert list(session.chat("w4 w5", max_tokens=3)) is not None
    with pytest.raises(UserError, match="overflow: unknown mode 'lru'"):
        session.set_overflow("lru")


def test_overflow_rolling_keeps_the_newest_and_gives_the_policy_back(session):
    session.set_overflow("rolling")
    assert session.config.policy == "streaming" and session.overflow == "rolling"
    session.ingest(DOC)
    kept = session.cache[0].kept_positions()[0]
    newest = np.arange(session.tokens_seen - 16, session.tokens_seen)
    assert set(newest) <= set(kept.tolist()) and set(range(4)) <= set(kept.tolist())
    session.set_overflow("heap")
    assert session.config.policy == "h2o"
    session.set_overflow("rolling")
    session.set_policy("tova")  # choosing a policy ends the rolling window
    assert session.overflow == "heap"


def test_regenerate_takes_the_turn_back_and_answers_again(session):
    session.ingest(" ".join(["w7"] * 20))
    first = "".join(session.chat("w1 w2 w3", max_tokens=6))
    seen = session.tokens_seen
    again = "".join(session.regenerate(max_tokens=6))
    assert again == first  # greedy: the same answer from the same heap
    assert session.tokens_seen == seen
    assert [t["role"] for t in session.transcript] == ["document", "user", "assistant"]
    assert [s["kind"] for s in session.spans] == ["document", "user", "assistant"]
    other = session.regenerate(max_tokens=6, temperature=5.0)
    "".join(other)
    assert session.transcript[1]["content"] == "w1 w2 w3"
    session.clear()
    with pytest.raises(UserError, match="not a reply"):
        session.regenerate()


def test_regenerate_matches_asking_once(tiny_model_dir):
    """Taking a turn back leaves the heap as if it had never been read (nothing evicted meanwhile)."""
    a = Session.load(str(tiny_model_dir), budget=512, window=16)
    b = Session.load(str(tiny_model_dir), budget=512, window=16)
    for s in (a, b):
        s.ingest(" ".join(f"w{i % 50}" for i in range(100)))
    list(a.chat("w9 w8", max_tokens=5))
    list(a.chat("w1 w2", max_tokens=8))
    answer = "".join(a.regenerate(max_tokens=8))
    list(b.chat("w9 w8", max_tokens=5))
    assert answer == "".join(b.chat("w1 w2", max_tokens=8))


def test_spans_and_overflow_survive_save_and_restore(session, tmp_path):
    session.ingest(DOC)
    list(session.chat("w1", max_tokens=3))
    session.set_overflow("rolling")
    path = tmp_path / "s.session"
    session.save(str(path))
    restored = Session.restore(str(path))
    assert restored.spans == session.spans and restored.overflow == "rolling"
    assert restored.memory_map() == session.memory_map()
    restored.set_overflow("heap")
    assert restored.config.policy == "h2o"


def test_cancel_mid_document_records_what_was_read(session):
    cancel = threading.Event()

    def stop_after_first(p):
        cancel.set()

    session.ingest(DOC, progress=stop_after_first, cancel=cancel)
    (span,) = session.spans
    assert span["stop"] == session.tokens_seen < 1500


def test_download_notes_carry_their_numbers():
    from mlx_kv.models import progress_tqdm

    notes = []
    bar = progress_tqdm("org/model", notes.append)(total=10 * 2**20, unit="B")
    bar.update(5 * 2**20)
    assert isinstance(notes[-1], DownloadNote) and notes[-1] == "downloading org/model: 50% of 10.0 MiB"
    assert notes[-1].fraction == 0.5 and notes[-1].total_bytes == 10 * 2**20 and notes[-1].source == "org/model"
