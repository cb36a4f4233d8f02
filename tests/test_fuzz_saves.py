"""Fuzzing what mlx-kv reads back: session files and the store's rows (hypothesis).

Whatever the bytes, the reader ends in one of two ways: a UserError of one
line, or a whole, usable session (it answers, reports and saves); never
another exception, never a session built from part of a file. The GGUF
header reader has its own fuzzer in tests/test_gguf.py.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.store import SNAPSHOT_FILE, SessionStore
from mlx_kv.engine import Session
from mlx_kv.errors import UserError
from mlx_kv.session_file import read_session_payload

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory):
    session = Session.load(str(tiny_model_dir), budget=96, window=16)
    session.ingest(" ".join(f"w{i % 90}" for i in range(300)))
    list(session.chat("w1 w2", max_tokens=3))
    path = tmp_path_factory.mktemp("saved") / "s.session"
    session.save(str(path))
    return session, path.read_bytes()


def one_line(exc: BaseException) -> bool:
    return isinstance(exc, UserError) and "\n" not in str(exc) and 0 < len(str(exc)) < 400


def usable(session: Session) -> None:
    """A session that loaded must be whole: it answers, reports and saves."""
    assert session.heap_stats().tokens_seen == len(session._token_ids)
    "".join(session.chat("w3", max_tokens=2))


def wrap(payload: bytes) -> bytes:
    """A session file around any payload, with a header that matches it."""
    return f"MLXKV-SESSION 1 sha256={hashlib.sha256(payload).hexdigest()} bytes={len(payload)}\n".encode() + payload


@FUZZ
@given(data=st.data())
def test_damaged_session_files_are_refused_in_one_line(saved, tmp_path, data):
    """Flipped bytes, cuts and junk anywhere: refused, or (a no-op change) the same payload."""
    _, raw = saved
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(0, 6))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    how = data.draw(st.sampled_from(["flip", "cut", "append", "header"]))
    if how == "cut":
        damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
    elif how == "append":
        damaged += data.draw(st.binary(min_size=1, max_size=64))
    elif how == "header":
        end = raw.index(b"\n")
        damaged[: end + 1] = data.draw(st.binary(max_size=120)) + data.draw(st.sampled_from([b"\n", b""]))
    path = tmp_path / "s.session"
    path.write_bytes(bytes(damaged))
    try:
        payload = read_session_payload(path)
    except UserError as exc:
        assert one_line(exc), exc
        return
    assert payload == raw[raw.index(b"\n") + 1:]


@FUZZ
@given(data=st.data())
def test_payloads_that_pass_the_checksum_yet_are_damaged_load_whole_or_not_at_all(saved, tmp_path, data):
    """The payload's own structure (safetensors header, heap state, metadata)
    damaged and the checksum made to match, as another writer's bug would."""
    session, raw = saved
    payload = bytearray(raw[raw.index(b"\n") + 1:])
    header_end = 8 + int.from_bytes(payload[:8], "little")
    for _ in range(data.draw(st.integers(1, 6))):
        top = header_end if data.draw(st.booleans()) else len(payload)
        payload[data.draw(st.integers(0, top - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "s.session"
    path.write_bytes(wrap(bytes(payload)))
    try:
        restored = Session.restore(str(path), model=session.model, tokenizer=session.tokenizer)
    except UserError as exc:
        assert one_line(exc), exc
        return
    usable(restored)


METADATA_KEYS = ("config", "transcript", "token_ids", "system", "fed_text", "model", "model_name")
JSONISH = st.one_of(st.text(max_size=20), st.integers().map(str), st.just("[]"), st.just("{}"), st.just("null"),
                    st.just('[{"role": 1}]'), st.just("[-1, 2]"), st.just("[99999999]"), st.just('{"budget": -3}'),
                    st.just('{"nope": 1}'), st.just("[1.5]"), st.just('"text"'))


@FUZZ
@given(key=st.sampled_from(METADATA_KEYS), value=JSONISH)
def test_a_wrong_metadata_field_is_refused_before_a_session_is_built(saved, tmp_path, key, value):
    """One field of a save's metadata replaced (as a hand-edited or foreign file would have it)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    session, raw = saved
    payload_path = tmp_path / "p.safetensors"
    payload_path.write_bytes(raw[raw.index(b"\n") + 1:])
    arrays, flat = mx.load(str(payload_path), return_metadata=True)
    tree = tree_unflatten(list(flat.items()))
    tree[0][key] = value
    mx.save_safetensors(str(payload_path), arrays, metadata=dict(tree_flatten(tree)))
    path = tmp_path / "s.session"
    path.write_bytes(wrap(payload_path.read_bytes()))
    try:
        restored = Session.restore(str(path), model=session.model, tokenizer=session.tokenizer)
    except UserError as exc:
        assert one_line(exc), exc
        return
    usable(restored)


# -- the store's rows ------------------------------------------------------------------

TURN_TEXT = st.one_of(st.text(st.characters(blacklist_categories=()), max_size=40),  # controls, any plane
                     st.sampled_from(["\udc80", "a\ud800b", "\x00", "\u2028", "é\udcff"]))  # lone surrogates
TRANSCRIPTS = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "document"]),
                                              "content": TURN_TEXT}), max_size=5)
SETTINGS = st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), TURN_TEXT), max_size=4)


@FUZZ
@given(transcript=TRANSCRIPTS, settings_=SETTINGS,
       name=st.one_of(st.text(st.characters(blacklist_categories=()), min_size=1, max_size=20), TURN_TEXT.filter(bool)))
def test_any_transcript_and_name_round_trip_through_the_store(tmp_path_factory, transcript, settings_, name):
    store = SessionStore(tmp_path_factory.mktemp("store"))

    def snapshot(path: str) -> None:
        Path(path).write_bytes(b"heap")

    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a name SQLite cannot hold: refused in one line, nothing written
        with pytest.raises(UserError, match="session name"):
            store.save(name, transcript, settings_, snapshot=snapshot)
        assert store.list() == [] and not (store.snapshots.exists() and any(store.snapshots.iterdir()))
        return
    saved = store.save(name, transcript, settings_, snapshot=snapshot)
    loaded = store.load(name)
    assert loaded.transcript == transcript and loaded.settings == json.loads(json.dumps(settings_))
    assert Path(loaded.snapshot_path).read_bytes() == b"heap" and loaded.revision == saved.revision
    assert Path(loaded.snapshot_path).parent.parent == store.snapshots  # wherever the name points, inside


COLUMNS = ("format_version", "created", "updated", "model", "settings", "transcript", "transcript_sha256",
           "snapshot", "snapshot_sha256", "revision")
VALUES = st.one_of(st.none(), st.integers(-2, 2**63 - 1), st.floats(), st.text(max_size=30), st.binary(max_size=30),
                   st.sampled_from(["[]", "{}", "[1]", '[{"role": "user"}]', "snapshots", "snapshots/..", "/etc",
                                    "../outside", "snapshots/../../outside", "snapshots/x-0123456789ab", "."]))


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(COLUMNS), VALUES, min_size=1, max_size=4),
       fix_checksum=st.booleans())
def test_damaged_rows_fail_in_one_line_and_never_touch_files_outside(tmp_path_factory, changes, fix_checksum):
    base = tmp_path_factory.mktemp("store")
    outside = base / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    root = base / "data"
    store = SessionStore(root)
    store.save("s", [{"role": "user", "content": "hi"}], {"budget": 1}, snapshot=lambda p: Path(p).write_bytes(b"h"))
    with sqlite3.connect(root / "sessions.sqlite3") as conn:
        for column, value in changes.items():
            try:
                conn.execute(f"UPDATE sessions SET {column} = ? WHERE name = 's'", (value,))
            except sqlite3.IntegrityError:  # NOT NULL columns: SQLite itself refuses that damage
                pass
        if fix_checksum:  # a damaged transcript whose checksum was recomputed (a foreign writer)
            text = conn.execute("SELECT transcript FROM sessions").fetchone()[0]
            if isinstance(text, str):
                conn.execute("UPDATE sessions SET transcript_sha256 = ?",
                             (hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),))
    conn.close()
    try:
        loaded = store.load("s")
    except UserError as exc:
        assert one_line(exc), exc
    else:
        assert isinstance(loaded.transcript, list) and isinstance(loaded.settings, dict)
        assert all(isinstance(m.get("content"), str) for m in loaded.transcript)
        assert loaded.snapshot_path is None or Path(loaded.snapshot_path).parent.parent == root / "snapshots"
        assert loaded.snapshot_path is None or Path(loaded.snapshot_path).name == SNAPSHOT_FILE
    assert all(isinstance(n, str) for n, _ in store.list())
    store.delete("s")
    store.save("t", [], {})  # the store stays usable
    assert (outside / "keep").read_text() == "precious" and sorted(p.name for p in base.iterdir()) == ["data", "outside"]
