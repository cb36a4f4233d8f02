"""Ctrl-C or Esc during prefill or generation leaves the session consistent."""

import threading

import pytest

from mlx_kv.engine import Session

DOC = " ".join(f"w{i % 90}" for i in range(3000))


@pytest.fixture
def session(tiny_model_dir):
    return Session.load(str(tiny_model_dir), budget=128, window=16)


def assert_consistent(session):
    assert session.tokens_seen == len(session._token_ids)
    for layer in session.cache:
        units = getattr(layer, "heads", [layer])  # (a headwise layer: its heads keep their own counts)
        assert all(unit.live <= unit.budget for unit in units)
        assert [len(k) for k in layer.kept_positions()] == [u.live for u in units for _ in u.kept_positions()]


def test_ctrl_c_during_ingest_keeps_what_was_read(session):
    calls = []

    def interrupt_on_second(progress):
        calls.append(progress.tokens_done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.ingest(DOC, progress=interrupt_on_second)
    assert_consistent(session)
    doc = session.transcript[-1]
    assert doc["partial"] and doc["role"] == "document"
    assert 0 < len(doc["content"]) < len(DOC)
    assert list(session.chat("w1", max_tokens=3)) is not None
    assert_consistent(session)


def test_esc_cancel_during_ingest_stops_between_chunks(session):
    cancel = threading.Event()
    result = session.ingest(DOC, progress=lambda p: cancel.set(), cancel=cancel)
    assert result.tokens == 512
    assert session.transcript[-1]["partial"]
    assert_consistent(session)


def test_ctrl_c_during_generation_keeps_the_partial_reply(session):
    session.ingest(DOC[:2000])
    got = []
    with pytest.raises(KeyboardInterrupt):
        for piece in session.chat("w2 w3", max_tokens=40):
            got.append(piece)
            if len(got) == 4:
                raise KeyboardInterrupt
    assert session.transcript[-1]["content"] == "".join(got)
    assert list(session.chat("w4", max_tokens=3)) is not None
    assert_consistent(session)
