"""End to end: the real app on the bundled model in a pseudo-terminal."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.store import SessionStore

E2E_DOC = (
    "Notes from the harbour office. The ferry leaves at nine and returns at six. "
    "The special magic number is 7421. Remember it. The lighthouse keeper counts the boats every evening. "
)

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_end_to_end_real_app_in_a_pty(tmp_path):
    """Start the real app on the bundled model in a pseudo-terminal, /load a document,
    ask about it, and read the answer on screen (checked against the saved transcript)."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import threading

    doc = tmp_path / "harbour.txt"
    doc.write_text(E2E_DOC * 3)
    env = dict(os.environ, MLX_KV_DATA_DIR=str(tmp_path / "data"), TERM="xterm-256color", COLUMNS="140", LINES="45")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 140, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_kv.cli", "chat"],  # what `mlx-kv chat` runs
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=str(Path(__file__).resolve().parents[1]),
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def reader() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    threading.Thread(target=reader, daemon=True).start()

    def screen() -> str:
        return " ".join(ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).split())

    def wait_text(text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in screen():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on screen; tail: {screen()[-800:]}")
            time.sleep(0.2)

    try:
        wait_text("ready:", 120)
        os.write(master, f"/load {doc}\r".encode())
        wait_text("loaded harbour.txt", 180)
        os.write(master, b"What is the special magic number?\r")
        time.sleep(0.5)
        os.write(master, b"/save e2e\r")  # queued behind the reply
        wait_text("saved session 'e2e'", 180)
        saved = SessionStore(tmp_path / "data").load("e2e")
        answer = [t["content"] for t in saved.transcript if t["role"] == "assistant"][-1]
        words = [w for w in (re.sub(r"[*_`#>]", "", w) for w in answer.split()) if w][:4]
        assert words, "the model gave an empty answer"
        assert " ".join(words) in screen()
        os.write(master, b"\x11")  # ctrl+q
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)


