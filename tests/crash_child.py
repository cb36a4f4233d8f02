"""A process that saves (or converts) over and over until it is killed; tests/crash_harness.py kills it.

    python tests/crash_child.py session MODEL_DIR FILE
    python tests/crash_child.py store   MODEL_DIR ROOT
    python tests/crash_child.py convert GGUF OUT

After each complete save it prints `saved <i> <sha256>` (the session file's
checksum); `convert` prints `saved 0 -` once it is ready to convert and
`converted` when done. The harness kills it at a random moment, or runs it
under strace with a SIGKILL injected at one chosen syscall. With
CRASH_STOP=n the loop ends by itself after save n (the calibration run).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

TURN_WORDS = 6  # words per user turn: "w<i> w.. " (the tiny test model's vocabulary)


def stop_after(i: int) -> None:
    if os.environ.get("CRASH_STOP") and i >= int(os.environ["CRASH_STOP"]):
        sys.exit(0)


def file_sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def turn(session, i: int) -> None:
    """The i-th user turn (a short reply keeps the loop on saving)."""
    words = " ".join(f"w{(i * 7 + j) % 90}" for j in range(TURN_WORDS))
    list(session.chat(f"w{i % 90} {words}", max_tokens=2))


def loop_session(model_dir: str, path: str) -> None:
    from mlx_kv.engine import Session

    session = Session.load(model_dir, budget=2048, window=16)
    session.ingest(" ".join(f"w{i % 90}" for i in range(1500)))
    i = 0
    while True:
        i += 1
        turn(session, i)
        session.save(path)
        print(f"saved {i} {file_sha(path)}", flush=True)
        stop_after(i)


def loop_store(model_dir: str, root: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from app.store import SessionStore
    from mlx_kv.engine import Session

    session = Session.load(model_dir, budget=2048, window=16)
    session.ingest(" ".join(f"w{i % 90}" for i in range(1500)))
    store = SessionStore(root)
    i = 0
    while True:
        i += 1
        turn(session, i)
        saved = store.save("chat", session.transcript, {"budget": 2048}, model="tiny", snapshot=session.save)
        print(f"saved {i} {file_sha(saved.snapshot_path)}", flush=True)
        stop_after(i)


def convert(source: str, out: str) -> None:
    from mlx_kv.gguf import convert_gguf

    print("saved 0 -", flush=True)  # loaded: the harness's clock starts here
    convert_gguf(source, out)
    print("converted", flush=True)


if __name__ == "__main__":
    mode, a, b = sys.argv[1:4]
    {"session": loop_session, "store": loop_store, "convert": convert}[mode](a, b)
