"""The mlx-kv Textual app: chat on the left, the live memory dashboard on the right.

Why this shape (oterm, toolong, posting): one ``App`` with one stylesheet, a
screen, one widget per file, and background work that only talks to the UI by
posting messages.  The engine lives on its own thread (``EngineWorker``);
the system probes run in a Textual thread worker once a second, so neither
model work nor a slow ``sysctl`` ever blocks a keystroke.

This module never imports MLX: the engine is imported on the engine thread.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
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
    EngineWorker,
    Ingest,
    Resume,
    Save,
    SetBudget,
    SetPolicy,
    SetSystem,
    Stats,
)
from app.screens.main import MainScreen
from app.store import SessionStore, data_dir
from app.widgets.chat_input import ChatInput
from app.widgets.reply_message import ReplyMessage
from app.widgets.user_message import UserMessage
from mlx_kv.system import SystemProbe, SystemSample, unknown_sample

log = logging.getLogger(__name__)


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
        Binding("f2", "toggle_dashboard", "Dashboard", tooltip="Show or hide the memory dashboard"),
        Binding("f1", "help", "Help", tooltip="List the slash commands"),
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
    ) -> None:
        super().__init__()
        self.model = model
        self.budget = budget
        self.policy = policy
        self.heap_options = dict(heap_options or {})
        self._session_cls = session_cls
        self._probe = probe or SystemProbe().sample
        self._store = store
        self.probe_interval = probe_interval
        self.max_tokens = max_tokens
        self.engine: EngineWorker | None = None
        self.last_sample: SystemSample = unknown_sample()
        self.last_stats: M.EngineStats | None = None
        self.model_name = "loading…"
        self.settings: dict = {"budget": budget, "policy": policy}
        self._reply: ReplyMessage | None = None
        self._probing = False
        self._busy_what = ""
        self._queued: dict[int, UserMessage] = {}  # sent messages the engine has not taken up yet
        self._next_ident = 0

    # -- lifecycle ---------------------------------------------------------------

    async def on_mount(self) -> None:
        self.main = MainScreen()
        await self.push_screen(self.main)  # composed before any engine message can arrive
        self._refresh_title()
        self.engine = EngineWorker(
            self.post_message, self._session_cls, store=self._store, max_tokens=self.max_tokens
        )
        self.engine.start(self.model, self.budget, self.policy, self.heap_options)
        self.set_interval(self.probe_interval, self._tick)
        self._tick()

    def on_unmount(self) -> None:
        if self.engine is not None:
            self.engine.stop(timeout=1.0)

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
            await self.action_help()
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
            self.engine.submit(SetSystem(str(arg)))
        elif name == "clear":
            await chat.clear_messages()
            self.engine.submit(Clear())
        elif name == "stats":
            self.engine.submit(Stats(report=True))
        elif name == "save":
            self.engine.submit(Save(str(arg)))
        elif name == "resume":
            self.engine.submit(Resume(None if arg is None else str(arg)))

    def _note_queue(self) -> None:
        if self.engine is not None and self.engine.busy and self._busy_what not in ("", "stats"):
            self.notify("The engine is busy; your request is queued (Esc stops the current one).")

    # -- engine messages ----------------------------------------------------------------

    @ui_handler
    async def on_engine_ready(self, message: M.EngineReady) -> None:
        if self.model_name == "loading…":
            await self.main.chat.add_line(f"ready: {message.model_name}  (/help lists commands, Esc stops a reply)")
        self.model_name = message.model_name
        self.settings.update(message.settings)
        self._refresh_title()

    @ui_handler
    def on_engine_busy(self, message: M.EngineBusy) -> None:
        self._busy_what = message.what if message.busy else ""
        self._refresh_title()

    @ui_handler
    async def on_reply_started(self, message: M.ReplyStarted) -> None:
        # A message sent while something else ran (a /load) is shown where the
        # engine took it up: after that work's own lines, right above its reply.
        widget = self._queued.pop(message.ident, None)
        if widget is not None and widget.is_attached:
            self.main.chat.move_to_end(widget)
            widget.remove_class("queued")
        self._reply = await self.main.chat.add_reply()

    @ui_handler
    async def on_reply_chunk(self, message: M.ReplyChunk) -> None:
        if self._reply is None:
            self._reply = await self.main.chat.add_reply()
        await self._reply.add(message.text)

    @ui_handler
    async def on_reply_done(self, message: M.ReplyDone) -> None:
        reply, self._reply = self._reply, None
        if reply is None:
            return
        tps = message.pieces / message.seconds if message.seconds > 0 else 0.0
        note = f"{message.pieces} pieces · {F.rate(tps)}"
        await reply.finish(cancelled=message.cancelled, note=note)
        if message.cancelled:
            await self.main.chat.add_line(f"reply stopped after {message.pieces} pieces (kept in the transcript)")

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
            self._refresh_title()
        if message.report:
            await self.main.chat.add_line(self.stats_summary(message), "help")

    @ui_handler
    async def on_engine_notice(self, message: M.EngineNotice) -> None:
        await self.main.chat.add_line(message.text)

    @ui_handler
    async def on_engine_error(self, message: M.EngineError) -> None:
        await self.main.chat.add_error(message.text)

    @ui_handler
    async def on_session_resumed(self, message: M.SessionResumed) -> None:
        chat = self.main.chat
        await chat.clear_messages()
        await chat.add_line(f"resumed session {message.name!r}")
        for turn in message.transcript:
            role, content = turn.get("role"), str(turn.get("content", ""))
            if role == "user":
                await chat.add_user(content)
            elif role == "assistant":
                reply = await chat.add_reply(content, streaming=False)
                await reply.finish()
            elif role == "system":
                await chat.add_line(f"system prompt: {content}")
            elif role == "document":
                partial = " (partial)" if turn.get("partial") else ""
                await chat.add_line(f"document {turn.get('source', '')}: {len(content):,} characters{partial}")

    @ui_handler
    async def on_session_list(self, message: M.SessionList) -> None:
        if not message.sessions:
            await self.main.chat.add_line("no saved sessions yet: /save NAME creates one")
            return
        import time as _time

        rows = [f"{name}  ({_time.strftime('%Y-%m-%d %H:%M', _time.localtime(t))})" for name, t in message.sessions]
        await self.main.chat.add_line("saved sessions (/resume NAME):\n" + "\n".join(rows), "help")

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
        busy = f" · {self._busy_what}…" if self._busy_what and self._busy_what != "stats" else ""
        self.sub_title = f"{self.model_name} · {policy} · {budget}{busy}"

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

    async def action_help(self) -> None:
        keys = "keys: Enter send · Shift/Alt+Enter or Ctrl+J new line · Esc stop · Ctrl+O load · F2 dashboard · Ctrl+P palette · Ctrl+Q quit"
        await self.main.chat.add_line("\n".join(C.help_lines() + [keys]), "help")

    async def action_stats(self) -> None:
        await self.run_command(C.Command("stats"))

    async def action_clear_chat(self) -> None:
        await self.run_command(C.Command("clear"))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Stop", "Stop the reply or document load in progress (Esc)", self.action_stop)
        yield SystemCommand("Load a document", "Start a /load command (Ctrl+O)", self.action_load_prompt)
        yield SystemCommand("Toggle dashboard", "Show or hide the memory dashboard (F2)", self.action_toggle_dashboard)
        yield SystemCommand("Heap statistics", "Print heap, memory and throughput numbers (/stats)", self.action_stats)
        yield SystemCommand("Clear conversation", "Forget the conversation and empty the heap (/clear)", self.action_clear_chat)
        yield SystemCommand("Slash commands", "List the slash commands (F1)", self.action_help)


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
            heap_options: dict[str, Any] | None = None) -> None:
    """Open the chat app (``mlx-kv chat``).  ``model`` None means the default model;
    ``heap_options`` are further HeapConfig fields (window, sinks, positions, cold_bits, ...)."""
    _configure_logging()
    app = MlxKvApp(model, budget, policy, heap_options=heap_options)
    app.run()
    # The terminal is restored and the engine thread stopped (saves are atomic).
    # Leave without interpreter finalisation: mlx-lm imported on a non-main
    # thread makes the C++ runtime abort at static destruction ("terminate
    # called without an active exception", exit status 134).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(app.return_code or 0)
