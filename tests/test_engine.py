"""Session: ingest with progress, chat, cancel, save/restore, clear errors."""

import threading

import numpy as np
import pytest

from conftest import write_model_folder
from mlx_kv.engine import Session
from mlx_kv.errors import UserError

DOC = " ".join(f"w{i % 90}" for i in range(1500))


@pytest.fixture
def session(tiny_model_dir):
    return Session.load(str(tiny_model_dir), budget=96, policy="h2o", window=16)


def test_ingest_reports_progress_in_order_and_keeps_the_budget(session):
    reports = []
    result = session.ingest(DOC, progress=reports.append)
    assert result.tokens == 1500
    done = [r.tokens_done for r in reports]
    assert done == sorted(done) and done[-1] == 1500 and len(done) == 3
    assert all(r.tokens_total == 1500 for r in reports) and reports[-1].eta_s == 0
    stats = session.heap_stats()
    assert stats.tokens_seen == 1500 and stats.tokens_kept <= 96
    assert stats.nbytes <= stats.budget_bytes
    assert stats.sinks + stats.young + stats.intermediate + stats.tenured == stats.tokens_kept


def test_ingest_file_and_clear_errors(session, tmp_path):
    good = tmp_path / "doc.md"
    good.write_text("# Title\n\n" + DOC)
    assert session.ingest(str(good)).source == "doc.md"
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(UserError, match="binary"):
        session.ingest(str(binary))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        session.ingest(str(empty))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 w1 w2".encode("latin-1"))
    with pytest.raises(UserError, match="UTF-8"):
        session.ingest(str(latin))
    assert session.ingest(str(latin), errors="replace").tokens > 0
    with pytest.raises(UserError, match="does not exist"):
        session.ingest(str(tmp_path / "missing.txt"))


def test_chat_streams_and_cancel_keeps_the_session_consistent(session):
    pieces = list(session.chat("w1 w2 w3", max_tokens=10))
    assert session.transcript[-1] == {"role": "assistant", "content": "".join(pieces)}
    cancel = threading.Event()
    got = []
    for piece in session.chat("w4", max_tokens=50, cancel=cancel):
        got.append(piece)
        if len(got) == 3:
            cancel.set()
    assert len(got) == 3
    assert session.transcript[-1]["content"] == "".join(got)
    assert list(session.chat("w5", max_tokens=4))  # the next message works
    assert session.cache[0].live <= 96


def test_save_restore_continues_identically(session, tmp_path):
    session.ingest(DOC)
    list(session.chat("w1 w2", max_tokens=5))
    path = tmp_path / "s.safetensors"
    session.save(str(path))
    restored = Session.restore(str(path))
    assert restored.transcript == session.transcript
    assert "".join(restored.chat("w7 w8", max_tokens=8)) == "".join(session.chat("w7 w8", max_tokens=8))


def test_bad_settings_are_user_errors(tiny_model_dir, session):
    with pytest.raises(UserError, match="^budget"):
        Session.load(str(tiny_model_dir), budget=10)
    with pytest.raises(UserError, match="^policy"):
        Session.load(str(tiny_model_dir), policy="nope")
    with pytest.raises(UserError, match="does not exist"):
        Session.load("/no/such/model")
    with pytest.raises(UserError, match="^policy"):
        session.set_policy("lru")
    session.ingest(DOC)
    session.set_budget(48)
    assert all(layer.live <= 48 and layer.slots.keys.shape[2] <= 48 for layer in session.cache)
    session.set_policy("tova")
    assert list(session.chat("w3", max_tokens=3))


def test_hub_download_progress_is_reported_in_tenths():
    from mlx_kv.models import progress_tqdm

    messages = []
    bar = progress_tqdm("org/model", messages.append)(total=50 * 2**20, unit="B")
    for _ in range(25):
        bar.update(2 * 2**20)
    assert messages[0] == "downloading org/model: 0% of 50.0 MiB"
    assert messages[-1] == "downloading org/model: 100% of 50.0 MiB" and len(messages) == 11


def test_a_new_budget_keeps_the_policy_arguments_and_a_new_policy_drops_them(tiny_model_dir):
    session = Session.load(str(tiny_model_dir), budget=96, window=16, policy="surprise",
                           policy_args={"alpha": 1.0})
    session.set_budget(80)
    assert session.config.policy_args == {"alpha": 1.0}
    assert session.cache[0].policy.alpha == 1.0
    session.set_policy("h2o")
    assert session.config.policy_args == {}


def test_a_session_with_a_cold_tier_reports_its_quantized_tokens(tmp_path):
    folder = write_model_folder(tmp_path / "hd32", hidden_size=128, num_attention_heads=4)
    session = Session.load(str(folder), budget=96, window=16, cold_bits=4)
    session.ingest(DOC)
    stats = session.heap_stats()
    assert stats.cold_bits == 4 and 0 < stats.cold <= stats.intermediate
    assert stats.nbytes <= stats.budget_bytes


def test_a_cold_tier_on_a_head_dim_mlx_cannot_quantize_is_a_clear_error(tiny_model_dir):
    with pytest.raises(UserError, match="head_dim 16"):
        Session.load(str(tiny_model_dir), budget=96, window=16, cold_bits=4)


@pytest.mark.parametrize("policy", ["keydiff", "h2o"])
def test_pillars_show_where_attention_went_whether_or_not_the_policy_reads_it(tiny_model_dir, tmp_path, policy):
    session = Session.load(str(tiny_model_dir), budget=120, window=16, policy=policy)
    doc = tmp_path / "doc.txt"
    doc.write_text(" ".join(f"w{i % 90 + 2}" for i in range(300)))
    session.ingest(str(doc))
    "".join(session.chat("w3 w4", max_tokens=24))
    pillars = session.heap_stats().pillars
    kept = {int(p) for layer in session.cache for row in layer.kept_positions() for p in row}
    assert pillars and all(p.position in kept and session.config.sinks <= p.position for p in pillars)
    if policy == "keydiff":  # the samples went into acc/seen, which keydiff's own scores never read
        layer = session.cache[0]
        positions, attention = layer.sampled_attention()
        sampled = attention[positions >= 0]
        assert np.isfinite(sampled).any() and np.nanmax(sampled) <= 1.0
