"""Kill a saving process (tests/crash_child.py) and check what it leaves behind.

Two ways to kill:

- at a random moment after its first save (SIGKILL from here), so kills
  land anywhere in the chat/save loop;
- under strace, with SIGKILL injected at one chosen syscall: a calibration
  run logs every file-changing syscall (writes, fsyncs, renames, links,
  unlinks, SQLite's pwrites) of the child's second save, and each of those
  becomes a kill point: "killed just before its N-th write". Counting is per
  syscall and thread, as strace's `when=` counts, on the main thread (where
  the saves run).

The checks (check_session, check_store, check_convert) load what is on disk
as the next start would and say what they found; the tests and
scripts/crash_study.py assert and tabulate it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[1]
FS_CALLS = ("write", "pwrite64", "writev", "pwritev", "fsync", "fdatasync", "rename", "renameat", "renameat2",
            "link", "linkat", "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir", "ftruncate")
_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")


def have_strace() -> bool:
    if shutil.which("strace") is None:
        return False
    done = subprocess.run(["strace", "-qq", "-o", "/dev/null", "-e", "trace=none", "true"], capture_output=True)
    return done.returncode == 0  # ptrace may be forbidden (containers without CAP_SYS_PTRACE)


@dataclass
class Outcome:
    """What the child said before it died."""
    point: str
    acks: list[tuple[int, str]] = field(default_factory=list)
    returncode: int | None = None
    stderr: str = ""

    @property
    def acked(self) -> int:
        return self.acks[-1][0] if self.acks else -1

    @property
    def acked_sha(self) -> str | None:
        return self.acks[-1][1] if self.acks else None

    @property
    def killed(self) -> bool:
        return self.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)


def _env(stop: int | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", MLX_KV_OPENBLAS="0",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    env.pop("CRASH_STOP", None)
    if stop is not None:
        env["CRASH_STOP"] = str(stop)
    return env


def run_child(mode: str, a: str | Path, b: str | Path, *, kill_after: float | None = None,
              inject: tuple[str, int] | None = None, stop: int | None = None, timeout: float = 180.0) -> Outcome:
    """Run the child once: killed `kill_after` seconds after its first ack, or
    by strace at the `inject` (syscall, n) point, or ending at save `stop`."""
    cmd = [sys.executable, str(CHILD), mode, str(a), str(b)]
    point = "random" if kill_after is not None else "none"
    if inject is not None:
        name, n = inject
        cmd = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={name}",
               "-e", f"inject={name}:signal=KILL:when={n}", *cmd]
        point = f"{name}#{n}"
    outcome = Outcome(point)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(stop))
    first = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("saved"):
                first.set()
        first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if kill_after is not None:
            first.wait(timeout)
            time.sleep(kill_after)
            proc.kill()
        outcome.returncode = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        outcome.returncode = proc.wait()
    reader.join(10)
    outcome.stderr = proc.stderr.read()[-2000:]
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "saved":
            outcome.acks.append((int(parts[1]), parts[2]))
    return outcome


def calibrate(mode: str, a: str | Path, b: str | Path, first: str = "saved 1 ", last: str = "saved 2 ",
              stop: int = 2) -> list[tuple[str, int]]:
    """The (syscall, n) kill points of one save: every file-changing syscall
    the main thread makes between the `first` and `last` markers it prints.

    Counts depend on what is on disk (a first save has no previous one to
    keep as .bak), so a plain run first leaves what every later run finds:
    the checks end with a save of their own, which leaves the same."""
    if stop is not None:
        subprocess.run([sys.executable, str(CHILD), mode, str(a), str(b)], capture_output=True, env=_env(1),
                       timeout=600, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "trace"
        cmd = ["strace", "-f", "-qq", "-o", str(log), "-e", f"trace={','.join(FS_CALLS)}", "-s", "16",
               sys.executable, str(CHILD), mode, str(a), str(b)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=_env(stop), timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"calibration run failed: {done.stderr[-500:]}")
        entries = [m.groups() for m in map(_CALL.match, log.read_text().splitlines()) if m]
    main = next((tid for tid, name, rest in entries if name == "write" and rest.startswith(f'1, "{first}')), None)
    if main is None:
        raise RuntimeError(f"calibration run never printed {first!r}")
    counts: dict[str, int] = {}
    points, inside = [], False
    for tid, name, rest in entries:
        if tid != main:
            continue
        counts[name] = counts.get(name, 0) + 1
        if name == "write" and rest.startswith('1, "'):  # the child's own stdout: a marker
            text = rest[4:]
            if not inside and text.startswith(first):
                inside = True
                continue
            if inside and text.startswith(last):
                break
        if inside:
            points.append((name, counts[name]))
    return points


def spread(points: list, k: int) -> list:
    """k points spread over the list, the first and last included (one: the middle)."""
    if len(points) <= k:
        return list(points)
    if k <= 1:
        return [points[len(points) // 2]] if k == 1 else []
    step = (len(points) - 1) / (k - 1)
    return [points[round(i * step)] for i in range(k)]


def file_sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def user_turns(transcript: list[dict]) -> int:
    return sum(1 for m in transcript if m.get("role") == "user")


# -- checks ------------------------------------------------------------------------

def check_session(path: Path, outcome: Outcome, model, tokenizer) -> dict:
    """The session file after a kill: it loads, it is the last acknowledged
    save byte for byte (or the one in flight, complete), its .bak loads, and
    the next save removes every temporary file the dead writer left."""
    from mlx_kv.engine import Session
    from mlx_kv.session_file import backup_path

    restored = Session.restore(str(path), model=model, tokenizer=tokenizer)
    turns = user_turns(restored.transcript)
    exact = file_sha(path) == outcome.acked_sha if turns == outcome.acked else None
    bak = backup_path(path)
    bak_turns = user_turns(Session.restore(str(bak), model=model, tokenizer=tokenizer).transcript) \
        if bak.exists() else None
    litter = sorted(p.name for p in path.parent.iterdir() if p.name not in (path.name, bak.name))
    restored.save(str(path))  # the session is usable, and this save sweeps the dead writer's temporaries
    after = sorted(p.name for p in path.parent.iterdir())
    return {"point": outcome.point, "killed": outcome.killed, "acked": outcome.acked, "loaded": turns,
            "exact": exact, "bak": bak_turns, "litter": litter, "after_next_save": after}


def check_store(root: Path, outcome: Outcome, model, tokenizer) -> dict:
    """The store after a kill: it opens, the database passes SQLite's
    integrity check, the row and its snapshot agree, it is the last
    acknowledged save (or the one in flight), and the next save leaves one
    snapshot directory and no temporaries."""
    sys.path.insert(0, str(ROOT))
    from app.store import SessionStore
    from mlx_kv.engine import Session

    with sqlite3.connect(root / "sessions.sqlite3") as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    store = SessionStore(root)
    saved = store.load("chat")
    restored = Session.restore(saved.snapshot_path, model=model, tokenizer=tokenizer)
    turns = user_turns(saved.transcript)
    exact = file_sha(saved.snapshot_path) == outcome.acked_sha if turns == outcome.acked else None
    snapshots = root / "snapshots"
    litter = sorted(p.name for p in snapshots.iterdir() if p != Path(saved.snapshot_path).parent)
    store.save("chat", restored.transcript, {"budget": 2048}, model="tiny", snapshot=restored.save)
    after = sorted(p.name for p in snapshots.iterdir())
    return {"point": outcome.point, "killed": outcome.killed, "acked": outcome.acked, "loaded": turns,
            "exact": exact, "agree": restored.transcript == saved.transcript, "integrity": integrity,
            "litter": litter, "after_next_save": len(after), "after_names": after,
            "journal": sorted(p.name for p in root.iterdir() if p.name.endswith("-journal"))}


def check_convert(source: Path, out: Path, outcome: Outcome, reference: dict[str, str]) -> dict:
    """A conversion after a kill: nothing at `out`, or the complete folder
    (every file equal to an unkilled conversion's); the next conversion
    removes the dead one's partial folder and writes the same files."""
    from mlx_kv.gguf import convert_gguf

    present = out.exists()
    complete = present and _hashes(out) == reference
    litter = sorted(p.name for p in out.parent.iterdir() if p.name != out.name and p != source)
    if present:
        shutil.rmtree(out)
    convert_gguf(source, out)
    again = _hashes(out) == reference
    after = sorted(p.name for p in out.parent.iterdir() if p != source)
    shutil.rmtree(out)
    return {"point": outcome.point, "killed": outcome.killed, "present": present, "complete": complete if present else None, "litter": litter,
            "next_conversion_same": again, "after_next": after}


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: file_sha(p) for p in sorted(folder.iterdir())}


# -- verdicts (the tests assert them empty; scripts/crash_study.py counts them) -----

def session_problems(r: dict) -> list[str]:
    out = []
    if r["loaded"] not in (r["acked"], r["acked"] + 1):
        out.append("loaded neither the last acknowledged save nor the next one")
    if r["exact"] is False:
        out.append("the acknowledged save changed")
    if r["bak"] is None:
        if max(r["acked"], r["loaded"]) >= 2:  # the first save has no previous file to keep as .bak
            out.append("no loadable .bak")
    elif r["acked"] >= 2 and r["bak"] not in (r["loaded"] - 1, r["loaded"]):
        out.append(".bak is not the save before")
    if any(not name.startswith(".mlxkv-") for name in r["litter"]):
        out.append(f"unexpected files {r['litter']}")
    if r["after_next_save"] != ["s.session", "s.session.bak"]:
        out.append(f"the next save left {r['after_next_save']}")
    return out


def store_problems(r: dict) -> list[str]:
    out = []
    if r["integrity"] != "ok":
        out.append(f"integrity_check: {r['integrity']}")
    if not r["agree"]:
        out.append("row and snapshot disagree")
    if r["loaded"] not in (r["acked"], r["acked"] + 1):
        out.append("loaded neither the last acknowledged save nor the next one")
    if r["exact"] is False:
        out.append("the acknowledged snapshot changed")
    if r["after_next_save"] != 1:
        out.append(f"the next save left {r['after_names']}")
    if r["journal"]:
        out.append(f"journal left: {r['journal']}")
    return out


def convert_problems(r: dict, finished_ok: bool = False) -> list[str]:
    out = []
    if not (r["killed"] or (finished_ok and r["complete"])):
        out.append("neither killed nor complete")
    if r["complete"] is False:
        out.append("a half-written model at the destination")
    if any(not name.startswith(".out.partial-") for name in r["litter"]):
        out.append(f"unexpected files {r['litter']}")
    if not r["next_conversion_same"] or r["after_next"] != ["out"]:
        out.append(f"the next conversion left {r['after_next']}")
    return out
