"""A first run of `mlx-kv chat` in a real terminal (tmux), kept as text.

Why besides scripts/screenshot_app.py: the screenshots are taken headless
(Textual's Pilot); this drives the installed command in tmux the way a
person would: open, /load a document, ask, watch the eviction lines, F5
(what the model still remembers), /save, quit, `mlx-kv chat -c` to reopen
the conversation, ask again, F3, quit. Each step is the whole window as
`tmux capture-pane -p` shows it; a twin file with `.ansi` in its name keeps
the colours (`capture-pane -e`).

    python scripts/tmux_first_run.py --out runs/app_tmux_transcript.txt

Needs tmux and the default model (`mlx-kv fetch`); conversations go to a
fresh temporary data directory, so it is a first run whatever is saved.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screenshot_app import NEEDLE, harbour_log  # noqa: E402

SESSION = "mlx-kv-first-run"
PROMPT = re.compile(r"(?m)^\$\s*$")
ANSWERED = r"tok/s · \d+(\.\d+)?s"


class Terminal:
    def __init__(self, out: Path) -> None:
        self.out = out.open("w", encoding="utf-8")
        self.ansi = out.with_name(out.stem + ".ansi" + out.suffix).open("w", encoding="utf-8")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", SESSION)

    def note(self, text: str) -> None:
        self.out.write(text.rstrip("\n") + "\n")

    def shot(self, title: str) -> None:
        lines = "\n".join(line.rstrip() for line in self.screen().splitlines()).rstrip()
        self.out.write(f"\n===== {time.strftime('%H:%M:%S')}  {title} =====\n{lines}\n")
        self.ansi.write(f"\n===== {title} =====\n" + self.tmux("capture-pane", "-p", "-e", "-t", SESSION))
        self.out.flush()
        self.ansi.flush()
        print("captured:", title, flush=True)

    def wait(self, pattern: str | re.Pattern, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.screen()):
            if time.monotonic() > deadline:
                self.shot(f"TIMED OUT waiting for {what}")
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.5)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", SESSION, *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", SESSION, "-l", text)
        time.sleep(0.3)
        self.keys("Enter")


def main(out: Path, command: str, budget: int, timeout: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="mlx-kv-first-run-"))
    (work / "harbour-log.md").write_text(harbour_log(48), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LD_PRELOAD", "MLX_KV_CACHE_DIR", "HOME")}
    env["MLX_KV_DATA_DIR"] = str(work / "data")
    env["PS1"] = "$ "
    t = Terminal(out)
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    t.tmux("new-session", "-d", "-s", SESSION, "-x", "140", "-y", "45", "-c", str(work),
           *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], "bash --norc --noprofile")
    chat = f"{command} --budget {budget}"
    t.note(f"mlx-kv: a first run of the terminal app in tmux (140x45), {time.strftime('%Y-%m-%d %H:%M %Z')}\n"
           f"fresh data directory (no saved conversations); harbour-log.md is a 48-day log with one needle "
           f"({NEEDLE!r}) in the middle\n"
           "each block is the whole window (tmux capture-pane -p) at the time shown; colours and shading are in "
           "the .ansi twin of this file\n"
           "made by scripts/tmux_first_run.py")
    try:
        time.sleep(0.5)
        t.type("export PS1='$ '; clear")
        time.sleep(0.5)
        t.type(chat)
        t.wait(r"ready:", timeout, "the model")
        time.sleep(2)
        t.shot(f"1. open: `{chat}` (a first run, the default model)")
        t.type("/load harbour-log.md")
        t.wait(r"loading harbour-log\.md .*tok", timeout, "the load's progress")
        time.sleep(3)
        t.shot("2. /load harbour-log.md: the progress bar, the heap filling")
        t.wait(r"loaded harbour-log\.md", timeout, "the load")
        time.sleep(2)
        t.shot("3. loaded: the eviction lines, the context bar")
        t.type("What is the special magic number in the log?")
        t.wait(ANSWERED, timeout, "the answer")
        time.sleep(3)
        t.shot("4. the answer (the context bar and the heap: read vs kept)")
        t.keys("F5")
        t.wait(r"what the model still remembers", 30, "the remembers view")
        time.sleep(4)
        t.shot("5. F5: what the model still remembers of harbour-log.md (the shading is in the .ansi twin)")
        t.keys("Tab")
        for _ in range(8):
            if NEEDLE[:40] in t.screen():
                break
            t.keys("PageDown")
            time.sleep(1)
        time.sleep(1)
        t.shot("5b. the same view scrolled to the needle (Tab, PageDown)")
        t.keys("Escape")
        time.sleep(1)
        t.type("/save harbour-log")
        t.wait(r"saved session 'harbour-log'", timeout, "the save")
        time.sleep(2)
        t.shot("6. /save harbour-log")
        t.keys("C-q")
        t.wait(PROMPT, 120, "the shell")
        time.sleep(1)
        t.shot("7. Ctrl+Q: quit")
        t.type(f"{chat} -c")
        t.wait(r"resumed session 'harbour-log'", timeout, "the reopened conversation")
        time.sleep(6)
        t.shot(f"8. `{chat} -c`: the conversation reopened (transcript and heap)")
        t.type("Which ferry left on day 1?")
        t.wait(r"(?s)Which ferry left on day 1\?.*" + ANSWERED, timeout, "the answer after reopening")
        time.sleep(3)
        t.shot("8b. a question after reopening, answered from the restored heap")
        t.keys("F3")
        time.sleep(3)
        t.shot("9. F3: the saved conversations")
        t.keys("Escape")
        time.sleep(1)
        t.keys("C-q")
        t.wait(PROMPT, 120, "the shell")
        t.shot("10. quit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/app_tmux_transcript.txt"))
    ap.add_argument("--command", default="mlx-kv chat", help="how to start the app")
    ap.add_argument("--budget", type=int, default=512, help="tokens per layer (small, so eviction shows)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for each step")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    main(args.out, args.command, args.budget, args.timeout)
