"""Pilot tests of the TUI with a fake engine and fake probes (no MLX, no model)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.app import MlxKvApp
from app.engine_worker import EngineWorker
from app.fake_engine import FakeSession
from app.store import SessionStore
from app.widgets.heap_panel import HeapPanel
from app.widgets.pillar_list import PillarList
from app.widgets.pillar_strip import PillarStrip
from app.widgets.reply_message import ReplyMessage
from app.widgets.system_panel import SystemPanel
from mlx_kv.system import SystemSample, unknown_sample

pytestmark = pytest.mark.anyio  # async tests run on asyncio through anyio's pytest plugin


@pytest.fixture
def anyio_backend():
    return "asyncio"


SIZE = (140, 45)
GiB = 1 << 30


def sample(**kw) -> SystemSample:
    base = dict(
        time=0.0,
        ram_used=8 * GiB,
        ram_total=16 * GiB,
        swap_used=0,
        swap_total=2 * GiB,
        swap_out_rate=0.0,
        pressure="normal",
        swap_risk="low",
        thermal="nominal",
    )
    base.update(kw)
    return SystemSample(**base)


class SlowSession(FakeSession):
    """Streams a long reply slowly so it can be watched and cancelled."""

    piece_delay = 0.02
    reply = " ".join(f"word{i}" for i in range(400))


class ShortSlowSession(FakeSession):
    piece_delay = 0.06
    reply = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"


class SlowIngestSession(FakeSession):
    ingest_delay = 0.04
    ingest_chunk = 500


class GatedReplySession(ShortSlowSession):
    """Streams half its reply, then waits for the test to have seen it: on a
    loaded machine the whole reply can otherwise land between two looks."""

    gate = threading.Event()

    def chat(self, *args, **kwargs):
        for i, piece in enumerate(super().chat(*args, **kwargs)):
            if i == 8:
                type(self).gate.wait(20)
            yield piece


class GatedIngestSession(SlowIngestSession):
    """Reads its first chunk, then waits for the test (see GatedReplySession)."""

    gate = threading.Event()

    def ingest(self, *args, progress=None, **kwargs):
        def gated(report):
            if progress is not None:
                progress(report)
            type(self).gate.wait(20)

        return super().ingest(*args, progress=gated, **kwargs)


def make_app(tmp_path: Path, session_cls=FakeSession, probe=None, **kw) -> MlxKvApp:
    return MlxKvApp(
        session_cls=session_cls,
        probe=probe or (lambda: sample()),
        store=SessionStore(tmp_path / "store"),
        probe_interval=kw.pop("probe_interval", 0.2),
        **kw,
    )


async def wait_for(pilot, cond, timeout: float = 8.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def ready(app: MlxKvApp, pilot) -> None:
    await wait_for(pilot, lambda: app.engine is not None and app.engine.session is not None and not app.engine.busy, what="engine ready")
    await pilot.pause(0.05)


async def type_line(pilot, text: str) -> None:
    box = pilot.app.main.input
    box.focus()
    box.load_text(text)
    box.move_cursor(box.document.end)
    await pilot.press("enter")


def replies(app):
    return list(app.main.chat.query(ReplyMessage))


# -- chat ---------------------------------------------------------------------------


async def test_tokens_stream_in_and_appear(tmp_path):
    GatedReplySession.gate.clear()
    app = make_app(tmp_path, GatedReplySession)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press(*"hello", "enter")
        seen: set[str] = set()

        def progressed() -> bool:
            rs = replies(app)
            if rs and rs[0].text:
                seen.add(rs[0].text)
                GatedReplySession.gate.set()  # seen part of it: the rest may come
            return bool(rs) and not rs[0].streaming

        await wait_for(pilot, progressed, what="reply done")
        partial = seen - {ShortSlowSession.reply}
        assert partial, "the reply should be seen growing, not only complete"
        assert all(ShortSlowSession.reply.startswith(p) for p in partial)
        assert replies(app)[0].text == ShortSlowSession.reply
        assert [w.text for w in app.main.chat.query("UserMessage")] == ["hello"]
        assert app.main.input.text == ""  # the box empties after sending
        assert app.engine.session.transcript[-1]["content"] == ShortSlowSession.reply


async def test_multiline_input_newline_keys(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        app.main.input.focus()
        await pilot.press("a", "ctrl+j", "b")
        assert app.main.input.text == "a\nb"
        await pilot.press("enter")
        await wait_for(pilot, lambda: replies(app) and not replies(app)[0].streaming, what="reply")
        assert [w.text for w in app.main.chat.query("UserMessage")] == ["a\nb"]
        # history: Up recalls the last message
        await pilot.press("up")
        assert app.main.input.text == "a\nb"


async def test_escape_cancels_a_long_generation_and_the_next_message_works(tmp_path):
    app = make_app(tmp_path, SlowSession)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "tell me everything")
        await wait_for(pilot, lambda: replies(app) and len(replies(app)[0].text) > 20, what="streaming")
        started = time.monotonic()
        await pilot.press("escape")
        await wait_for(pilot, lambda: not replies(app)[0].streaming, timeout=3, what="cancel")
        assert time.monotonic() - started < 3.0
        reply = replies(app)[0]
        assert reply.has_class("cancelled")
        assert 0 < len(reply.text) < len(SlowSession.reply)
        assert any("reply stopped" in line for line in app.main.chat.lines())
        # the session stayed consistent: the partial reply is in the transcript
        assert app.engine.session.transcript[-1] == {"role": "assistant", "content": reply.text}
        # ... and the next message works
        SlowSession.piece_delay = 0.0
        try:
            await type_line(pilot, "again")
            await wait_for(pilot, lambda: len(replies(app)) == 2 and not replies(app)[1].streaming, what="second reply")
        finally:
            SlowSession.piece_delay = 0.02
        assert replies(app)[1].text == SlowSession.reply


# -- documents ---------------------------------------------------------------------------


async def test_load_shows_progress_then_done(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("alpha beta gamma delta " * 2500)  # 10k words -> 20 chunks
    app = make_app(tmp_path, SlowIngestSession)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, f"/load {doc}")
        bar = app.main.ingest_bar
        await wait_for(pilot, lambda: bar.active and "tok/s" in getattr(bar, "stats_text", ""), what="progress")
        assert "ETA" in bar.stats_text and "/10.0k tok" in bar.stats_text
        progress = app.main.query_one("#ingest-progress")
        assert 0 < progress.progress <= 10000 and progress.total == 10000
        await wait_for(pilot, lambda: any(l.startswith("loaded doc.txt") for l in app.main.chat.lines()), what="done")
        assert not bar.active
        assert "10.0k tokens" in [l for l in app.main.chat.lines() if l.startswith("loaded")][0]


async def test_escape_stops_a_load(tmp_path):
    doc = tmp_path / "big.txt"
    doc.write_text("w " * 20000)
    app = make_app(tmp_path, SlowIngestSession)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, f"/load {doc}")
        await wait_for(pilot, lambda: app.main.ingest_bar.active and "tok/s" in getattr(app.main.ingest_bar, "stats_text", ""),
                       what="progress")
        await pilot.press("escape")
        await wait_for(pilot, lambda: any("stopped loading big.txt" in l for l in app.main.chat.lines()), timeout=3, what="stop")
        assert not app.main.ingest_bar.active


async def test_bad_documents_give_one_line_errors(tmp_path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, f"/load {tmp_path / 'missing.txt'}")
        await type_line(pilot, f"/load {binary}")
        await wait_for(pilot, lambda: len(app.main.chat.lines("error")) == 2, what="errors")
        errors = app.main.chat.lines("error")
        assert "no such file" in errors[0]
        assert "binary" in errors[1]
        assert all("\n" not in e and "Traceback" not in e for e in errors)


# -- commands and errors ------------------------------------------------------------------


async def test_unknown_slash_command_shows_an_error_line(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "/frobnicate now")
        await wait_for(pilot, lambda: app.main.chat.lines("error"), what="error line")
        assert app.main.chat.lines("error") == ["unknown command /frobnicate: type /help for the list"]
        assert not replies(app)  # nothing was sent to the model


async def test_engine_errors_are_one_line_messages(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "/budget 10")  # parses, but the engine refuses it
        await type_line(pilot, "/policy nonsense")
        await wait_for(pilot, lambda: len(app.main.chat.lines("error")) == 2, what="engine errors")
        budget_err, policy_err = app.main.chat.lines("error")
        assert "smaller than sinks + window" in budget_err
        assert "unknown policy 'nonsense'" in policy_err
        await type_line(pilot, "/budget 1GB")
        await wait_for(pilot, lambda: "budget set to 1GB" in app.main.chat.lines(), what="budget notice")


async def test_engine_bug_is_reported_not_raised(tmp_path):
    class Buggy(FakeSession):
        def chat(self, message, max_tokens=512, cancel=None, temperature=0.0):
            yield "partial "
            raise ZeroDivisionError("oops")

    app = make_app(tmp_path, Buggy)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "hi")
        await wait_for(pilot, lambda: app.main.chat.lines("error"), what="error")
        assert app.main.chat.lines("error") == ["engine error (ZeroDivisionError): oops"]
        assert replies(app)[0].text == "partial "


async def test_failed_model_load_is_a_clear_message(tmp_path):
    app = make_app(tmp_path, model="no-such-folder")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.main.chat.lines("error"), what="load error")
        assert "neither a local folder nor a hub id" in app.main.chat.lines("error")[0]
        await type_line(pilot, "hello?")
        await wait_for(pilot, lambda: len(app.main.chat.lines("error")) == 2, what="second error")
        assert "no model loaded" in app.main.chat.lines("error")[1]


async def test_help_stats_clear(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "/help")
        await wait_for(pilot, lambda: any("/budget B" in l for l in app.main.chat.lines("help")), what="help")
        await type_line(pilot, "/stats")
        await wait_for(pilot, lambda: any(l.startswith("heap ") for l in app.main.chat.lines("help")), what="stats")
        stats = [l for l in app.main.chat.lines("help") if l.startswith("heap ")][0]
        assert "swap risk low" in stats and "thermal nominal" in stats
        await type_line(pilot, "/clear")
        await wait_for(pilot, lambda: "conversation cleared, heap emptied" in app.main.chat.lines(), what="clear")
        assert app.main.chat.lines() == ["conversation cleared, heap emptied"]


async def test_save_and_resume(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "/system be brief")
        await type_line(pilot, "remember 42")
        await wait_for(pilot, lambda: replies(app) and not replies(app)[0].streaming, what="reply")
        await type_line(pilot, "/save mysession")
        await wait_for(pilot, lambda: any("saved session 'mysession'" in l for l in app.main.chat.lines()), what="saved")
        assert "saved session 'mysession' (2 messages)" in app.main.chat.lines()
        await type_line(pilot, "/new")
        await wait_for(pilot, lambda: any(l.startswith("new conversation") for l in app.main.chat.lines()), what="new")
        assert app.engine.session.transcript == [] and app.engine.session.system == ""
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: any("mysession" in l for l in app.main.chat.lines("help")), what="list")
        await type_line(pilot, "/resume mysession")
        await wait_for(pilot, lambda: "resumed session 'mysession'" in app.main.chat.lines(), what="resumed")
        assert [w.text for w in app.main.chat.query("UserMessage")] == ["remember 42"]
        assert replies(app)[0].text == FakeSession.reply
        assert app.engine.session.system == "be brief"
        await type_line(pilot, "/resume nosuch")
        await wait_for(pilot, lambda: app.main.chat.lines("error"), what="error")
        assert "no saved session named 'nosuch'" in app.main.chat.lines("error")[0]


# -- dashboard -------------------------------------------------------------------------------


async def test_dashboard_updates_from_probe_samples(tmp_path):
    samples = iter(
        [sample(ram_used=4 * GiB)] * 2
        + [sample(ram_used=15 * GiB, pressure="critical", swap_risk="high", thermal="serious", swap_out_rate=32 << 20)] * 1000
    )
    app = make_app(tmp_path, probe=lambda: next(samples), probe_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        panel = app.main.query_one(SystemPanel)
        await wait_for(pilot, lambda: panel.sample.swap_risk == "high", what="probe update")
        text = panel.visual.plain
        assert "15.0/16.0 GiB" in text
        assert "swap risk high" in text
        assert "serious" in text
        assert "critical" in text  # pressure
        assert "32.0 MiB/s" in text


async def test_dashboard_shows_heap_tiers_pillars_and_layers(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text(" ".join(f"tok{i}" for i in range(9000)))
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, f"/load {doc}")
        heap_panel = app.main.query_one(HeapPanel)
        await wait_for(pilot, lambda: heap_panel.heap is not None and heap_panel.heap.tokens_seen >= 9000, what="heap stats")
        text = heap_panel.visual.plain
        for word in ("sinks 4", "young 64", "intermediate", "tenured", "evictions", "compactions", "9,000 tokens", "4,096 tokens", "active", "peak", "cache", "prefill", "decode"):
            assert word in text, word
        strip = app.main.query_one(PillarStrip)
        first_row = strip.render().plain.splitlines()[0]
        assert first_row.startswith("S") and first_row.endswith("▓") and "█" in first_row
        pillars = app.main.query_one(PillarList).visual.plain
        assert "'tok" in pillars
        bars = app.main.query_one("LayerBars").visual.plain
        assert bars.count("\n") == 7 and "L0" in bars and "L7" in bars


@pytest.mark.parametrize("risk", ["low", "medium", "high", "unknown"])
@pytest.mark.parametrize("thermal", ["nominal", "fair", "serious", "critical", "unknown"])
def test_swap_risk_and_thermal_words_render(risk, thermal):
    text = SystemPanel.render_sample(sample(swap_risk=risk, thermal=thermal)).plain
    assert f"swap risk {risk}" in text
    assert f"Thermal  {thermal}" in text


def test_unknown_sample_renders():
    text = SystemPanel.render_sample(unknown_sample()).plain
    assert "swap risk unknown" in text and "Thermal  unknown" in text and "?/?" in text


async def test_dashboard_toggles_and_palette_has_commands(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        dash = app.main.dashboard
        assert dash.display
        await pilot.press("f2")
        await pilot.pause(0.05)
        assert not dash.display
        await pilot.press("f2")
        await pilot.pause(0.05)
        assert dash.display
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Stop", "Load a document", "Toggle dashboard", "Heap statistics"} <= titles
        footer_keys = {b.key for b in app.BINDINGS}
        assert {"escape", "f2", "ctrl+o", "f1"} <= footer_keys
        await pilot.press("ctrl+o")
        assert app.main.input.text == "/load "


async def test_probe_failure_shows_unknown(tmp_path):
    def broken():
        raise RuntimeError("no /proc")

    app = make_app(tmp_path, probe=broken, probe_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.pause(0.3)
        assert "swap risk unknown" in app.main.query_one(SystemPanel).visual.plain


# -- structure -------------------------------------------------------------------------------


def test_worker_runs_every_request_on_one_thread(tmp_path):
    threads = set()

    class Recording(FakeSession):
        @classmethod
        def load(cls, *a, **k):
            threads.add(__import__("threading").get_ident())
            return super().load(*a, **k)

        def chat(self, *a, **k):
            threads.add(__import__("threading").get_ident())
            yield from super().chat(*a, **k)

        def heap_stats(self):
            threads.add(__import__("threading").get_ident())
            return super().heap_stats()

    from app.engine_worker import Chat, Stats

    posted = []
    worker = EngineWorker(posted.append, Recording, store=SessionStore(tmp_path))
    worker.start()
    worker.submit(Chat("x"))
    worker.submit(Stats())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(type(m).__name__ == "ReplyDone" for m in posted):
        time.sleep(0.02)
    worker.stop()
    assert len(threads) == 1 and __import__("threading").get_ident() not in threads


def test_app_does_not_import_mlx():
    """The UI process imports MLX only on the engine thread, never through app.*.

    The package ``mlx_kv/__init__`` is bypassed here (a stub package with the same
    path) so the check is about the app's own imports.
    """
    code = (
        "import sys, types, pathlib, importlib.util;"
        "spec = importlib.util.find_spec('mlx_kv');"
        "pkg = types.ModuleType('mlx_kv'); pkg.__path__ = list(spec.submodule_search_locations);"
        "sys.modules['mlx_kv'] = pkg;"
        "import app.app, app.fake_engine, app.store, app.engine_worker;"
        "bad = sorted(m for m in sys.modules if m == 'mlx' or m.startswith('mlx.') or m.startswith('mlx_lm'));"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_memory_guard_hook_reports_in_the_chat(tmp_path):
    """A session with observe_system() gets probe samples on the engine thread; its notes are shown."""
    import threading

    calls = []

    class Guarded(FakeSession):
        def observe_system(self, s):
            calls.append(threading.get_ident())
            if s.pressure == "warn" and self.budget_tokens > 1024:
                self.budget_tokens = 1024
                return "memory pressure warn: heap budget tightened to 1,024 tokens"
            return None

    app = make_app(tmp_path, Guarded, probe=lambda: sample(pressure="warn", swap_risk="medium"), probe_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await wait_for(pilot, lambda: any("tightened" in l for l in app.main.chat.lines()), what="guard notice")
        await wait_for(pilot, lambda: app.main.query_one(HeapPanel).heap.budget_tokens == 1024, what="budget shown")
        assert threading.get_ident() not in calls and len(set(calls)) == 1
        await type_line(pilot, "still there?")
        await wait_for(pilot, lambda: replies(app) and not replies(app)[0].streaming, what="answer")
        assert replies(app)[0].text == FakeSession.reply


# -- end to end: the real app on the bundled model, in a pseudo-terminal -----------------------




def test_worker_drives_the_library_memory_guard(tmp_path):
    """The worker hands samples to the session's hook; the fake runs mlx_kv.guard.MemoryGuard like Session."""
    from app import messages as M
    from app.engine_worker import Stats

    posted = []
    worker = EngineWorker(posted.append, FakeSession, store=SessionStore(tmp_path))
    worker.start(budget=1024)
    try:
        deadline = time.monotonic() + 5
        while worker.session is None and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.observe(sample(pressure="warn", swap_risk="medium"))
        worker.submit(Stats())
        while time.monotonic() < deadline and not any(isinstance(m, M.EngineNotice) and "guard" in m.text for m in posted):
            time.sleep(0.02)
    finally:
        worker.stop()
    notes = [m.text for m in posted if isinstance(m, M.EngineNotice) and "guard" in m.text]
    assert notes and "tighten" in notes[0] and "512" in notes[0]
    assert [l.budget for l in worker.session.cache] == [512] * FakeSession.layers


def test_app_does_not_import_mlx_strict():
    """The literal check `import app.app` leaves MLX unloaded, once mlx_kv/__init__ is lazy."""
    check = "import {mod}, sys; print(any(m == 'mlx' or m.startswith('mlx.') for m in sys.modules))"
    pkg = subprocess.run([sys.executable, "-c", check.format(mod="mlx_kv")], capture_output=True, text=True, check=True)
    if pkg.stdout.strip() == "True":
        pytest.skip("mlx_kv/__init__.py imports MLX eagerly; test_app_does_not_import_mlx covers the app itself")
    out = subprocess.run([sys.executable, "-c", check.format(mod="app.app")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_screenshot_export_contains_the_dashboard(tmp_path):
    """How screenshots are taken (scripts/screenshot_app.py does the same at three moments)."""
    app = make_app(tmp_path, probe=lambda: sample(swap_risk="medium", thermal="fair"))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await wait_for(pilot, lambda: app.main.query_one(SystemPanel).sample.swap_risk == "medium", what="sample")
        svg = app.export_screenshot()
        assert svg.startswith("<svg") and "medium" in svg and "KV" in svg
        path = app.save_screenshot(filename="shot.svg", path=str(tmp_path))
        assert Path(path).read_text().startswith("<svg")


def test_heap_options_from_the_command_line_reach_the_session():
    from app.engine_worker import EngineWorker, Load

    seen = {}

    class Recording(FakeSession):
        @classmethod
        def load(cls, model=None, budget=None, policy=None, progress=None, **options):
            seen.update(options)
            return super().load(model, budget, policy)

    posted = []
    worker = EngineWorker(posted.append, Recording)
    worker._load(Load(None, 256, "h2o", (("cold_bits", 4), ("window", 32))))
    assert seen == {"cold_bits": 4, "window": 32}
    assert worker.settings["options"] == {"cold_bits": 4, "window": 32}


async def test_a_message_sent_during_a_load_shows_after_the_loaded_line(tmp_path):
    """Typed while /load runs, the message waits (marked queued) and then
    moves below the load's own 'loaded' line, where the engine took it up."""
    doc = tmp_path / "doc.txt"
    doc.write_text("alpha beta gamma delta " * 1500)
    GatedIngestSession.gate.clear()
    app = make_app(tmp_path, GatedIngestSession)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, f"/load {doc}")
        await wait_for(pilot, lambda: app.main.ingest_bar.active, what="loading")
        await type_line(pilot, "what does it say?")
        user = app.main.chat.query("UserMessage").last()
        queued = user.has_class("queued")
        GatedIngestSession.gate.set()
        assert queued
        await wait_for(pilot, lambda: replies(app) and not replies(app)[0].streaming, timeout=15, what="reply")
        order = [type(w).__name__ + ":" + getattr(w, "text", "")[:6] for w in app.main.chat.children]
        loaded = next(i for i, w in enumerate(order) if w.startswith("ChatLine:loaded"))
        asked = order.index("UserMessage:what d")
        assert loaded < asked < order.index(next(w for w in order if w.startswith("ReplyMessage")))
        assert not user.has_class("queued")
