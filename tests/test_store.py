"""Saved sessions: round trip, atomicity (a failed save keeps the earlier one), damage is refused."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from app import store as store_mod
from app.store import SessionStore, data_dir
from mlx_kv.errors import UserError

TRANSCRIPT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is in the doc? ünïcødé"},
    {"role": "assistant", "content": "a *needle*"},
]
SETTINGS = {"budget": "2GB", "policy": "h2o", "system": "be brief"}


def fake_snapshot(payload: bytes):
    """Stands in for Session.save(path): writes a file at path + suffix, like mlx does."""

    def save(path: str) -> None:
        Path(path + ".safetensors").write_bytes(payload)
        Path(path + ".json").write_text('{"meta": 1}')

    return save


def test_data_dir_rules(tmp_path):
    assert data_dir({"MLX_KV_DATA_DIR": str(tmp_path)}) == tmp_path
    assert data_dir({}, "darwin", "/Users/a") == Path("/Users/a/Library/Application Support/mlx-kv")
    assert data_dir({"XDG_DATA_HOME": "/x"}, "linux", "/home/a") == Path("/x/mlx-kv")
    assert data_dir({}, "linux", "/home/a") == Path("/home/a/.local/share/mlx-kv")


def test_env_override_is_the_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_KV_DATA_DIR", str(tmp_path / "d"))
    assert SessionStore().root == tmp_path / "d"


def test_round_trip_with_snapshot(tmp_path):
    st = SessionStore(tmp_path)
    saved = st.save("run1", TRANSCRIPT, SETTINGS, model="bundled", snapshot=fake_snapshot(b"heap-1"))
    loaded = st.load("run1")
    assert loaded.transcript == TRANSCRIPT
    assert loaded.settings == SETTINGS
    assert loaded.model == "bundled"
    assert loaded.snapshot_path == saved.snapshot_path
    assert Path(loaded.snapshot_path + ".safetensors").read_bytes() == b"heap-1"
    assert [n for n, _ in st.list()] == ["run1"]


def test_round_trip_without_snapshot(tmp_path):
    st = SessionStore(tmp_path)
    st.save("plain", TRANSCRIPT, SETTINGS)
    assert st.load("plain").snapshot_path is None


def test_resave_replaces_and_cleans_old_snapshot(tmp_path):
    st = SessionStore(tmp_path)
    first = st.save("s", TRANSCRIPT[:1], SETTINGS, snapshot=fake_snapshot(b"v1"))
    second = st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"v2"))
    assert st.load("s").transcript == TRANSCRIPT
    assert Path(second.snapshot_path + ".safetensors").read_bytes() == b"v2"
    assert not Path(first.snapshot_path).parent.exists()
    assert st.load("s").created == first.created
    assert len(list((tmp_path / "snapshots").iterdir())) == 1


def test_failure_during_snapshot_keeps_earlier_save(tmp_path):
    st = SessionStore(tmp_path)
    good = st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"good"))

    def crashing_save(path: str) -> None:
        Path(path + ".safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(UserError, match="could not save session 's'"):
        st.save("s", TRANSCRIPT + [{"role": "user", "content": "more"}], SETTINGS, snapshot=crashing_save)
    loaded = st.load("s")
    assert loaded.transcript == TRANSCRIPT
    assert Path(loaded.snapshot_path + ".safetensors").read_bytes() == b"good"
    assert loaded.snapshot_path == good.snapshot_path
    # no half-written snapshot left behind
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == [Path(good.snapshot_path).parent.name]


def test_failure_during_database_write_keeps_earlier_save(tmp_path, monkeypatch):
    st = SessionStore(tmp_path)
    good = st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"good"))

    def boom(text: str) -> str:
        raise OSError("power cut")  # raised inside the transaction, before commit

    monkeypatch.setattr(store_mod, "_sha256_text", boom)
    with pytest.raises(UserError):
        st.save("s", [], {}, snapshot=fake_snapshot(b"new"))
    monkeypatch.undo()
    loaded = st.load("s")
    assert loaded.transcript == TRANSCRIPT
    assert Path(loaded.snapshot_path + ".safetensors").read_bytes() == b"good"
    assert len(list((tmp_path / "snapshots").iterdir())) == 1
    assert loaded.snapshot_path == good.snapshot_path


def test_stale_temp_dirs_from_a_crash_are_ignored_and_cleaned(tmp_path):
    st = SessionStore(tmp_path)
    st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"ok"))
    stale = tmp_path / "snapshots" / ".tmp-s-deadbeef"
    stale.mkdir()
    (stale / "heap.safetensors").write_bytes(b"partial")
    fresh = tmp_path / "snapshots" / ".tmp-t-another-writer"
    fresh.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert st.load("s").transcript == TRANSCRIPT
    st.save("t", TRANSCRIPT, SETTINGS)
    assert not stale.exists()
    assert fresh.exists()  # may belong to a save in progress in another instance


def test_missing_session_is_a_clear_error(tmp_path):
    st = SessionStore(tmp_path)
    st.save("a", TRANSCRIPT, SETTINGS)
    with pytest.raises(UserError, match="no saved session named 'b'.*a"):
        st.load("b")


def test_corrupted_snapshot_is_refused(tmp_path):
    st = SessionStore(tmp_path)
    saved = st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"0123456789"))
    f = Path(saved.snapshot_path + ".safetensors")
    data = bytearray(f.read_bytes())
    data[3] ^= 0x01  # bit flip
    f.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted"):
        st.load("s")
    f.write_bytes(b"0123")  # truncated
    with pytest.raises(UserError, match="corrupted"):
        st.load("s")


def test_tampered_transcript_and_version_mismatch_are_refused(tmp_path):
    st = SessionStore(tmp_path)
    st.save("s", TRANSCRIPT, SETTINGS)
    with sqlite3.connect(tmp_path / "sessions.sqlite3") as conn:
        conn.execute("UPDATE sessions SET transcript = '[]' WHERE name = 's'")
    with pytest.raises(UserError, match="checksum"):
        st.load("s")
    st.save("s", TRANSCRIPT, SETTINGS)
    with sqlite3.connect(tmp_path / "sessions.sqlite3") as conn:
        conn.execute("UPDATE sessions SET format_version = 99 WHERE name = 's'")
    with pytest.raises(UserError, match="format 99"):
        st.load("s")


def test_unwritable_root_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(UserError, match="cannot open the session store"):
        SessionStore(blocker / "sub").save("s", [], {})


def test_delete(tmp_path):
    st = SessionStore(tmp_path)
    saved = st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"x"))
    st.delete("s")
    assert st.list() == []
    assert not Path(saved.snapshot_path).parent.exists()


def test_a_save_in_progress_in_another_instance_is_left_alone(tmp_path):
    """Its temporary snapshot directory looks like no committed save: this
    instance's save must neither sweep it as stale nor collect it as an orphan."""
    st = SessionStore(tmp_path)
    st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"one"))
    busy = tmp_path / "snapshots" / f".tmp-{os.getpid()}-t-0123456789ab"  # a live pid, a fresh directory
    busy.mkdir()
    (busy / "heap.safetensors").write_bytes(b"being written")
    orphan = tmp_path / "snapshots" / "u-0123456789ab"  # renamed by a writer killed before its commit
    orphan.mkdir()
    st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"two"))
    assert busy.exists() and not orphan.exists()
    assert len([p for p in (tmp_path / "snapshots").iterdir() if not p.name.startswith(".")]) == 1


def test_store_summaries_and_rename(tmp_path):
    store = SessionStore(tmp_path)
    store.save("a", [{"role": "user", "content": "x"}], {"tokens": 12, "messages": 1}, model="m")
    store.save("b", [], {})
    rows = {r.name: r for r in store.summaries()}
    assert (rows["a"].model, rows["a"].tokens, rows["a"].messages) == ("m", 12, 1)
    assert rows["b"].tokens is None
    store.rename("a", "c")
    assert store.load("c").transcript == [{"role": "user", "content": "x"}]
    with pytest.raises(UserError, match="already named 'b'"):
        store.rename("c", "b")
    with pytest.raises(UserError, match="no saved session named 'zz'"):
        store.rename("zz", "y")


def test_rename_moves_the_snapshot_along_bumps_the_revision_and_respects_another_instance(tmp_path):
    st = SessionStore(tmp_path)
    saved = st.save("a", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"x"))
    assert st.rename("a", "b", expected_revision=saved.revision) == saved.revision + 1
    moved = st.load("b")
    assert moved.revision == saved.revision + 1 and moved.snapshot_path == saved.snapshot_path
    assert Path(moved.snapshot_path + ".safetensors").read_bytes() == b"x"
    with pytest.raises(store_mod.SaveConflict, match="was not renamed"):
        st.rename("b", "c", expected_revision=saved.revision)  # another instance's view: out of date
    assert [n for n, _ in st.list()] == ["b"]
    with pytest.raises(UserError, match="non-empty"):
        st.rename("b", "")


def test_delete_with_a_revision_leaves_a_newer_save_alone(tmp_path):
    st = SessionStore(tmp_path)
    first = st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"1"))
    newer = st.save("s", TRANSCRIPT, SETTINGS, snapshot=fake_snapshot(b"2"))  # another instance's
    assert st.delete("s", expected_revision=first.revision) is False
    assert st.load("s").revision == newer.revision
    assert st.delete("s", expected_revision=newer.revision) is True
    assert st.list() == [] and not Path(newer.snapshot_path).parent.exists()
    assert st.delete("s") is False


def test_summaries_leave_damaged_rows_and_odd_counts_out(tmp_path):
    st = SessionStore(tmp_path)
    st.save("good", TRANSCRIPT, {"tokens": 5, "messages": True})
    st.save("bad", TRANSCRIPT, SETTINGS)
    with sqlite3.connect(st.db_path) as conn:
        conn.execute("UPDATE sessions SET updated = 'soon' WHERE name = 'bad'")
    conn.close()
    rows = st.summaries()
    assert [(r.name, r.tokens, r.messages) for r in rows] == [("good", 5, None)]
