"""Saved sessions: atomic, checksummed, versioned; damaged files are refused."""

import pytest

from mlx_kv.engine import Session
from mlx_kv.errors import UserError
from mlx_kv.session_file import backup_path

DOC = " ".join(f"w{i % 90}" for i in range(600))


@pytest.fixture
def saved(tiny_model_dir, tmp_path):
    session = Session.load(str(tiny_model_dir), budget=96, window=16)
    session.ingest(DOC)
    list(session.chat("w1", max_tokens=3))
    path = tmp_path / "s.session"
    session.save(str(path))
    return session, path


def test_round_trip_and_backup_of_the_previous_save(saved):
    session, path = saved
    first = path.read_bytes()
    list(session.chat("w2", max_tokens=3))
    session.save(str(path))
    assert backup_path(path).read_bytes() == first
    restored = Session.restore(str(path))
    assert restored.transcript == session.transcript


def test_truncated_file_is_refused_and_points_to_the_backup(saved):
    session, path = saved
    session.save(str(path))  # now a .bak exists
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated.*previous save is in s.session.bak"):
        Session.restore(str(path))
    assert Session.restore(str(backup_path(path))).transcript == session.transcript


@pytest.mark.parametrize("where", [0.3, 0.6, 0.95])
def test_bit_flip_is_refused(saved, where):
    _, path = saved
    data = bytearray(path.read_bytes())
    header_end = data.index(b"\n") + 1
    i = header_end + int((len(data) - header_end) * where)
    data[i] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted"):
        Session.restore(str(path))


def test_version_mismatch_and_foreign_files_are_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data.replace(b"MLXKV-SESSION 1 ", b"MLXKV-SESSION 9 ", 1))
    with pytest.raises(UserError, match="version 9"):
        Session.restore(str(path))
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(UserError, match="not an mlx-kv session"):
        Session.restore(str(other))
    with pytest.raises(UserError, match="does not exist"):
        Session.restore(str(tmp_path / "missing.session"))


def test_a_failing_save_leaves_the_earlier_save_intact(saved, monkeypatch):
    session, path = saved
    before = path.read_bytes()
    import mlx_lm.models.cache as cache_module

    def explode(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(cache_module, "save_prompt_cache", explode)
    with pytest.raises(UserError, match="cannot save s.session: OSError: Input/output error; the previous save is"):
        session.save(str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.session"]
