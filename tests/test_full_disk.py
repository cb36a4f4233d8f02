"""A disk that fills up: saves, the store, the recovery tier's spill and a conversion, on a small tmpfs.

Each case runs on a real filesystem that really runs out of room (a tmpfs
mounted for the test; it needs root, and is skipped with the reason where
mounting is not permitted): a one-line error, the previous save intact, the
session still usable, nothing half-written left behind.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mlx_kv.engine import Session
from mlx_kv.errors import DiskFull, UserError
from mlx_kv.heap.headwise import heaps
from mlx_kv.session_file import backup_path

DOC = " ".join(f"w{i % 90}" for i in range(1200))


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a folder on a fresh tmpfs of that many bytes."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """A file that takes all but `leave` bytes of the folder's filesystem."""
    filler = folder / "filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


@pytest.fixture
def session(tiny_model_dir):
    s = Session.load(str(tiny_model_dir), budget=1024, window=16)
    s.ingest(DOC)
    list(s.chat("w1 w2", max_tokens=3))
    return s


def test_a_session_save_on_a_full_disk_keeps_the_previous_one(session, small_disk):
    disk = small_disk(16 << 20)
    path = disk / "chat.session"
    session.save(str(path))
    first = path.read_bytes()
    list(session.chat("w3 w4", max_tokens=3))
    filler = fill(disk, leave=len(first) // 2)
    with pytest.raises(DiskFull) as err:
        session.save(str(path))
    message = str(err.value)
    assert "\n" not in message and "no space left in" in message and "the previous save is intact" in message
    assert path.read_bytes() == first and sorted(p.name for p in disk.iterdir()) == ["chat.session", "filler"]
    # the session answers on, and saves once there is room again
    assert "".join(session.chat("w5", max_tokens=3)) is not None
    filler.unlink()
    session.save(str(path))
    assert backup_path(path).read_bytes() == first
    assert Session.restore(str(path)).transcript == session.transcript


def test_a_disk_that_is_full_from_the_start_says_so_in_one_line(session, small_disk):
    disk = small_disk(1 << 20)
    fill(disk, leave=0)
    with pytest.raises(DiskFull, match=r"no space left in .* \(0\.\d MiB free\)"):
        session.save(str(disk / "chat.session"))
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_the_store_on_a_full_disk_keeps_the_previous_save(session, small_disk):
    from app.store import SessionStore

    disk = small_disk(16 << 20)
    store = SessionStore(disk / "data")
    store.save("chat", session.transcript, {"budget": 1024}, snapshot=session.save)
    before = store.load("chat")
    heap = Path(before.snapshot_path).read_bytes()
    list(session.chat("w3 w4", max_tokens=3))
    filler = fill(disk, leave=len(heap) // 2)
    with pytest.raises(DiskFull) as err:
        store.save("chat", session.transcript, {"budget": 1024}, snapshot=session.save)
    message = str(err.value)
    assert message.startswith("could not save session 'chat': no space left in") and "previous save is intact" \
        in message and "\n" not in message
    after = store.load("chat")
    assert after.transcript == before.transcript and Path(after.snapshot_path).read_bytes() == heap
    assert [p.name for p in (disk / "data" / "snapshots").iterdir()] == [Path(before.snapshot_path).parent.name]
    # SQLite itself on a disk with no room left: a transcript too big for the last free pages
    fill(disk, leave=0)
    with pytest.raises(DiskFull, match="no space left"):
        store.save("chat", session.transcript + [{"role": "user", "content": "x" * 2_000_000}], {})
    with sqlite3.connect(disk / "data" / "sessions.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.load("chat").transcript == before.transcript
    filler.unlink()
    (disk / "filler").unlink(missing_ok=True)
    store.save("chat", session.transcript, {"budget": 1024}, snapshot=session.save)
    assert store.load("chat").transcript == session.transcript


def test_the_recovery_tier_on_a_full_disk_falls_back_to_plain_eviction(tiny_model_dir, small_disk, monkeypatch):
    disk = small_disk(256 << 10)
    monkeypatch.setattr(tempfile, "tempdir", str(disk))  # where the spill files go
    s = Session.load(str(tiny_model_dir), budget=128, window=16, recovery="64MB")
    s.ingest(" ".join(f"w{i % 90}" for i in range(6000)))  # far more spill than 256 KB
    assert all(unit.store is None for unit in heaps(s.cache))  # (a session's layer may be a heap per KV head)
    assert all(unit.live <= unit.budget for unit in heaps(s.cache))
    assert list(disk.iterdir()) == []  # the spill files were given back
    note = s.observe_system(object())
    assert note is not None and note.count("recovery tier off: no space left in") == 1 and "\n" not in note
    assert "plain eviction" in note and s.observe_system(object()) is None  # said once
    assert "".join(s.chat("w1 w2", max_tokens=4)) is not None


def test_a_conversion_onto_a_full_disk_leaves_nothing(small_disk, tmp_path):
    from conftest import build_model
    from gguf_files import byte_level_tokenizer_metadata, llama_gguf
    from mlx_kv.gguf import GGUFError, convert_gguf

    meta, _ = byte_level_tokenizer_metadata(["The quick brown fox jumps over the lazy dog. " * 20])
    source = tmp_path / "tiny.gguf"
    llama_gguf(source, build_model("llama", vocab_size=len(meta["tokenizer.ggml.tokens"])), meta)
    disk = small_disk(64 << 10)  # smaller than the converted weights
    with pytest.raises(GGUFError, match=r"^convert: no space left in .* \(0\.\d MiB free\) for the converted "
                                        r"model \(\d+\.\d MiB of weights\)$"):
        convert_gguf(source, disk / "out")
    assert list(disk.iterdir()) == []
    env = dict(os.environ, MLX_KV_OPENBLAS="0")
    done = subprocess.run([sys.executable, "-m", "mlx_kv.cli", "convert", str(source), str(disk / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith("mlx-kv: convert: no space left") and "Traceback" not in \
        done.stderr, done.stderr  # above it only the progress lines
    assert list(disk.iterdir()) == []


def test_a_user_error_is_what_a_caller_of_save_catches(session, tmp_path):
    """DiskFull is a UserError: the CLI and the app show it as one line like every other."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot create the folder"):
        session.save(str(blocker / "sub" / "chat.session"))
