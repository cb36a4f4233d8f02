"""Screenshots of the TUI at rest, during a /load, and after an answer (SVG + plain text).

Why a script: the issue's closing note asks for screenshots with the command
that produces them, and a headless Pilot run is reproducible (no terminal, no
timing by hand).  By default it drives the app with the fake engine
(``app.fake_engine``), so it runs anywhere in seconds; ``--real`` uses the
bundled model through ``mlx_kv.engine.Session``.

    python scripts/screenshot_app.py --out runs/screens            # fake engine
    python scripts/screenshot_app.py --out runs/screens --real     # bundled model

Writes rest.svg/.txt, loading.svg/.txt, answer.svg/.txt under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.app import MlxKvApp  # noqa: E402
from app.fake_engine import FakeSession  # noqa: E402
from app.store import SessionStore  # noqa: E402
from app.widgets.reply_message import ReplyMessage  # noqa: E402

DOC_SENTENCES = [
    "The archive of the northern observatory lists the weather for every night of the survey.",
    "Most nights were clear; a few were lost to fog rolling in from the harbour.",
    "The keeper wrote that the special magic number is 7421 and underlined it twice.",
    "Later pages return to the weather, the instruments and the price of lamp oil.",
]


class SlowFake(FakeSession):
    """Slow enough that the /load progress bar is caught mid-way."""

    ingest_delay = 0.05
    ingest_chunk = 400


def text_capture(app: MlxKvApp) -> str:
    """The screen as plain text, one line per terminal row."""
    try:
        return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())
    except Exception as e:  # noqa: BLE001 - private API: fall back to a note
        return f"(text capture unavailable: {e})"


def save(app: MlxKvApp, out: Path, name: str) -> None:
    app.save_screenshot(filename=f"{name}.svg", path=str(out))
    (out / f"{name}.txt").write_text(text_capture(app) + "\n", encoding="utf-8")
    print(f"wrote {out / name}.svg and .txt")


async def wait_for(pilot, cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await pilot.pause(0.05)
    return True


async def main(out: Path, real: bool, size: tuple[int, int], question: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mlx-kv-shots-"))
    doc = work / "observatory.txt"
    repeats = 40 if real else 300
    body = [DOC_SENTENCES[i % 4] if i != repeats * 2 else DOC_SENTENCES[2] for i in range(repeats * 4)]
    body = [s for s in body if "magic" not in s]
    body.insert(len(body) // 2, DOC_SENTENCES[2])
    doc.write_text(" ".join(body) + "\n", encoding="utf-8")

    app = MlxKvApp(
        session_cls=None if real else SlowFake,
        store=SessionStore(work / "store"),
        max_tokens=48 if real else 512,
    )
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.engine and app.engine.session is not None and not app.engine.busy, 120)
        await pilot.pause(1.2)  # one probe sample on the dashboard
        save(app, out, "rest")

        app.main.input.load_text(f"/load {doc}")
        await pilot.press("end", "enter")
        bar = app.main.ingest_bar
        await wait_for(pilot, lambda: bar.active and hasattr(bar, "stats_text"), 60)
        await pilot.pause(0.3)
        save(app, out, "loading")
        await wait_for(pilot, lambda: not bar.active, 600)

        app.main.input.load_text(question)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.main.chat.query(ReplyMessage), 60)
        await wait_for(pilot, lambda: not app.main.chat.query(ReplyMessage).last().streaming, 600)
        await pilot.pause(1.2)
        save(app, out, "answer")


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
    ap.add_argument("--real", action="store_true", help="use the bundled model instead of the fake engine")
    ap.add_argument("--width", type=int, default=140)
    ap.add_argument("--height", type=int, default=45)
    ap.add_argument("--question", default="What is the special magic number?")
    args = ap.parse_args()
    asyncio.run(main(Path(args.out), args.real, (args.width, args.height), args.question))
