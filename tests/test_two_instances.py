"""Two mlx-kv instances on one data directory, saving and resuming the same conversation.

No save may be lost silently or half-applied: the second instance to save a
conversation the first changed since it resumed it is refused in one line,
and resumes always get a whole save (row and snapshot of the same save).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.store import SaveConflict, SessionStore
from mlx_kv.engine import Session

TURN = [{"role": "user", "content": "hi"}]


def snap(data: bytes):
    return lambda path: Path(path).write_bytes(data)


def test_the_second_instance_to_save_what_both_resumed_is_told_and_writes_nothing(tmp_path):
    first, second = SessionStore(tmp_path), SessionStore(tmp_path)  # two processes' views of one directory
    first.save("chat", TURN, {}, snapshot=snap(b"v1"))
    a, b = first.load("chat"), second.load("chat")
    first.save("chat", TURN * 2, {}, snapshot=snap(b"a"), expected_revision=a.revision)
    with pytest.raises(SaveConflict) as err:
        second.save("chat", TURN * 3, {}, snapshot=snap(b"b"), expected_revision=b.revision)
    message = str(err.value)
    assert "\n" not in message and "saved by another mlx-kv instance" in message and "nothing was overwritten" \
        in message and "/resume chat" in message
    now = second.load("chat")
    assert now.transcript == TURN * 2 and Path(now.snapshot_path).read_bytes() == b"a"
    assert len(list((tmp_path / "snapshots").iterdir())) == 1  # the loser's snapshot was not kept
    second.save("chat-2", TURN * 3, {}, snapshot=snap(b"b"))  # what the message offers works
    second.save("chat", TURN * 4, {}, snapshot=snap(b"c"), expected_revision=now.revision)
    assert first.load("chat").transcript == TURN * 4


def test_a_resume_whose_snapshot_is_replaced_meanwhile_loads_the_newer_save(tmp_path):
    store, other = SessionStore(tmp_path), SessionStore(tmp_path)
    store.save("chat", TURN, {}, snapshot=snap(b"old"))
    calls = []

    def open_snapshot(path: str) -> bytes:
        calls.append(path)
        if len(calls) == 1:  # the other instance saves between our load and our read
            other.save("chat", TURN * 2, {}, snapshot=snap(b"new"))
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            from mlx_kv.errors import UserError

            raise UserError(f"session: {path} does not exist") from None

    saved, data = store.restore("chat", open_snapshot)
    assert data == b"new" and saved.transcript == TURN * 2 and len(calls) == 2


def test_the_engine_worker_tells_the_loser(tmp_path):
    """Two apps (engine workers on the fake engine) resumed one session; the
    second to save sees one line in its chat, and can resume the winner's."""
    import time

    from app import messages as M
    from app.engine_worker import EngineWorker, Resume, Save
    from app.fake_engine import FakeSession

    SessionStore(tmp_path).save("chat", TURN, {"model": None, "budget": 512, "policy": "h2o"})
    posts: list[list] = [[], []]
    workers = [EngineWorker(p.append, FakeSession, store=SessionStore(tmp_path)) for p in posts]

    def run(worker: EngineWorker, *requests) -> None:
        for request in requests:
            worker.submit(request)
        deadline = time.monotonic() + 10
        time.sleep(0.05)
        while worker.busy and time.monotonic() < deadline:
            time.sleep(0.02)

    for worker in workers:
        worker.start()
        run(worker, Resume("chat"))
    run(workers[0], Save("chat"))
    run(workers[1], Save("chat"))
    lines = [m.text for m in posts[1] if isinstance(m, M.EngineError)]
    assert len(lines) == 1 and "saved by another mlx-kv instance" in lines[0] and "\n" not in lines[0], posts[1]
    assert not [m for m in posts[0] if isinstance(m, M.EngineError)]
    run(workers[1], Resume("chat"), Save("chat"))  # the winner's save, then saving works again
    assert len([m for m in posts[1] if isinstance(m, M.EngineError)]) == 1
    assert SessionStore(tmp_path).load("chat").revision == 3
    for worker in workers:
        worker.stop()


def test_two_processes_hammering_one_conversation_lose_nothing(tiny_model_dir, tmp_path):
    """Two real processes resume/chat/save the same conversation for 12 s each.
    Every save that succeeded added one turn to the latest save, so the final
    conversation has exactly as many turns as there were successful saves,
    whichever instance made them: no update was lost, none half-applied."""
    session = Session.load(str(tiny_model_dir), budget=512, window=16)
    list(session.chat("w0 start", max_tokens=1))
    store = SessionStore(tmp_path / "data")
    store.save("chat", session.transcript, {"budget": 512}, model="tiny", snapshot=session.save)
    child = Path(__file__).with_name("rival_child.py")
    procs = [subprocess.Popen([sys.executable, str(child), str(tiny_model_dir), str(tmp_path / "data"), "12", tag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("w1", "w2")]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    saves = sum(r.get("saves", 0) for r in results)
    print("two instances:", results)  # pytest -s shows the tally (the README quotes one)
    assert all(r.get("saves", 0) > 0 for r in results), results  # both got work done
    assert all(r.get("row_and_snapshot_disagree", 0) == 0 for r in results), results
    allowed = ("was saved by another mlx-kv instance", "keeps changing")
    assert all(any(a in text for a in allowed) for r in results for text in r["errors"]), [r["errors"] for r in results]
    final = store.load("chat")
    restored = Session.restore(final.snapshot_path, model=session.model, tokenizer=session.tokenizer)
    assert restored.transcript == final.transcript
    users = sum(1 for m in final.transcript if m["role"] == "user")
    assert users == 1 + saves, (users, results)
    with sqlite3.connect(tmp_path / "data" / "sessions.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert len(list((tmp_path / "data" / "snapshots").iterdir())) == 1


def test_the_engine_worker_keeps_revisions_through_autosave_rename_and_save_as(tmp_path):
    """Autosave and rename check the revision too; a lost autosave is told once;
    /save NEW-NAME keeps this conversation without deleting the winner's save."""
    import time

    from app import messages as M
    from app.engine_worker import Chat, EngineWorker, Rename, Resume, Save
    from app.fake_engine import FakeSession

    SessionStore(tmp_path).save("chat", TURN, {"model": None, "budget": 512, "policy": "h2o"})
    posts: list = []
    worker = EngineWorker(posts.append, FakeSession, store=SessionStore(tmp_path))

    def run(*requests) -> None:
        for request in requests:
            worker.submit(request)
        deadline = time.monotonic() + 10
        time.sleep(0.05)
        while worker.busy and time.monotonic() < deadline:
            time.sleep(0.02)

    def errors() -> list[str]:
        return [m.text for m in posts if isinstance(m, M.EngineError)]

    worker.start()
    run(Resume("chat"), Chat("one"))  # autosaved: revision 2
    other = SessionStore(tmp_path)
    assert other.load("chat").revision == 2 == worker._revisions["chat"]
    run(Rename("talk"))  # rename bumps the revision and the worker follows it
    assert other.load("talk").revision == 3 == worker._revisions["talk"]
    other.save("talk", TURN, {}, expected_revision=3)  # the other instance saves: revision 4
    run(Chat("two"), Chat("three"))
    assert len(errors()) == 1 and "saved by another mlx-kv instance" in errors()[0], errors()
    assert other.load("talk").transcript == TURN  # theirs is intact
    run(Rename("mine"))
    assert len(errors()) == 2 and "was not renamed" in errors()[1]
    run(Save("mine"))  # keeps this conversation under a new name; theirs stays
    assert len(errors()) == 2, errors()
    assert other.load("talk").transcript == TURN and len(other.load("mine").transcript) > len(TURN)
    assert any("was left as it is" in getattr(m, "text", "") for m in posts)
    worker.stop()
