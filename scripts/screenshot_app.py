"""Screenshots of every screen of the TUI (SVG, plus the screen as plain text).

Why a script: the screenshots in docs/screens/ must be reproducible (no
terminal, no timing by hand), so a headless Pilot run drives the app through
a first session: at rest, loading a document, the answer (with a drift
sample), what the model remembers, the system prompt editor, the saved
conversations, the model picker and help.

    python scripts/screenshot_app.py --real --out docs/screens    # the default model (SmolLM2-135M-Instruct)
    python scripts/screenshot_app.py --out runs/screens           # the scripted fake engine, in seconds

Each SVG's title names the engine it was taken on; fake-engine files end in
-fake.svg.  With --real the default model must be set up (`mlx-kv fetch`);
on a slow CPU the run takes a few minutes (a 1,300-token document, 48-token
answers, a 1,024-token drift shadow).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.app import MlxKvApp  # noqa: E402
from app.fake_engine import FakeSession  # noqa: E402
from app.screens.conversations import ConversationsScreen  # noqa: E402
from app.screens.help import HelpScreen  # noqa: E402
from app.screens.models import ModelsScreen  # noqa: E402
from app.screens.remembers import RemembersScreen  # noqa: E402
from app.screens.system_prompt import SystemPromptScreen  # noqa: E402
from app.store import SessionStore  # noqa: E402
from app.widgets.drift_panel import DriftPanel  # noqa: E402
from app.widgets.memory_text import MemoryText  # noqa: E402
from app.widgets.reply_message import ReplyMessage  # noqa: E402

SHIPS = ["Aurora", "Kestrel", "Marlin", "Osprey", "Tern", "Heron", "Puffin", "Gannet"]
WINDS = ["calm", "a light westerly", "a stiff northerly", "gusty from the south", "fresh from the east"]
EVENTS = ["a seal on the slipway", "fog over the outer buoy", "two crates of lamp oil delivered",
          "the bell on the pier repaired", "a late passenger from the mainland", "gulls nesting on the crane",
          "the tide gauge cleaned", "a broken oar replaced", "rain until noon", "the lens of the light polished"]
NEEDLE = "Note for the new keeper: the special magic number is 7421. Keep it safe."


class SlowFake(FakeSession):
    """Slow enough that the /load progress bar is caught mid-way."""

    ingest_delay = 0.05
    ingest_chunk = 120


def harbour_log(days: int) -> str:
    """A varied, deterministic log with one needle in the middle (the question asks for it)."""
    rng = random.Random(7)
    lines = ["# Harbour office log", ""]
    for day in range(1, days + 1):
        if day == days // 2:
            lines.append(NEEDLE)
        ship = rng.choice(SHIPS)
        lines.append(f"Day {day}: the ferry {ship} left at {rng.randint(6, 10)}:{rng.choice(['00', '15', '30', '45'])} "
                     f"with {rng.randint(3, 60)} passengers; the wind was {rng.choice(WINDS)}, "
                     f"and the keeper noted {rng.choice(EVENTS)}.")
    return "\n".join(lines) + "\n"


def text_capture(app: MlxKvApp) -> str:
    """The screen as plain text, one line per terminal row."""
    try:
        return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())
    except Exception as e:  # noqa: BLE001 - private API: fall back to a note
        return f"(text capture unavailable: {e})"


class Shots:
    def __init__(self, app: MlxKvApp, out: Path, engine: str, suffix: str) -> None:
        self.app, self.out, self.engine, self.suffix = app, out, engine, suffix

    def save(self, name: str, what: str) -> None:
        svg = self.app.export_screenshot(title=f"mlx-kv: {what} ({self.engine})")
        (self.out / f"{name}{self.suffix}.svg").write_text(svg, encoding="utf-8")
        (self.out / f"{name}{self.suffix}.txt").write_text(text_capture(self.app) + "\n", encoding="utf-8")
        print(f"wrote {self.out / name}{self.suffix}.svg and .txt", flush=True)


async def wait_for(pilot, cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await pilot.pause(0.1)


async def send(app: MlxKvApp, pilot, line: str) -> None:
    app.main.input.load_text(line)
    app.main.input.focus()
    await pilot.press("end", "enter")


async def main(out: Path, real: bool, size: tuple[int, int], question: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mlx-kv-shots-"))
    doc = work / "harbour-log.md"
    doc.write_text(harbour_log(48 if real else 120), encoding="utf-8")
    app = MlxKvApp(
        session_cls=None if real else SlowFake,
        budget=512 if real else 1024,
        store=SessionStore(work / "store"),
        max_tokens=48 if real else 512,
    )
    idle = lambda: app.engine is not None and app.engine.session is not None and not app.engine.busy  # noqa: E731
    shots = Shots(app, out, "SmolLM2-135M-Instruct, this machine's CPU" if real else "fake engine", "" if real else "-fake")
    long = 1200 if real else 60
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, idle, long, "the model")
        await pilot.pause(1.5)  # a probe sample on the dashboard
        shots.save("rest", "at rest")

        await send(app, pilot, f"/load {doc}")
        bar = app.main.ingest_bar
        await wait_for(pilot, lambda: bar.active and getattr(bar, "stats_text", "").count("/") >= 1
                       and app.main.ingest_bar.query_one("ProgressBar").progress > 0, long, "load progress")
        await pilot.pause(0.5)
        shots.save("loading", "loading a document")
        await wait_for(pilot, lambda: not bar.active and idle(), long, "the load")

        await send(app, pilot, question)
        await wait_for(pilot, lambda: app.main.chat.query(ReplyMessage), long, "a reply")
        await wait_for(pilot, lambda: not app.main.chat.query(ReplyMessage).last().streaming and idle(), long, "the answer")
        await send(app, pilot, "/drift now")
        drift = app.main.dashboard.query_one(DriftPanel)
        await wait_for(pilot, lambda: drift.samples, long, "a drift sample")
        await wait_for(pilot, lambda: idle() and not app.engine.dirty, long, "the autosave")
        await pilot.pause(1.2)
        shots.save("chat", "a document, a question, eviction and drift")

        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, RemembersScreen), 10, "the remembers view")
        text = app.screen.query_one(MemoryText)
        await wait_for(pilot, lambda: text.spans and text.spans[0].tokens is not None, long, "per-token detail")
        await pilot.pause(0.5)
        shots.save("remembers", "what the model still remembers")
        await pilot.press("escape")

        await send(app, pilot, "/system")
        await wait_for(pilot, lambda: isinstance(app.screen, SystemPromptScreen), 10, "the editor")
        app.screen.query_one("TextArea").load_text("You are the harbour office's assistant.\n"
                                                   "Answer in one short sentence, from the log only.")
        await pilot.pause(0.3)
        shots.save("system-prompt", "this conversation's system prompt")
        await pilot.press("ctrl+s")
        await wait_for(pilot, idle, long, "the system prompt")

        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.conversation is None and idle(), long, "a new conversation")
        await send(app, pilot, "Write a haiku about a lighthouse.")
        await wait_for(pilot, lambda: app.main.chat.query(ReplyMessage), long, "a reply")
        await wait_for(pilot, lambda: not app.main.chat.query(ReplyMessage).last().streaming and idle()
                       and not app.engine.dirty, long, "the second conversation")
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ConversationsScreen) and len(app.screen.rows) >= 2, 10,
                       "the list")
        await pilot.pause(0.3)
        shots.save("conversations", "saved conversations")
        await pilot.press("escape")

        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.entries, 30, "the models")
        await pilot.pause(0.3)
        shots.save("models", "the model picker")
        await pilot.press("escape")

        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), 10, "help")
        await pilot.pause(0.3)
        shots.save("help", "every key and command")
        await pilot.press("escape")


def preload_openblas() -> None:
    """Re-run this script with OpenBLAS preloaded (Linux), as `mlx-kv` does for itself."""
    import os

    from mlx_kv.blas import find_openblas, openblas_active

    if not sys.platform.startswith("linux") or openblas_active() or os.environ.get("MLX_KV_OPENBLAS") == "0":
        return
    path = find_openblas()
    if path and "mlx.core" not in sys.modules:
        env = dict(os.environ, LD_PRELOAD=(path + " " + os.environ.get("LD_PRELOAD", "")).strip(), MLX_KV_OPENBLAS="0")
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)


if __name__ == "__main__":
    if "--real" in sys.argv:
        preload_openblas()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/screens", help="output folder")
    ap.add_argument("--real", action="store_true", help="use the default model instead of the fake engine")
    ap.add_argument("--width", type=int, default=140)
    ap.add_argument("--height", type=int, default=45)
    ap.add_argument("--question", default="What is the special magic number in the log?")
    args = ap.parse_args()
    asyncio.run(main(Path(args.out), args.real, (args.width, args.height), args.question))
