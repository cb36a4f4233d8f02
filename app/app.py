"""The mlx-kv Textual app: chat on the left, the live memory dashboard on the right.

Why this shape (oterm, toolong, posting): one ``App`` with one stylesheet,
screens, one widget per file, and background work that only talks to the UI
by posting messages.  The engine lives on its own thread (``EngineWorker``);
the system probes, the conversation list and the model search run in
Textual thread workers, so neither model work nor a slow ``sysctl`` or
folder walk ever blocks a keystroke.

Screens: the chat (MainScreen), saved conversations (F3), the model picker
(F4), what the model still remembers (F5), help (F1) and the system prompt
editor (/system).  Conversations save themselves after every change (the
worker does, atomically), so quitting or closing the terminal loses nothing.

This module never imports MLX: the engine is imported on the engine thread.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen

from app import commands as C
from app import format as F
from app import messages as M
from app.engine_worker import (
    Chat,
    Clear,
    Drift,
    EngineWorker,
    Export,
    Ingest,
    New,
    Regenerate,
    Rename,
    Resume,
    Save,
    SetBudget,
    SetOverflow,
    SetPolicy,
    SetSystem,
    SetTemperature,
    Stats,
    SwitchModel,
)
from app.prefs import Prefs
from app.screens.conversations import ConversationsScreen
from app.screens.help import HelpScreen
from app.screens.main import MainScreen
from app.screens.models import ModelsScreen
from app.screens.remembers import RemembersScreen
from app.screens.system_prompt import SystemPromptScreen
from app.store import ConversationSummary, SessionStore, data_dir
from app.widgets.chat_input import ChatInput
from app.widgets.reply_message import ReplyMessage
from app.widgets.user_message import UserMessage
from mlx_kv.catalog import find_models
from mlx_kv.events import MemoryMap
from mlx_kv.system import SystemProbe, SystemSample, unknown_sample

log = logging.getLogger(__name__)
MILESTONES = (0.25, 0.5, 0.75, 0.9)  # a document's evicted share is announced when it first passes one


def ui_handler(method: Callable) -> Callable:
    """Drop engine/probe messages that arrive before the screen is built or after it is gone.

    The engine thread keeps posting while the app starts and shuts down; a
    late stats message must not crash the app on exit.
    """

    @functools.wraps(method)
    async def wrapper(self: "MlxKvApp", message: Any) -> None:
        main = getattr(self, "main", None)
        if main is None or not main.is_attached:
            return
        try:
            result = method(self, message)
            if inspect.isawaitable(result):
                await result
        except NoMatches:
            if main.is_attached and self.is_running:
                raise

    return wrapper


class MlxKvApp(App):
    """Chat with a model whose KV cache is a managed heap, and watch the heap work."""

    CSS_PATH = "app.tcss"
    TITLE = "mlx-kv"
    BINDINGS = [
        Binding("escape", "stop", "Stop", tooltip="Stop the reply or the document load in progress"),
        Binding("ctrl+o", "load_prompt", "Load doc", tooltip="Start a /load command"),
        Binding("f3", "conversations", "Chats", tooltip="Saved conversations: open, rename, delete, new"),
        Binding("f4", "models", "Models", tooltip="Pick a model (a new conversation)"),
        Binding("f5", "remembers", "Remembers", tooltip="What the model still remembers of each document"),
        Binding("f2", "toggle_dashboard", "Dashboard", tooltip="Show or hide the memory dashboard"),
        Binding("ctrl+n", "new_conversation", "New", tooltip="Start a new conversation (the current one is saved)"),
        Binding("ctrl+r", "regenerate", "Regenerate", tooltip="Answer the last message again"),
        Binding("f1", "help", "Help", tooltip="Every key and command"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        model: str | None = None,
        budget: int | str | None = None,
        policy: str | None = None,
        *,
        heap_options: dict[str, Any] | None = None,
        session_cls: Any | None = None,
        probe: Callable[[], SystemSample] | None = None,
        store: SessionStore | None = None,
        probe_interval: float = 1.0,
        max_tokens: int = 512,
        resume: str | None = None,
        continue_last: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.budget = budget
        self.policy = policy
        self.heap_options = dict(heap_options or {})
        self._session_cls = session_cls
        self._probe = probe or SystemProbe().sample
        self._store = store or SessionStore()
        self.prefs = Prefs.load(self._store.root)
        self.probe_interval = probe_interval
        self.max_tokens = max_tokens
        self.resume = resume
        self.continue_last = continue_last
        self.engine: EngineWorker | None = None
        self.last_sample: SystemSample = unknown_sample()
        self.last_stats: M.EngineStats | None = None
        self.last_memory: MemoryMap | None = None
        self.last_pillars: set[int] = set()
        self.model_name = "loading…"
        self.settings: dict = {"budget": budget, "policy": policy}
        self.conversation: str | None = None
        self._reply: ReplyMessage | None = None
        self._probing = False
        self._busy_what = ""
        self._queued: dict[int, UserMessage] = {}  # sent messages the engine has not taken up yet
        self._asked: UserMessage | None = None  # the message whose reply is streaming
        self._next_ident = 0
        self._announced: dict[int, float] = {}  # a document span's start -> the evicted share last announced
        self.model_finder = find_models  # what the model picker lists (mlx_kv.catalog; tests swap it)

    # -- lifecycle ---------------------------------------------------------------

    async def on_mount(self) -> None:
        if self.prefs.theme and self.prefs.theme in self.available_themes:
            self.theme = self.prefs.theme
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.main = MainScreen()
        await self.push_screen(self.main)  # composed before any engine message can arrive
        self._refresh_title()
        self.engine = EngineWorker(
            self.post_message, self._session_cls, store=self._store, max_tokens=self.max_tokens,
            drift=self.prefs.drift,
        )
        resume = self.resume
        if resume is None and self.continue_last:
            recent = self._store.list()
            resume = recent[0][0] if recent else None
            if resume is None:
                self.notify("no saved conversation to continue: a new one starts")
        self.engine.start(self.model, self.budget, self.policy, self.heap_options, resume=resume)
        self.set_interval(self.probe_interval, self._tick)
        self._tick()
        if not self.is_headless:
            self._catch_hangup()

    def on_unmount(self) -> None:
        if self.engine is not None:
            self.engine.stop(timeout=1.0)

    def _catch_hangup(self) -> None:
        """A closed terminal (SIGHUP) or a kill (SIGTERM) saves the conversation before the process goes.

        The terminal may be gone, so nothing is drawn: the engine stops what
        it runs, saves, and the process exits."""
        import asyncio

        def hangup() -> None:
            if self.engine is not None:
                self.engine.stop(timeout=5.0, save_timeout=60.0)
            logging.shutdown()
            os._exit(0)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, hangup)
            except (NotImplementedError, RuntimeError, ValueError):  # not on this platform
                pass

    def _theme_changed(self, theme: Any) -> None:
        self.prefs.theme = self.theme
        self.prefs.save(self._store.root)

    # -- probes (thread worker, never blocks the UI) -----------------------------------

    def _tick(self) -> None:
        if not self._probing:
            self._probing = True
            self.run_worker(self._probe_once, thread=True, group="probe", exit_on_error=False)
        if self.engine is not None:
            self.engine.request_stats()

    def _probe_once(self) -> None:
        try:
            sample = self._probe()
        except Exception:  # noqa: BLE001 - probes report 'unknown', never crash the app
            log.exception("probe failed")
            sample = unknown_sample()
        finally:
            self._probing = False
        self.post_message(M.ProbeSampled(sample))

    @ui_handler
    def on_probe_sampled(self, message: M.ProbeSampled) -> None:
        self.last_sample = message.sample
        self.main.dashboard.show_sample(message.sample)
        if self.engine is not None:
            self.engine.observe(message.sample)

    # -- input ----------------------------------------------------------------------

    async def on_chat_input_submitted(self, message: ChatInput.Submitted) -> None:
        await self.handle_line(message.text)

    async def handle_line(self, line: str) -> None:
        """Dispatch one line from the input box (also used by tests and the palette)."""
        chat = self.main.chat
        parsed = C.parse(line)
        if isinstance(parsed, C.ParseError):
            await chat.add_error(parsed.message)
            return
        if isinstance(parsed, C.ChatText):
            if not parsed.text.strip():
                return
            widget = await chat.add_user(parsed.text)
            if self.engine.busy:
                widget.add_class("queued")
            self._note_queue()
            self._next_ident += 1
            self._queued[self._next_ident] = widget
            self.engine.submit(Chat(parsed.text, self.max_tokens, ident=self._next_ident))
            return
        await self.run_command(parsed)

    async def run_command(self, cmd: C.Command) -> None:
        chat = self.main.chat
        name, arg = cmd.name, cmd.arg
        if name == "help":
            await chat.add_line("\n".join(C.help_lines() + [self.keys_line()]), "help")
        elif name == "quit":
            self.exit()
        elif name == "load":
            if not Path(str(arg)).exists():
                await chat.add_error(f"no such file: {arg}")
                return
            self._note_queue()
            self.engine.submit(Ingest(str(arg)))
        elif name == "budget":
            self.engine.submit(SetBudget(arg))
        elif name == "policy":
            self.engine.submit(SetPolicy(str(arg)))
        elif name == "system":
            if arg is None:
                self.action_edit_system()
            else:
                self.engine.submit(SetSystem(str(arg)))
        elif name == "overflow":
            self.engine.submit(SetOverflow(str(arg)))
        elif name == "temperature":
            self.engine.submit(SetTemperature(float(arg)))
        elif name == "clear":
            await chat.clear_messages()
            self._queued.clear()
            self._announced.clear()
            self.engine.submit(Clear())
        elif name == "stats":
            self.engine.submit(Stats(report=True))
        elif name == "save":
            self.engine.submit(Save(str(arg)))
        elif name == "resume":
            self.engine.submit(Resume(None if arg is None else str(arg)))
        elif name == "new":
            self.new_conversation()
        elif name == "conversations":
            self.action_conversations()
        elif name == "rename":
            self.engine.submit(Rename(str(arg)))
        elif name == "model":
            if arg is None:
                self.action_models()
            else:
                self.switch_model(str(arg))
        elif name == "remembers":
            self.action_remembers()
        elif name == "drift":
            self.set_drift(str(arg))
        elif name == "regenerate":
            self.action_regenerate()
        elif name == "copy":
            self.copy_last(code=arg == "code")
        elif name == "export":
            self.engine.submit(Export(None if arg is None else str(arg)))

    def _note_queue(self) -> None:
        if self.engine is not None and self.engine.busy and self._busy_what not in ("", "stats"):
            self.notify("The engine is busy; your request is queued (Esc stops the current one).")

    # -- conversations and models (called by the screens) ------------------------------------

    def list_conversations(self) -> list[ConversationSummary]:
        """Thread-safe (SQLite); called from the conversations screen's worker."""
        return self._store.summaries()

    def open_conversation(self, name: str) -> None:
        if name != self.conversation:
            self.engine.submit(Resume(name))

    def new_conversation(self) -> None:
        self.engine.submit(New())

    def rename_conversation(self, old: str, new: str) -> None:
        """From a thread worker: the store changes under the worker's lock."""
        self.engine.rename_saved(old, new)

    def delete_conversation(self, name: str) -> None:
        """From a thread worker; deleting the open conversation starts a new one (never saving the old again)."""
        if self.engine.delete_saved(name):
            self.engine.submit(New(save=False))

    def switch_model(self, spec: str) -> None:
        self.engine.submit(SwitchModel(spec))

    def add_model_folder(self, folder: str) -> None:
        if folder not in self.prefs.model_folders:
            self.prefs.model_folders.append(folder)
            self.prefs.save(self._store.root)

    def set_drift(self, mode: str) -> None:
        if mode == "now":
            self.engine.submit(Drift())
            return
        self.engine.drift_mode = mode
        self.prefs.drift = mode
        self.prefs.save(self._store.root)
        self.main.dashboard.query_one("DriftPanel").show(M.DriftUpdate(mode, note=DRIFT_NOTES[mode]))
        if mode == "on":
            self.engine.submit(Drift())

    def watch_memory(self, spans: tuple[int, ...]) -> bool:
        """Ask the engine for per-token detail of these spans with each stats; True if that changed."""
        if self.engine is None or self.engine.watch == spans:
            return False
        self.engine.watch = spans
        if spans:
            self.engine.request_stats()
        return True

    def copy_last(self, code: bool = False) -> None:
        replies = [r for r in self.main.chat.query(ReplyMessage) if r.text]
        if not replies:
            self.notify("no reply to copy yet", severity="warning")
            return
        reply = replies[-1]
        if code:
            blocks = reply.code_blocks()
            if not blocks:
                self.notify("the last reply has no code block", severity="warning")
                return
            self.copy_to_clipboard(blocks[-1])
            self.notify(f"copied the code block ({len(blocks[-1]):,} characters)", timeout=2)
        else:
            self.copy_to_clipboard(reply.text)
            self.notify(f"copied the reply ({len(reply.text):,} characters)", timeout=2)

    # -- engine messages ----------------------------------------------------------------

    @ui_handler
    async def on_engine_ready(self, message: M.EngineReady) -> None:
        if self.model_name == "loading…":
            await self.main.chat.add_line(
                f"ready: {message.model_name}  (F1 lists every key and command, Esc stops a reply)")
        self.model_name = message.model_name
        self.settings.update(message.settings)
        self.main.context_bar.set_conversation(self.conversation, overflow=self.settings.get("overflow") or "heap")
        self._refresh_title()

    @ui_handler
    def on_engine_busy(self, message: M.EngineBusy) -> None:
        self._busy_what = message.what if message.busy else ""
        self._refresh_title()

    @ui_handler
    async def on_reply_started(self, message: M.ReplyStarted) -> None:
        chat = self.main.chat
        if message.regenerated:
            old = [r for r in chat.query(ReplyMessage)]
            if old:
                await old[-1].remove()
            users = list(chat.query(UserMessage))
            self._asked = users[-1] if users else None
        else:
            # A message sent while something else ran (a /load) is shown where the
            # engine took it up: after that work's own lines, right above its reply.
            widget = self._queued.pop(message.ident, None)
            if widget is not None and widget.is_attached:
                chat.move_to_end(widget)
                widget.remove_class("queued")
            self._asked = widget
        self._reply = await chat.add_reply()

    @ui_handler
    async def on_reply_chunk(self, message: M.ReplyChunk) -> None:
        if self._reply is None:
            self._reply = await self.main.chat.add_reply()
        await self._reply.add(message.text)

    @ui_handler
    async def on_reply_done(self, message: M.ReplyDone) -> None:
        reply, self._reply = self._reply, None
        asked, self._asked = self._asked, None
        if reply is None:
            return
        if message.error and not reply.text:
            await reply.remove()  # nothing was said: the error line tells why
            if asked is not None and "context full" in message.error:
                asked.add_class("refused")
                asked.set_meta(note="not read: the context is full")
            return
        if asked is not None and message.prompt_tokens is not None:
            asked.set_meta(message.prompt_tokens)
        tps = (message.reply_tokens or message.pieces) / message.seconds if message.seconds > 0 else 0.0
        parts = [f"{message.reply_tokens:,} tokens" if message.reply_tokens is not None else f"{message.pieces} pieces",
                 F.rate(tps), F.duration(message.seconds)]
        if message.note:
            parts.append(message.note)
        await reply.finish(cancelled=message.cancelled, note=" · ".join(parts))
        reply.tokens = message.reply_tokens
        if message.cancelled and not message.error:
            await self.main.chat.add_line(f"reply stopped after {message.pieces} pieces (kept in the transcript)")
        elif message.note:
            await self.main.chat.add_line(f"reply ended early: {message.note}")

    @ui_handler
    async def on_ingest_started(self, message: M.IngestStarted) -> None:
        self.main.ingest_bar.start(message.source)

    @ui_handler
    def on_ingest_progressed(self, message: M.IngestProgressed) -> None:
        self.main.ingest_bar.show(message.progress)

    @ui_handler
    async def on_ingest_done(self, message: M.IngestDone) -> None:
        self.main.ingest_bar.finish()
        name = Path(message.source).name
        r = message.result
        if r is None:
            return  # the error line follows
        tps = r.tokens / r.seconds if r.seconds > 0 else 0.0
        if message.cancelled:
            await self.main.chat.add_line(f"stopped loading {name} after {F.count(r.tokens)} tokens")
        else:
            await self.main.chat.add_line(
                f"loaded {name}: {F.count(r.tokens)} tokens in {F.duration(r.seconds)} ({F.rate(tps)})"
            )

    @ui_handler
    async def on_engine_stats(self, message: M.EngineStats) -> None:
        self.last_stats = message
        self.main.dashboard.show_stats(message.heap, message.throughput, message.mlx)
        if message.heap is not None:
            self.settings["policy"] = message.heap.policy
            self.settings["budget_shown"] = f"{F.nbytes(message.heap.budget_bytes)} budget"
            self.last_pillars = {p.position for p in message.heap.pillars}
            self._refresh_title()
        if message.memory is not None:
            self.last_memory = message.memory
            await self._announce_evictions(message.memory)
        self.main.context_bar.show(message.heap, message.memory)
        if isinstance(self.screen, RemembersScreen):
            self.screen.show(message.memory, self.last_pillars)
        if message.report:
            await self.main.chat.add_line(self.stats_summary(message), "help")

    async def _announce_evictions(self, memory: MemoryMap) -> None:
        """A line when eviction first touches a loaded document, and as it passes each milestone."""
        for span in memory.spans:
            if span.kind != "document":
                continue
            last = self._announced.get(span.start, 0.0)
            gone = span.evicted
            passed = [m for m in MILESTONES if last < m <= gone]
            if (last == 0.0 and gone > 0) or passed:
                first = last == 0.0
                self._announced[span.start] = max(passed) if passed else 1e-9
                hint = " (each layer and KV head has dropped that share of it, on average; F5 shows which)" if first else ""
                await self.main.chat.add_line(f"{span.source}: {gone:.0%} of its tokens evicted{hint}")

    @ui_handler
    async def on_engine_notice(self, message: M.EngineNotice) -> None:
        await self.main.chat.add_line(message.text)

    @ui_handler
    async def on_engine_error(self, message: M.EngineError) -> None:
        await self.main.chat.add_error(message.text)

    @ui_handler
    def on_model_progress(self, message: M.ModelProgress) -> None:
        bar = self.main.download_bar
        if message.done:
            bar.finish()
        else:
            bar.show(message.model, message.fraction, message.text)

    @ui_handler
    def on_drift_update(self, message: M.DriftUpdate) -> None:
        self.main.dashboard.query_one("DriftPanel").show(message)

    @ui_handler
    def on_conversation_named(self, message: M.ConversationNamed) -> None:
        self.conversation = message.name
        self.main.context_bar.set_conversation(message.name, message.saved_at)
        self._refresh_title()

    @ui_handler
    async def on_conversation_opened(self, message: M.ConversationOpened) -> None:
        chat = self.main.chat
        await chat.clear_messages()
        self._queued.clear()
        self._announced.clear()
        if message.name is None:
            await chat.add_line("new conversation (it is saved after the first message; F3 lists the saved ones)")
        else:
            await chat.add_line(f"resumed session {message.name!r}")
        cost = {}
        if message.memory is not None:
            for span in message.memory.spans:
                cost[span.turn] = cost.get(span.turn, 0) + span.length
            self.last_memory = message.memory
            for span in message.memory.spans:  # what was evicted before is not news
                if span.kind == "document" and span.evicted > 0:
                    self._announced[span.start] = max([m for m in MILESTONES if m <= span.evicted], default=1e-9)
        for index, turn in enumerate(message.transcript):
            role, content = turn.get("role"), str(turn.get("content", ""))
            if role == "user":
                widget = await chat.add_user(content)
                if index in cost:
                    widget.set_meta(cost[index])
            elif role == "assistant":
                reply = await chat.add_reply(content, streaming=False)
                await reply.finish(note=f"{cost[index]:,} tokens" if index in cost else "")
            elif role == "system":
                await chat.add_line(f"system prompt: {content}")
            elif role == "document":
                partial = " (partial)" if turn.get("partial") else ""
                await chat.add_line(f"document {turn.get('source', '')}: {len(content):,} characters{partial}")
        self.conversation = message.name  # only once its turns are on screen: a reader of it sees them
        self._refresh_title()

    @ui_handler
    async def on_session_list(self, message: M.SessionList) -> None:
        if not message.sessions:
            await self.main.chat.add_line("no saved sessions yet: /save NAME creates one")
            return
        rows = [f"{name}  ({time.strftime('%Y-%m-%d %H:%M', time.localtime(t))})" for name, t in message.sessions]
        await self.main.chat.add_line("saved sessions (/resume NAME, or F3):\n" + "\n".join(rows), "help")

    # -- helpers ---------------------------------------------------------------------------

    def stats_summary(self, m: M.EngineStats) -> str:
        s = self.last_sample
        lines = []
        h = m.heap
        if h is not None:
            lines.append(
                f"heap {F.nbytes(h.nbytes)} / {F.nbytes(h.budget_bytes)} ({h.policy}) · "
                f"tokens seen {h.tokens_seen:,} kept {h.tokens_kept:,}"
            )
            lines.append(
                f"tiers: sinks {h.sinks:,} · young {h.young:,} · intermediate {h.intermediate:,} · tenured {h.tenured:,}"
                f" · evictions {h.evictions:,} · promotions {h.promotions:,} · compactions {h.compactions:,}"
            )
        if m.throughput is not None:
            lines.append(f"prefill {F.rate(m.throughput.prefill_tps)} · decode {F.rate(m.throughput.decode_tps)}")
        if m.mlx:
            lines.append(
                f"MLX active {F.nbytes(m.mlx.get('active'))} · peak {F.nbytes(m.mlx.get('peak'))} · cache {F.nbytes(m.mlx.get('cache'))}"
            )
        lines.append(
            f"RAM {F.nbytes(s.ram_used)} / {F.nbytes(s.ram_total)} · swap {F.nbytes(s.swap_used)} · "
            f"swap risk {s.swap_risk} · pressure {s.pressure} · thermal {s.thermal}"
        )
        return "\n".join(lines)

    def _refresh_title(self) -> None:
        policy = self.settings.get("policy") or "default policy"
        budget = self.settings.get("budget_shown") or self.settings.get("budget") or "auto budget"
        busy = f" · {BUSY_WORDS.get(self._busy_what, self._busy_what)}…" if self._busy_what and self._busy_what != "stats" else ""
        self.title = f"mlx-kv · {self.conversation}" if self.conversation else "mlx-kv · new conversation"
        self.sub_title = f"{self.model_name} · {policy} · {budget}{busy}"

    def keys_line(self) -> str:
        return ("keys: Enter send · Shift/Alt+Enter or Ctrl+J new line · Esc stop · Ctrl+O load · F3 chats · F4 models"
                " · F5 remembers · F2 dashboard · Ctrl+N new · Ctrl+R regenerate · F1 help · Ctrl+P palette · Ctrl+Q quit")

    def help_bindings(self) -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, str]]]]:
        """Every key of the app and of its screens, for the help screen."""
        keys = [(b.key, b.tooltip or b.description) for b in self.BINDINGS]
        screens = {}
        for title, cls in (("Conversations (F3)", ConversationsScreen), ("Models (F4)", ModelsScreen),
                           ("What the model remembers (F5)", RemembersScreen), ("System prompt (/system)", SystemPromptScreen)):
            screens[title] = [(b.key, b.description) for b in cls.BINDINGS if b.show]
        return keys, screens

    # -- actions (footer and command palette) ---------------------------------------------

    def action_stop(self) -> None:
        if self.engine is not None and self.engine.cancel():
            self.notify("stopping…", timeout=2)

    def action_toggle_dashboard(self) -> None:
        self.main.dashboard.toggle()

    def action_load_prompt(self) -> None:
        box = self.main.input
        box.load_text("/load ")
        box.move_cursor(box.document.end)
        box.focus()

    def action_help(self) -> None:
        keys, screens = self.help_bindings()
        self.push_screen(HelpScreen(keys, screens))

    def action_conversations(self) -> None:
        if not isinstance(self.screen, ConversationsScreen):
            self.push_screen(ConversationsScreen(self.conversation))

    def action_models(self) -> None:
        if not isinstance(self.screen, ModelsScreen):
            self.push_screen(ModelsScreen(self.settings.get("model") or self.model_name, self.prefs.model_folders,
                                          self.model_finder))

    def action_remembers(self) -> None:
        if not isinstance(self.screen, RemembersScreen):
            self.push_screen(RemembersScreen())

    def action_new_conversation(self) -> None:
        self.new_conversation()

    def action_regenerate(self) -> None:
        if self.engine is not None:
            self._note_queue()
            self.engine.submit(Regenerate(self.max_tokens))

    def action_edit_system(self) -> None:
        def done(text: str | None) -> None:
            if text is not None:
                self.engine.submit(SetSystem(text))

        self.push_screen(SystemPromptScreen(self.settings.get("system") or ""), done)

    async def action_stats(self) -> None:
        await self.run_command(C.Command("stats"))

    async def action_clear_chat(self) -> None:
        await self.run_command(C.Command("clear"))

    async def action_export(self) -> None:
        await self.run_command(C.Command("export"))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Stop", "Stop the reply or document load in progress (Esc)", self.action_stop)
        yield SystemCommand("Load a document", "Start a /load command (Ctrl+O)", self.action_load_prompt)
        yield SystemCommand("Conversations", "Saved conversations: open, rename, delete (F3)", self.action_conversations)
        yield SystemCommand("New conversation", "Start a new conversation; the current one is saved (Ctrl+N)",
                            self.action_new_conversation)
        yield SystemCommand("Models", "Pick a model: bundled, converted, GGUF files, the hub cache (F4)", self.action_models)
        yield SystemCommand("What the model remembers", "Each document as the heap holds it now (F5)", self.action_remembers)
        yield SystemCommand("Regenerate", "Answer the last message again (Ctrl+R)", self.action_regenerate)
        yield SystemCommand("Copy last reply", "Copy the last reply to the clipboard (/copy)", lambda: self.copy_last())
        yield SystemCommand("Copy last code block", "Copy the last reply's last code block (/copy code)",
                            lambda: self.copy_last(code=True))
        yield SystemCommand("Export as Markdown", "Write the conversation as a Markdown file (/export)", self.action_export)
        yield SystemCommand("Edit system prompt", "This conversation's system prompt (/system)", self.action_edit_system)
        yield SystemCommand("Toggle dashboard", "Show or hide the memory dashboard (F2)", self.action_toggle_dashboard)
        yield SystemCommand("Heap statistics", "Print heap, memory and throughput numbers (/stats)", self.action_stats)
        yield SystemCommand("Clear conversation", "Forget the conversation and empty the heap (/clear)", self.action_clear_chat)
        yield SystemCommand("Help", "Every key and command (F1)", self.action_help)


BUSY_WORDS = {"chat": "replying", "regenerate": "replying", "ingest": "loading", "switchmodel": "loading model",
              "load": "loading model", "resume": "opening", "save": "saving", "new": "new conversation",
              "export": "exporting"}
DRIFT_NOTES = {
    "on": "on: a sample after each reply once the heap evicts, spaced to stay cheap",
    "off": "off (/drift on or /drift now)",
    "auto": "auto: samples only where a shadow is cheap (/drift on forces it)",
}


def _configure_logging() -> None:
    """Tracebacks go to a log file, never onto the TUI."""
    try:
        log_dir = data_dir() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_dir / "app.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    except OSError:
        pass


def run_app(model: str | None = None, budget: int | str | None = None, policy: str | None = None,
            heap_options: dict[str, Any] | None = None, continue_last: bool = False, resume: str | None = None) -> None:
    """Open the chat app (``mlx-kv chat``).  ``model`` None means the default model;
    ``heap_options`` are further HeapConfig fields (window, sinks, positions, cold_bits, ...);
    ``continue_last`` reopens the most recent conversation, ``resume`` a named one."""
    _configure_logging()
    app = MlxKvApp(model, budget, policy, heap_options=heap_options, continue_last=continue_last, resume=resume)
    app.run()
    # The terminal is restored and the engine thread stopped (saves are atomic).
    # Leave without interpreter finalisation: mlx-lm imported on a non-main
    # thread makes the C++ runtime abort at static destruction ("terminate
    # called without an active exception", exit status 134).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(app.return_code or 0)
