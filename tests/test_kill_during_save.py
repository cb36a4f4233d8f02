"""kill -9 in the middle of a save: the session file, the app's store, a model conversion.

A child process (tests/crash_child.py) saves over and over; it is killed at
random moments, and (where strace can run) just before chosen syscalls of
one save: writes, fsyncs, renames, links, unlinks, SQLite's pwrites. After
each kill the files are loaded as the next start would load them. Here a
sample of kill points keeps CI short (every rename and link, the commit
points, plus a few other steps and writes; about 20 s a test on 2 busy
cores); scripts/crash_study.py kills at every point, many times, and the
README has its table.
"""

from __future__ import annotations

import random
import shutil
import sys

import pytest

from crash_harness import (calibrate, check_convert, check_session, check_store, convert_problems, have_strace,
                           run_child, session_problems, spread, store_problems)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kill -9 is a POSIX signal")
needs_strace = pytest.mark.skipif(not have_strace(), reason="strace is not installed or ptrace is not permitted")


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from mlx_kv.models import load_model

    model, tokenizer, _ = load_model(str(tiny_model_dir))
    return model, tokenizer


def sample_points(points: list, steps: int, writes: int, pwrites: int = 0) -> list:
    """Every rename and link (where a save commits), `steps` other file
    changes, and a few of the bulk writes spread over the file."""
    commits = [p for p in points if p[0].startswith(("rename", "link"))]
    bulk = ("write", "pwrite64")
    others = [p for p in points if p not in commits and p[0] not in bulk]
    return (commits + spread(others, steps) + spread([p for p in points if p[0] == "write"], writes)
            + spread([p for p in points if p[0] == "pwrite64"], pwrites))


def assert_session_survived(r: dict) -> None:
    assert r["killed"] and not session_problems(r), (session_problems(r), r)


def test_session_file_survives_kill_at_random_moments(tiny_model_dir, tmp_path, loaded):
    rng = random.Random(18)
    path = tmp_path / "saves" / "s.session"
    for _ in range(3):
        outcome = run_child("session", tiny_model_dir, path, kill_after=rng.uniform(0.0, 0.3))
        assert_session_survived(check_session(path, outcome, *loaded))


@needs_strace
def test_session_file_survives_kill_before_each_kind_of_syscall(tiny_model_dir, tmp_path, loaded):
    path = tmp_path / "saves" / "s.session"
    points = calibrate("session", tiny_model_dir, path)
    names = {name for name, _ in points}
    assert {"write", "fsync", "rename", "link", "unlink"} <= names, points
    for point in sample_points(points, steps=2, writes=2):
        outcome = run_child("session", tiny_model_dir, path, inject=point)
        r = check_session(path, outcome, *loaded)
        assert r["acked"] == 1, r  # the kill landed in the second save, where it was aimed
        assert_session_survived(r)


def assert_store_survived(r: dict) -> None:
    assert r["killed"] and not store_problems(r), (store_problems(r), r)


def test_store_survives_kill_at_random_moments(tiny_model_dir, tmp_path, loaded):
    rng = random.Random(19)
    root = tmp_path / "data"
    for _ in range(3):
        outcome = run_child("store", tiny_model_dir, root, kill_after=rng.uniform(0.0, 0.3))
        assert_store_survived(check_store(root, outcome, *loaded))


@needs_strace
def test_store_survives_kill_before_each_kind_of_syscall(tiny_model_dir, tmp_path, loaded):
    root = tmp_path / "data"
    points = calibrate("store", tiny_model_dir, root)
    assert "pwrite64" in {name for name, _ in points}, points  # SQLite's own writes are among them
    for point in sample_points(points, steps=2, writes=1, pwrites=2):
        outcome = run_child("store", tiny_model_dir, root, inject=point)
        r = check_store(root, outcome, *loaded)
        assert r["acked"] == 1, r
        assert_store_survived(r)


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    from conftest import build_model
    from gguf_files import byte_level_tokenizer_metadata, llama_gguf

    meta, _ = byte_level_tokenizer_metadata(["The quick brown fox jumps over the lazy dog. " * 20])
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    llama_gguf(path, build_model("llama", vocab_size=len(meta["tokenizer.ggml.tokens"])), meta)
    return path


@pytest.fixture(scope="module")
def reference(gguf_file, tmp_path_factory):
    from crash_harness import _hashes
    from mlx_kv.gguf import convert_gguf

    return _hashes(convert_gguf(gguf_file, tmp_path_factory.mktemp("ref") / "out"))


def assert_conversion_survived(r: dict, finished_ok: bool = False) -> None:
    assert not convert_problems(r, finished_ok), (convert_problems(r, finished_ok), r)


def test_conversion_survives_kill_at_random_moments(gguf_file, reference, tmp_path):
    rng = random.Random(20)
    out = tmp_path / "models" / "out"
    out.parent.mkdir()
    for _ in range(3):
        outcome = run_child("convert", gguf_file, out, kill_after=rng.uniform(0.0, 1.0))
        assert_conversion_survived(check_convert(gguf_file, out, outcome, reference), finished_ok=True)


@needs_strace
def test_conversion_survives_kill_before_each_kind_of_syscall(gguf_file, reference, tmp_path):
    out = tmp_path / "models" / "out"
    out.parent.mkdir()
    points = calibrate("convert", gguf_file, out, first="saved 0 ", last="converted", stop=None)
    shutil.rmtree(out)  # the calibration run converted it
    assert ("rename", 1) in points or any(name.startswith("rename") for name, _ in points), points
    for point in sample_points(points, steps=3, writes=2):
        outcome = run_child("convert", gguf_file, out, inject=point)
        assert_conversion_survived(check_convert(gguf_file, out, outcome, reference))
