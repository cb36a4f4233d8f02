"""Pilot tests of the app's features with the fake engine: conversations,
models, context, the remembers view, drift, and the usual chat-app tools."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.app import MlxKvApp
from app.engine_worker import EngineWorker, Ingest, slug
from app.fake_engine import DEFAULT_POLICY, FakeSession
from app.prefs import Prefs
from app.screens.conversations import ConversationsScreen
from app.screens.help import HelpScreen, key_name
from app.screens.models import ModelsScreen
from app.screens.remembers import RemembersScreen
from app.screens.system_prompt import SystemPromptScreen
from app.store import SessionStore
from app.widgets.context_bar import ContextBar
from app.widgets.drift_panel import DriftPanel
from app.widgets.memory_text import STYLES, MemoryText, render_spans
from app.widgets.reply_message import ReplyMessage
from app.widgets.user_message import UserMessage
from mlx_kv.catalog import find_models
from test_catalog import _hub, _places
from test_app import SIZE, SlowIngestSession, ready, replies, sample, type_line, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_app(tmp_path: Path, session_cls=FakeSession, **kw) -> MlxKvApp:
    return MlxKvApp(session_cls=session_cls, probe=lambda: sample(), store=SessionStore(tmp_path / "store"),
                    probe_interval=0.2, **kw)


def words(n: int, needle_at: int | None = None) -> str:
    out = [f"w{'abcdefgh'[i % 8]}{'ijklmnop'[i // 8 % 8]}" for i in range(n)]
    if needle_at is not None:
        out[needle_at] = "7421"
    return " ".join(out)


async def answered(app, pilot, n: int = 1) -> None:
    await wait_for(pilot, lambda: len(replies(app)) >= n and not replies(app)[n - 1].streaming, what="reply")
    await wait_for(pilot, lambda: not app.engine.busy, what="idle")


async def saved(app, pilot) -> None:
    """Wait for the autosave after the last change."""
    await wait_for(pilot, lambda: not app.engine.busy and not app.engine.dirty, what="autosave")


# -- conversations -------------------------------------------------------------------------


async def test_a_conversation_saves_itself_and_is_listed(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "What is the magic number?")
        await answered(app, pilot)
        await saved(app, pilot)
        store = SessionStore(tmp_path / "store")
        (row,) = store.summaries()
        assert row.name == "what-is-the-magic-number" == app.conversation
        assert row.messages == 2 and row.tokens == app.engine.session.tokens_seen and row.model == "bundled: tiny-llama-2L"
        assert store.load(row.name).transcript[-1]["content"] == FakeSession.reply
        assert "what-is-the-magic-number" in app.main.context_bar.plain and "saved" in app.main.context_bar.plain
        assert "what-is-the-magic-number" in app.title
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ConversationsScreen) and app.screen.rows, what="list")
        table = app.screen.query_one("DataTable")
        cells = [str(c) for c in table.get_row_at(0)]
        assert cells[0] == "●" and cells[1] == row.name and cells[2] == row.model and cells[4] == "2"
        await pilot.press("escape")
        assert not isinstance(app.screen, ConversationsScreen)


async def test_new_open_rename_delete_from_the_list(tmp_path):
    doc = tmp_path / "harbour.txt"
    doc.write_text(words(600, needle_at=300))
    app = make_app(tmp_path, budget=256)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, f"/load {doc}")
        await type_line(pilot, "first chat")
        await answered(app, pilot)
        await saved(app, pilot)
        first = app.conversation
        assert first == "harbour-txt"
        seen = app.engine.session.tokens_seen
        kept = app.engine.session.memory_map().spans[0].kept
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.conversation is None and any(
            l.startswith("new conversation") for l in app.main.chat.lines()), what="new conversation")
        assert app.engine.session.transcript == [] and not list(app.main.chat.query(UserMessage))
        await type_line(pilot, "second chat")
        await answered(app, pilot)
        await saved(app, pilot)
        assert app.conversation == "second-chat"
        # open the first one from the list: transcript and heap come back
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ConversationsScreen) and len(app.screen.rows) == 2, what="list")
        names = [r.name for r in app.screen.rows]
        assert names == ["second-chat", "harbour-txt"]  # newest first
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.conversation == first and not app.engine.busy, what="opened")
        assert [w.text for w in app.main.chat.query(UserMessage)] == ["first chat"]
        assert app.engine.session.tokens_seen == seen
        assert app.engine.session.memory_map().spans[0].kept == pytest.approx(kept)
        assert any("document harbour.txt" in l for l in app.main.chat.lines())
        assert list(app.main.chat.query(UserMessage))[0].meta.endswith("tokens")
        # rename the open one
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ConversationsScreen) and app.screen.rows, what="list")
        screen = app.screen
        screen.query_one("DataTable").move_cursor(row=[r.name for r in screen.rows].index(first))
        await pilot.press("r")
        box = screen.query_one("#conv-rename")
        box.value = "harbour-notes"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "harbour-notes" in [r.name for r in screen.rows], what="renamed")
        assert app.conversation == "harbour-notes" and app.engine.name == "harbour-notes"
        # a taken name is refused with one line
        screen.query_one("DataTable").move_cursor(row=[r.name for r in screen.rows].index("harbour-notes"))
        await pilot.press("r")
        box.value = "second-chat"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "already named" in screen.query_one("#conv-status").visual.plain, what="refused")
        # delete the other one: d twice
        screen.query_one("DataTable").move_cursor(row=[r.name for r in screen.rows].index("second-chat"))
        await pilot.press("d")
        assert "press d again" in screen.query_one("#conv-status").visual.plain
        await pilot.press("d")
        await wait_for(pilot, lambda: [r.name for r in screen.rows] == ["harbour-notes"], what="deleted")
        assert app.conversation == "harbour-notes"
        # deleting the open one starts a new conversation, and it is not saved again
        await pilot.press("d", "d")
        await wait_for(pilot, lambda: app.conversation is None and not app.engine.busy, what="deleted current")
        assert SessionStore(tmp_path / "store").list() == []
        await pilot.press("escape")


async def test_quitting_saves_a_reply_still_in_progress(tmp_path):
    class Slow(FakeSession):
        piece_delay = 0.05
        reply = " ".join(f"word{i}" for i in range(200))

    app = make_app(tmp_path, Slow)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "tell me a long story")
        await wait_for(pilot, lambda: replies(app) and len(replies(app)[0].text) > 30, what="streaming")
    # the app has exited (run_test's exit unmounts it and stops the engine)
    row = SessionStore(tmp_path / "store").load("tell-me-a-long-story")
    said = row.transcript[-1]["content"]
    assert row.transcript[0]["content"] == "tell me a long story"
    assert said.startswith("word0 word1") and len(said) < len(Slow.reply)


def test_a_hangup_saves_the_conversation(tmp_path):
    """SIGHUP runs engine.stop(): the changed conversation is saved before the process goes."""
    posted = []
    worker = EngineWorker(posted.append, FakeSession, store=SessionStore(tmp_path))
    worker.start()
    from app.engine_worker import Chat

    worker.autosave = False  # as if the terminal closed before the idle save ran
    worker.submit(Chat("remember the lighthouse"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(type(m).__name__ == "ReplyDone" for m in posted):
        time.sleep(0.02)
    assert worker.dirty and SessionStore(tmp_path).list() == []
    worker.autosave = True
    worker.stop()
    assert SessionStore(tmp_path).load("remember-the-lighthouse").transcript[-1]["content"] == FakeSession.reply


async def test_continue_reopens_the_most_recent_conversation(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "an older one")
        await answered(app, pilot)
        await saved(app, pilot)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.conversation is None and not app.engine.busy, what="new")
        await type_line(pilot, "the latest one")
        await answered(app, pilot)
        await saved(app, pilot)
    app = make_app(tmp_path, continue_last=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.conversation == "the-latest-one" and not app.engine.busy, what="continued")
        assert [w.text for w in app.main.chat.query(UserMessage)] == ["the latest one"]


def test_names_from_first_words():
    assert slug("What is the magic number?") == "what-is-the-magic-number"
    assert slug("report.md") == "report-md"
    assert slug("¿¿") .startswith("chat-")
    assert len(slug("word " * 40)) <= 40


# -- models ----------------------------------------------------------------------------------


async def test_the_model_picker_switches_to_a_new_conversation(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_KV_CACHE_DIR", str(tmp_path / "cache"))
    home = _places(tmp_path)
    app = make_app(tmp_path)
    app.model_finder = lambda folders: find_models(folders, home=home, scan_hub=_hub(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "hello there")
        await answered(app, pilot)
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen.entries, what="models")
        names = [e.name for e in app.screen.entries]
        assert names[:2] == ["mlx-kv-tiny", "SmolLM2-135M-Instruct"] and "Qwen2.5-0.5B-Instruct-Q4_0.gguf" in names
        # an unusable one says why and stays
        app.screen.query_one("DataTable").move_cursor(row=names.index("mlx-community/gemma-2-2b"))
        await pilot.press("enter")
        assert isinstance(app.screen, ModelsScreen)
        assert "not supported" in app.screen.query_one("#models-status").visual.plain
        app.screen.query_one("DataTable").move_cursor(row=names.index("Qwen2.5-0.5B-Instruct-Q4_0.gguf"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.model_name == "Qwen2.5-0.5B-Instruct-Q4_0.gguf" and not app.engine.busy,
                       what="switched")
        assert app.conversation is None and app.engine.session.transcript == []
        assert SessionStore(tmp_path / "store").load("hello-there").transcript[0]["content"] == "hello there"


async def test_a_hub_id_downloads_behind_a_progress_bar(tmp_path):
    class Downloading(FakeSession):
        download_delay = 0.08

    app = make_app(tmp_path, Downloading)
    seen = []
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "/model mlx-community/Llama-3.2-1B-Instruct-4bit")
        bar = app.main.download_bar

        def progressed():
            if bar.active and getattr(bar, "fraction", None) is not None:
                seen.append(bar.fraction)
            return app.model_name == "mlx-community/Llama-3.2-1B-Instruct-4bit" and not bar.active

        await wait_for(pilot, progressed, what="downloaded")
        assert seen and 0 < max(seen) <= 1.0 and "downloading" in bar.stats_text
        await wait_for(pilot, lambda: "model mlx-community/Llama-3.2-1B-Instruct-4bit is ready: this is a new "
                       "conversation on it" in app.main.chat.lines(), what="ready line")
        await type_line(pilot, "/model missing/model")
        await wait_for(pilot, lambda: app.main.chat.lines("error"), what="error")
        assert "was not found" in app.main.chat.lines("error")[0]
        assert app.model_name == "mlx-community/Llama-3.2-1B-Instruct-4bit"  # the old session stays
        assert not bar.active


# -- context --------------------------------------------------------------------------------


async def test_the_context_bar_and_the_eviction_lines(tmp_path):
    class Reading(FakeSession):
        ingest_delay = 0.3
        ingest_chunk = 256

    doc = tmp_path / "report.md"
    doc.write_text(words(2100))
    app = make_app(tmp_path, Reading, budget=1024)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert "new conversation" in app.main.context_bar.plain
        await type_line(pilot, f"/load {doc}")
        await wait_for(pilot, lambda: any(l.startswith("report.md:") for l in app.main.chat.lines()), what="eviction")
        line = [l for l in app.main.chat.lines() if l.startswith("report.md:")][0]
        assert "% of its tokens evicted" in line and "F5" in line
        await wait_for(pilot, lambda: any(l.startswith("loaded report.md") for l in app.main.chat.lines()), what="loaded")
        await wait_for(pilot, lambda: "report.md 51% evicted" in app.main.context_bar.plain, what="bar")
        text = app.main.context_bar.plain
        assert "read 2,100 · kept 1,024 (49%) · budget 1,024/layer" in text
        assert f"the heap evicts by {DEFAULT_POLICY}" in text
        assert ContextBar.cells(1500, 1024, 1024, 15) == "█" * 10 + "▒" * 5
        announced = [l for l in app.main.chat.lines() if l.startswith("report.md:")]
        # when eviction reached it, then as it passed 25% and 50% (each milestone once)
        assert 2 <= len(announced) <= 3 and announced[-1][:14] in ("report.md: 50%", "report.md: 51%")
        assert announced[-1].endswith("of its tokens evicted")
        await type_line(pilot, "more")
        await answered(app, pilot)
        assert [l for l in app.main.chat.lines() if l.startswith("report.md:")] == announced


async def test_overflow_stop_refuses_and_rolling_keeps_the_newest(tmp_path):
    doc = tmp_path / "big.txt"
    doc.write_text(words(500))
    app = make_app(tmp_path, budget=256)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "/overflow stop")
        await wait_for(pilot, lambda: any("overflow: stop" in l for l in app.main.chat.lines()), what="stop")
        assert "stop at the budget" in app.main.context_bar.plain
        await type_line(pilot, f"/load {doc}")
        await wait_for(pilot, lambda: app.main.chat.lines("error"), what="refused")
        assert "context full (overflow: stop): big.txt needs 500 tokens" in app.main.chat.lines("error")[0]
        assert app.engine.session.tokens_seen == 0
        await type_line(pilot, "/load " + str(tmp_path / "small.txt"))  # missing: a one-line error, nothing else
        (tmp_path / "fits.txt").write_text(words(245))
        await type_line(pilot, f"/load {tmp_path / 'fits.txt'}")
        await wait_for(pilot, lambda: any(l.startswith("loaded fits.txt") for l in app.main.chat.lines()), what="fits")
        await type_line(pilot, "this will not fit at all, not even close to fitting in there")
        await wait_for(pilot, lambda: any("context full" in e and "this message" in e for e in app.main.chat.lines("error")),
                       what="message refused")
        user = list(app.main.chat.query(UserMessage))[-1]
        await wait_for(pilot, lambda: user.has_class("refused"), what="marked refused")
        assert "not read" in user.meta and not replies(app)
        assert app.engine.session.evictions == 0
        await type_line(pilot, "/overflow rolling")
        await wait_for(pilot, lambda: app.engine.session.policy == "streaming" and not app.engine.busy, what="rolling")
        await wait_for(pilot, lambda: "rolling window" in app.main.context_bar.plain, what="bar")
        await type_line(pilot, "now it fits")
        await answered(app, pilot)
        await type_line(pilot, "/overflow heap")
        await wait_for(pilot, lambda: app.engine.session.policy == DEFAULT_POLICY, what="heap again")
        await saved(app, pilot)
        assert SessionStore(tmp_path / "store").load(app.conversation).settings["overflow"] == "heap"


# -- what the model remembers ----------------------------------------------------------------


async def test_the_remembers_view_shows_kept_evicted_and_pillars_as_it_changes(tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text(words(800, needle_at=400))
    app = make_app(tmp_path, budget=512)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, f"/load {doc}")
        await wait_for(pilot, lambda: any(l.startswith("loaded notes.txt") for l in app.main.chat.lines()), what="loaded")
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, RemembersScreen), what="view")
        screen = app.screen
        text = screen.query_one(MemoryText)
        await wait_for(pilot, lambda: text.spans and text.spans[0].tokens is not None, what="detail")
        span = text.spans[0]
        assert span.source == "notes.txt" and span.length == 800 and app.engine.watch == (0,)
        kept = span.tokens.kept
        assert kept[0] == 1.0 and 0.0 in kept and any(0 < k < 1 for k in kept)
        assert kept[400] > 0.9  # the needle: every pair's score is high
        summary = screen.query_one("#rem-summary").visual.plain
        assert "8 layers × 2 KV heads = 16 pairs" in summary and f"{span.kept:.0%}" in summary
        assert f"by none {sum(1 for k in kept if k == 0):,} tokens" in summary
        styles = {s.style for s in render_spans([span], app.last_pillars).spans}
        assert STYLES["none"] in styles and STYLES["all"] in styles and STYLES["pillar"] in styles
        options = screen.query_one("OptionList")
        assert "notes.txt" in str(options.get_option_at_index(0).prompt)
        before = span.kept
        # more reading evicts more of the document, and the view follows
        app.engine.submit(Ingest(str(doc)))
        await wait_for(pilot, lambda: text.spans[0].kept < before - 0.05, timeout=10, what="refreshed")
        assert len(screen.memory.spans) == 2
        # the conversation
        await app.handle_line("what number?")  # sent while the view is up
        await answered(app, pilot)
        await wait_for(pilot, lambda: options.option_count == 3, what="the conversation listed")
        options.highlighted = 2
        await wait_for(pilot, lambda: text.spans and text.spans[0].kind == "user", what="conversation")
        await pilot.pause(0.1)
        assert "── you · 2 tokens" in text.visual.plain and "── reply ·" in text.visual.plain
        await pilot.press("escape")
        assert app.engine.watch == () and not isinstance(app.screen, RemembersScreen)


def test_cold_and_spilled_tokens_have_their_marks():
    s = FakeSession.load(budget=128, cold_bits=4)
    s.ingest(str(_write(words(400))))
    (span,) = s.memory_map((0,)).spans
    assert any(c > 0 for c in span.tokens.cold)
    assert STYLES["cold"] in " ".join(x.style for x in render_spans([span]).spans)
    r = FakeSession.load(budget=128, recovery="64MB")
    r.ingest(str(_write(words(400))))
    (span,) = r.memory_map((0,)).spans
    assert any(x > 0 for x in span.tokens.spilled)
    assert STYLES["spilled"] in " ".join(x.style for x in render_spans([span]).spans)


def _write(text: str) -> Path:
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".txt")
    Path(path).write_text(text)
    return Path(path)


# -- drift -----------------------------------------------------------------------------------


async def test_drift_is_sampled_with_its_cost_shown(tmp_path):
    app = make_app(tmp_path, budget=128)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        panel = app.main.dashboard.query_one(DriftPanel)
        await type_line(pilot, "hi")
        await answered(app, pilot)
        await wait_for(pilot, lambda: panel.last is not None, what="first update")
        assert "nothing evicted yet" in panel.last.note and not panel.samples
        app.engine.submit(Ingest(str(_write(words(600)))))
        await wait_for(pilot, lambda: panel.samples, what="a sample")
        text = panel.visual.plain
        assert "KL" in text and "Shadow" in text and "≤5% of the time" in text
        assert panel.samples[-1].gap_s >= 20
        n = len(panel.samples)
        await type_line(pilot, "again")
        await answered(app, pilot, 2)
        await pilot.pause(0.3)
        assert len(panel.samples) == n  # the schedule keeps samples apart
        await type_line(pilot, "/drift now")
        await wait_for(pilot, lambda: len(panel.samples) == n + 1, what="forced sample")
        await type_line(pilot, "/drift off")
        await wait_for(pilot, lambda: Prefs.load(tmp_path / "store").drift == "off", what="pref saved")


async def test_auto_drift_stays_off_where_a_shadow_is_slow(tmp_path):
    class SlowPrefill(FakeSession):
        def throughput(self):
            t = super().throughput()
            return type(t)(prefill_tps=50.0, decode_tps=t.decode_tps)

    app = make_app(tmp_path, SlowPrefill, budget=128)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        panel = app.main.dashboard.query_one(DriftPanel)
        app.engine.submit(Ingest(str(_write(words(600)))))
        await wait_for(pilot, lambda: panel.last is not None and "auto: off here" in panel.last.note, what="auto off")
        assert "600-token shadow would take ~12 s" in panel.last.note and not panel.samples


# -- the usual ------------------------------------------------------------------------------------


CODE_REPLY = "Here:\n\n```python\nprint('hello')\n```\n\nand a second:\n\n```sh\nls -la\n```\n"


async def test_copy_a_reply_or_a_code_block(tmp_path):
    class Coder(FakeSession):
        reply = CODE_REPLY

    app = make_app(tmp_path, Coder)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "/copy")
        assert app.clipboard == ""
        await type_line(pilot, "show code")
        await answered(app, pilot)
        await type_line(pilot, "/copy")
        assert app.clipboard == CODE_REPLY
        await type_line(pilot, "/copy code")
        assert app.clipboard == "ls -la"
        reply = replies(app)[0]
        fences = list(reply.query("MarkdownFence"))
        await pilot.click(fences[0])
        assert app.clipboard == "print('hello')"
        await pilot.click(reply.body, offset=(2, 0))
        assert app.clipboard == CODE_REPLY


async def test_export_markdown(tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("The ferry leaves at nine. ```tricky``` fences")
    app = make_app(tmp_path)
    out = tmp_path / "out" / "chat.md"
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "/system be brief")
        await type_line(pilot, f"/load {doc}")
        await type_line(pilot, "When does the ferry leave?")
        await answered(app, pilot)
        await type_line(pilot, f"/export {out}")
        await wait_for(pilot, lambda: out.exists(), what="export")
        text = out.read_text()
        assert text.startswith("# ") and "## System prompt\n\nbe brief" in text
        assert "## Document: notes.txt" in text and "````text\nThe ferry leaves at nine. ```tricky``` fences\n````" in text
        assert "## You · " in text and "When does the ferry leave?" in text
        assert f"## bundled: tiny-llama-2L · " in text and FakeSession.reply in text
        assert any(f"exported 2 messages to {out}" in l for l in app.main.chat.lines())
        await type_line(pilot, f"/export {out}")
        await wait_for(pilot, lambda: app.main.chat.lines("error"), what="exists")
        assert "exists already" in app.main.chat.lines("error")[0]
        await type_line(pilot, "/export")
        await wait_for(pilot, lambda: list((tmp_path / "store" / "exports").glob("*.md")), what="default export")


async def test_the_system_prompt_editor(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "/system")
        await wait_for(pilot, lambda: isinstance(app.screen, SystemPromptScreen), what="editor")
        area = app.screen.query_one("TextArea")
        area.load_text("You are a harbour pilot.\nAnswer in one line.")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.engine.session.system == "You are a harbour pilot.\nAnswer in one line.",
                       what="set")
        await wait_for(pilot, lambda: app.settings.get("system", "").startswith("You are"), what="ui knows")
        await type_line(pilot, "/system")
        await wait_for(pilot, lambda: isinstance(app.screen, SystemPromptScreen), what="editor again")
        assert app.screen.query_one("TextArea").text.startswith("You are a harbour pilot.")
        await pilot.press("escape")  # cancel: nothing changes
        await type_line(pilot, "hi")
        await answered(app, pilot)
        await saved(app, pilot)
        assert SessionStore(tmp_path / "store").load(app.conversation).settings["system"].startswith("You are")


async def test_regenerate_replaces_the_last_reply(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.main.chat.lines("error"), what="nothing to regenerate")
        assert "not a reply" in app.main.chat.lines("error")[0]
        await type_line(pilot, "tell me")
        await answered(app, pilot)
        first = replies(app)[0].text
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(replies(app)) == 1 and replies(app)[0].text != first
                       and not replies(app)[0].streaming, what="regenerated")
        roles = [t["role"] for t in app.engine.session.transcript]
        assert roles == ["user", "assistant"] and app.engine.session.transcript[1]["content"] == replies(app)[0].text
        assert [w.text for w in app.main.chat.query(UserMessage)] == ["tell me"]


async def test_token_counts_on_each_message(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await type_line(pilot, "one two three")
        await answered(app, pilot)
        user = list(app.main.chat.query(UserMessage))[0]
        reply = replies(app)[0]
        spans = app.engine.session.memory_map().spans
        assert user.tokens == spans[0].length == 3 and user.meta == "3 tokens"
        assert reply.tokens == spans[1].length and reply.note.startswith(f"{spans[1].length} tokens · ")


async def test_the_theme_is_picked_in_the_palette_and_remembered(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Theme", "Conversations", "Models", "What the model remembers", "Regenerate", "Copy last reply",
                "Export as Markdown", "Edit system prompt", "New conversation"} <= titles
        app.theme = "nord"
        await pilot.pause(0.1)
    assert Prefs.load(tmp_path / "store").theme == "nord"
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert app.theme == "nord"


async def test_help_lists_every_key_and_command(tmp_path):
    from app.commands import COMMANDS

    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        plain = app.screen.query_one("#help-text").visual.plain
        for binding in app.BINDINGS:
            assert key_name(binding.key) in plain, binding.key
        for screen in (ConversationsScreen, ModelsScreen, RemembersScreen, SystemPromptScreen):
            for binding in screen.BINDINGS:
                if binding.show:
                    assert key_name(binding.key) in plain and binding.description in plain
        for spec in COMMANDS.values():
            assert spec.usage in plain
        assert "Ctrl+P" in plain and "Shift+Enter" in plain
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


def test_short_times_for_the_list():
    from app.format import when

    now = time.mktime((2026, 12, 1, 15, 0, 0, 0, 0, -1))
    assert when(now - 3600, now) == "today 14:00"
    assert when(time.mktime((2026, 3, 9, 8, 5, 0, 0, 0, -1)), now) == "09 Mar 08:05"
    assert when(time.mktime((2025, 3, 9, 8, 5, 0, 0, 0, -1)), now) == "09 Mar 2025"


def test_the_readme_names_every_command_key_and_screenshot():
    import re

    from app.commands import COMMANDS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## The terminal app"): readme.index("## Command line")]
    for name in COMMANDS:
        assert f"`/{name}" in section, name
    for binding in MlxKvApp.BINDINGS:
        assert key_name(binding.key) in section, binding.key
    shots = re.findall(r"\]\((docs/screens/[^)]+\.svg)\)", section)
    assert len(shots) >= 8
    for shot in shots:
        assert (Path(__file__).resolve().parents[1] / shot).read_text().startswith("<svg"), shot


def test_the_save_notice_counts_what_the_list_shows():
    from app.engine_worker import count_messages, what_it_holds

    transcript = [{"role": "document", "source": "a.md"}, {"role": "user"}, {"role": "assistant"}]
    assert count_messages(transcript) == 2
    assert what_it_holds(transcript) == "2 messages, 1 document"
    assert what_it_holds(transcript[1:2]) == "1 message"
