"""The one thread that owns the engine.

Why one thread: since mlx 0.31.2 MLX streams are thread-local, so loading the
model, prefilling, generating and evicting must all run on the same thread.
The UI never calls the session; it puts requests on a queue and receives
Textual messages (``app.messages``) back through a thread-safe ``post``.

Cancellation: Esc sets a ``threading.Event`` that the session's ``chat`` and
``ingest`` check between steps; the worker also stops pulling pieces from the
generator and closes it on this thread, so the engine can leave the session
consistent.

Conversations: the worker owns the current conversation's name and saves it
(transcript, settings and heap snapshot, through ``app.store``, atomically)
after every request that changed it, once nothing else waits in the queue,
and before it stops, so a closed terminal loses at most the request that was
running. The first save names it after its first message or document.

Live drift: when the session has evicted something, the worker compares the
heap's next-token distribution with a full-cache shadow (``Session.drift``)
after a reply or a load, only while the queue is empty, and spaces samples so
that shadows take at most ``DRIFT_DUTY`` of the time; in "auto" mode it
samples only where a shadow is cheap.

The worker codes against ``mlx_kv.protocol.ChatSession``, which the real
``Session`` and ``app.fake_engine.FakeSession`` both implement, so tests drive
it with the fake.  With ``session_cls=None`` it imports ``mlx_kv.engine`` on
the engine thread, which keeps MLX out of the UI process until the thread
starts.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from textual.message import Message

from app import messages as M
from app.export import conversation_markdown
from app.store import SaveConflict, SessionStore
from mlx_kv.errors import UserError
from mlx_kv.events import DownloadNote
from mlx_kv.protocol import ChatSession

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # never write tracebacks onto the TUI

DRIFT_WINDOW = 1024  # tokens a shadow re-reads at most
DRIFT_AUTO_SECONDS = 2.0  # "auto" samples only when a shadow should take at most this
DRIFT_DUTY = 0.05  # shadows take at most this share of the time
DRIFT_MIN_GAP = 20.0  # seconds between samples, however cheap
REGENERATE_TEMPERATURE = 0.8  # greedy decoding would only repeat itself


# -- requests -------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    model: str | None = None
    budget: int | str | None = None
    policy: str | None = None
    options: tuple[tuple[str, Any], ...] = ()  # further HeapConfig fields (window, cold_bits, ...)


@dataclass(frozen=True)
class Chat:
    text: str
    max_tokens: int = 512
    ident: int = 0  # the UI's handle on the message widget, echoed in ReplyStarted


@dataclass(frozen=True)
class Regenerate:
    max_tokens: int = 512


@dataclass(frozen=True)
class Ingest:
    path: str


@dataclass(frozen=True)
class SetBudget:
    budget: int | str


@dataclass(frozen=True)
class SetPolicy:
    policy: str


@dataclass(frozen=True)
class SetSystem:
    text: str


@dataclass(frozen=True)
class SetOverflow:
    mode: str


@dataclass(frozen=True)
class SetTemperature:
    temperature: float


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class Stats:
    report: bool = False  # True: the user asked (/stats), print it in the chat


@dataclass(frozen=True)
class Save:
    """Save now under `name`; the conversation is called `name` from then on."""

    name: str


@dataclass(frozen=True)
class Resume:
    """Open a saved conversation (None: list them in the chat)."""

    name: str | None


@dataclass(frozen=True)
class New:
    save: bool = True  # save the current conversation first (False once it was deleted)


@dataclass(frozen=True)
class Rename:
    name: str


@dataclass(frozen=True)
class SwitchModel:
    """Load another model into a new conversation (the current one is saved first)."""

    model: str


@dataclass(frozen=True)
class Export:
    path: str | None = None


@dataclass(frozen=True)
class Drift:
    """Take a drift sample now, whatever the schedule says."""


@dataclass(frozen=True)
class Autosave:
    pass


@dataclass(frozen=True)
class Shutdown:
    pass


Request = (Load | Chat | Regenerate | Ingest | SetBudget | SetPolicy | SetSystem | SetOverflow | SetTemperature
           | Clear | Stats | Save | Resume | New | Rename | SwitchModel | Export | Drift | Autosave | Shutdown)
CHANGES = (Chat, Regenerate, Ingest, SetBudget, SetPolicy, SetSystem, SetOverflow, SetTemperature, Clear)
STREAMS = (Chat, Regenerate, Ingest)
QUIET = (Stats, Autosave, Drift)  # background work: not announced as busy in the title


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _default_session_cls() -> type[ChatSession]:
    from mlx_kv.engine import Session  # imported on the engine thread only

    return Session


def count_messages(transcript: list[dict]) -> int:
    """Messages and replies, as the conversations list counts them (documents apart)."""
    return sum(1 for t in transcript if t.get("role") in ("user", "assistant"))


def what_it_holds(transcript: list[dict]) -> str:
    """'2 messages, 1 document': the save notice counts what the list shows."""
    messages = count_messages(transcript)
    documents = sum(1 for t in transcript if t.get("role") == "document")
    text = f"{messages} message{'s' * (messages != 1)}"
    if documents:
        text += f", {documents} document{'s' * (documents != 1)}"
    return text


def slug(text: str, limit: int = 40) -> str:
    """A session name from free text: lowercase words joined by '-' (what commands.NAME_RE accepts)."""
    words = re.findall(r"[A-Za-z0-9]+", text.lower())
    name = ""
    for word in words:
        if len(name) + len(word) + 1 > limit:
            break
        name = f"{name}-{word}" if name else word
    return name or time.strftime("chat-%Y%m%d-%H%M%S")


class EngineWorker:
    """Runs requests one at a time on a dedicated thread and posts messages back."""

    def __init__(
        self,
        post: Callable[[Message], Any],
        session_cls: type[ChatSession] | None = None,
        *,
        store: SessionStore | None = None,
        stats_interval: float = 0.5,
        flush_interval: float = 0.03,
        progress_interval: float = 0.1,
        max_tokens: int = 512,
        autosave: bool = True,
        drift: str = "auto",
        exports: str | os.PathLike | None = None,
    ) -> None:
        self.post = post
        self._session_cls = session_cls
        self.store = store
        self.stats_interval = stats_interval
        self.flush_interval = flush_interval
        self.progress_interval = progress_interval
        self.max_tokens = max_tokens
        self.autosave = autosave
        self.drift_mode = drift
        self.exports = Path(exports) if exports is not None else None
        self.session: ChatSession | None = None
        self.settings: dict = {"model": None, "budget": None, "policy": None, "system": None}
        self.name: str | None = None  # the current conversation's name in the store (None: not saved yet)
        self.dirty = False  # changed since it was last saved
        self.store_lock = threading.Lock()  # the engine's saves and the UI's renames and deletes take turns
        self.watch: tuple[int, ...] = ()  # spans the remembers view shows: their per-token detail rides on stats
        self.cancel_event = threading.Event()
        self._queue: queue.Queue[Request] = queue.Queue()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlx-kv-engine", daemon=True)
        self._sample: Any | None = None
        self._current: Request | None = None
        self._drift_next = 0.0  # monotonic time before which no scheduled sample is taken
        self._drift_due = False  # a reply or a load since the last sample
        self._resume_first: str | None = None
        self._revisions: dict[str, int] = {}  # per saved name, the revision this instance last read or wrote
        self._conflicted: str | None = None  # the name whose autosave lost to another instance (told once)

    # -- UI side -----------------------------------------------------------------

    def start(self, model: str | None = None, budget: int | str | None = None, policy: str | None = None,
              options: dict[str, Any] | None = None, resume: str | None = None) -> None:
        """Load the model; with `resume`, then open that saved conversation."""
        self._thread.start()
        self.submit(Load(model, budget, policy, tuple(sorted((options or {}).items()))))
        if resume is not None:
            self.submit(Resume(resume))

    def submit(self, request: Request) -> None:
        self._queue.put(request)

    def cancel(self) -> bool:
        """Ask the running chat or ingest to stop. True if something was running."""
        if self._busy.is_set():
            self.cancel_event.set()
            return True
        return False

    @property
    def busy(self) -> bool:
        return self._busy.is_set() or not self._queue.empty()

    def request_stats(self) -> None:
        """Periodic refresh; skipped while busy (the running request posts its own)."""
        if not self.busy and self.session is not None:
            self.submit(Stats())

    def observe(self, sample: Any) -> None:
        """Hand the latest system probe sample to the engine (memory guard).

        At the next stats point (between decode steps or prefill chunks, or
        on the idle refresh) the sample goes, on the engine thread, to the
        session's hook ``observe_system(sample) -> str | None`` (the session
        owns its memory guard).  A returned event ("memory guard: tighten
        heap to ... (memory pressure warn)") is shown in the chat and logged;
        the dashboard shows the new budget with the next stats.
        """
        self._sample = sample

    def stop(self, timeout: float = 2.0, save_timeout: float = 30.0) -> None:
        """Cancel what runs, save the conversation if it changed, and wait for the thread."""
        self.cancel_event.set()
        self.submit(Shutdown())
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            saving = self.dirty or isinstance(self._current, (Save, Autosave, *CHANGES))
            self._thread.join(save_timeout if saving else timeout)

    # -- conversations, from the UI thread (a background worker there) ------------

    def rename_saved(self, old: str, new: str) -> None:
        """Rename a saved conversation; the current one keeps being saved under its new name."""
        with self.store_lock:
            # the conversation on screen is renamed only if no other instance saved it since we read it
            current = self.name == old
            revision = self._store().rename(old, new, self._revisions.get(old) if current else None)
            self._revisions.pop(old, None)
            if current:
                self.name = new
                self._revisions[new] = revision
        if self.name == new:
            self.post(M.ConversationNamed(new))

    def delete_saved(self, name: str) -> bool:
        """Delete a saved conversation; True when it was the current one (which then must not be saved again)."""
        with self.store_lock:
            self._store().delete(name)
            self._revisions.pop(name, None)
            current = self.name == name
            if current:
                self.name, self.dirty = None, False
        return current

    # -- engine thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            request = self._queue.get()
            if isinstance(request, Shutdown):
                if self.dirty and self.autosave:
                    self._serve(Autosave())
                return
            self._serve(request)
            if self._queue.empty() and self.dirty and self.autosave:
                self._serve(Autosave())
            if self._queue.empty() and self._drift_due:
                self._serve(_ScheduledDrift())

    def _serve(self, request: Request) -> None:
        self.cancel_event.clear()
        self._current = request
        self._busy.set()
        what = type(request).__name__.lower()
        quiet = isinstance(request, (*QUIET, _ScheduledDrift))
        if not quiet:
            self.post(M.EngineBusy(True, what))
        try:
            self._handle(request)
            self.dirty = self.dirty or isinstance(request, CHANGES)
        except UserError as e:
            self.post(M.EngineError(_one_line(str(e))))
        except Exception as e:  # noqa: BLE001 - a bug must not kill the engine thread
            log.exception("engine request %r failed", request)
            self.post(M.EngineError(_one_line(f"engine error ({type(e).__name__}): {e}")))
        finally:
            if isinstance(request, STREAMS) and self.session is not None:
                self.dirty = True  # a stopped or failed reply or load may have changed the transcript
            self._current = None
            self._busy.clear()
            if not quiet:
                self.post(M.EngineBusy(False, what))

    def _handle(self, request: Request) -> None:
        if isinstance(request, Load):
            self._load(request)
        elif isinstance(request, Resume):
            self._resume(request)
        elif isinstance(request, SwitchModel):
            self._switch_model(request)
        elif isinstance(request, Stats):
            if self.session is not None:
                self._post_stats(report=request.report)
            elif request.report:
                raise UserError("no model loaded yet")
        elif isinstance(request, Autosave):
            self._autosave(background=True)
        elif isinstance(request, (Drift, _ScheduledDrift)):
            self._drift(forced=isinstance(request, Drift))
        else:
            session = self._require()
            if isinstance(request, Chat):
                temperature = float(self.settings.get("temperature") or 0.0)
                gen = session.chat(request.text, max_tokens=request.max_tokens or self.max_tokens,
                                   cancel=self.cancel_event, temperature=temperature)
                self._stream(session, gen, M.ReplyStarted(request.text, request.ident))
            elif isinstance(request, Regenerate):
                temperature = float(self.settings.get("temperature") or 0.0) or REGENERATE_TEMPERATURE
                gen = session.regenerate(max_tokens=request.max_tokens or self.max_tokens,
                                         cancel=self.cancel_event, temperature=temperature)
                self._stream(session, gen, M.ReplyStarted("", 0, regenerated=True))
            elif isinstance(request, Ingest):
                self._ingest(session, request)
            elif isinstance(request, SetBudget):
                session.set_budget(request.budget)
                self.settings["budget"] = request.budget
                self.post(M.EngineNotice(f"budget set to {request.budget}"))
                self._post_stats()
            elif isinstance(request, SetPolicy):
                session.set_policy(request.policy)
                self.settings.update(policy=request.policy, overflow=session.overflow)
                self.post(M.EngineNotice(f"policy set to {request.policy}"))
                self._post_stats()
            elif isinstance(request, SetSystem):
                session.set_system(request.text)
                self.settings["system"] = request.text or None
                self.post(M.EngineNotice("system prompt set" if request.text.strip() else "system prompt cleared"))
                self.post(M.EngineReady(session.model_name or "model", dict(self.settings)))
            elif isinstance(request, SetOverflow):
                session.set_overflow(request.mode)
                self.settings["overflow"] = request.mode
                self.post(M.EngineNotice(OVERFLOW_NOTES[request.mode]))
                self.post(M.EngineReady(session.model_name or "model", dict(self.settings)))
                self._post_stats()
            elif isinstance(request, SetTemperature):
                self.settings["temperature"] = request.temperature
                self.post(M.EngineNotice(f"temperature set to {request.temperature:g}"
                                         + (" (greedy)" if request.temperature == 0 else "")))
            elif isinstance(request, Clear):
                session.clear()
                self.post(M.EngineNotice("conversation cleared, heap emptied"))
                self._post_stats()
            elif isinstance(request, Save):
                self._save_as(session, request.name)
            elif isinstance(request, New):
                self._new(session, request)
            elif isinstance(request, Rename):
                self._rename(request.name)
            elif isinstance(request, Export):
                self._export(session, request)

    def _session_class(self) -> type[ChatSession]:
        if self._session_cls is None:
            self._session_cls = _default_session_cls()
        return self._session_cls

    def _require(self) -> ChatSession:
        if self.session is None:
            raise UserError("no model loaded: fix the error above, then open a conversation, pick a model or restart")
        return self.session

    def _ready(self) -> None:
        name = self.session.model_name or "model"
        self.post(M.EngineReady(name, dict(self.settings)))
        self._post_stats()

    def _load(self, req: Load) -> None:
        self.post(M.EngineNotice(f"loading {req.model or 'the default model'}…"))
        options = dict(req.options)
        self.session = self._load_session(req.model, req.budget, req.policy, options)
        self.settings.update(model=req.model, budget=req.budget, policy=req.policy, options=options)
        self._ready()

    def _load_session(self, model: str | None, budget: Any, policy: str | None, options: dict) -> ChatSession:
        """Load behind a download bar: hub downloads report DownloadNotes, drawn as a progress bar."""
        label = model or "the default model"
        self.post(M.ModelProgress(label, None, f"loading {label}"))
        try:
            return self._session_class().load(model=model, budget=budget, policy=policy,
                                              progress=self._note, **options)
        finally:
            self.post(M.ModelProgress(label, 1.0, done=True))

    def _note(self, text: str) -> None:
        """A session's loading note: a download's progress goes to the bar, the rest into the chat."""
        if isinstance(text, DownloadNote):
            self.post(M.ModelProgress(text.source, text.fraction, str(text)))
            if text.fraction not in (0.0, 1.0):
                return
        self.post(M.EngineNotice(_one_line(str(text))))

    def _stream(self, session: ChatSession, gen: Iterator[str], started: M.ReplyStarted) -> None:
        """Post a reply as it streams; what it cost (tokens) comes with ReplyDone."""
        self.post(started)
        start = last_flush = last_stats = time.monotonic()
        pieces = 0
        pending: list[str] = []
        error: BaseException | None = None
        try:
            for piece in gen:
                pieces += 1
                pending.append(piece)
                now = time.monotonic()
                if now - last_flush >= self.flush_interval:
                    self.post(M.ReplyChunk("".join(pending)))
                    pending.clear()
                    last_flush = now
                if now - last_stats >= self.stats_interval:
                    self._post_stats()
                    last_stats = now
                if self.cancel_event.is_set():
                    break
        except BaseException as e:  # noqa: BLE001 - reported after the reply is closed
            error = e
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                try:
                    close()  # lets the engine finish its bookkeeping on this thread
                except Exception:  # noqa: BLE001
                    log.exception("closing the generator failed")
            if pending:
                self.post(M.ReplyChunk("".join(pending)))
            asked, answered, note = self._turn_cost(session, error)
            self.post(M.ReplyDone(self.cancel_event.is_set() or error is not None, pieces, time.monotonic() - start,
                                  asked, answered, note, error=_one_line(str(error)) if error is not None else ""))
            self._drift_due = True
            self._post_stats()
        if error is not None:
            raise error

    def _turn_cost(self, session: ChatSession, error: BaseException | None) -> tuple[int | None, int | None, str]:
        """The last message's and reply's tokens, and why the reply ended early (the budget, in stop mode)."""
        if error is not None:
            return None, None, ""
        try:
            spans = session.memory_map().spans
            heap = session.heap_stats()
        except Exception:  # noqa: BLE001 - counters must not fail a reply
            log.exception("reading the turn's cost failed")
            return None, None, ""
        asked = next((s.length for s in reversed(spans) if s.kind == "user"), None)
        answered = spans[-1].length if spans and spans[-1].kind == "assistant" else 0
        full = session.overflow == "stop" and heap.tokens_seen >= heap.budget_tokens
        return asked, answered, "the context is full (overflow: stop)" if full else ""

    def _ingest(self, session: ChatSession, req: Ingest) -> None:
        self.post(M.IngestStarted(req.path))
        last = [0.0, time.monotonic()]  # last progress post, last stats post

        def progress(p: Any) -> None:
            now = time.monotonic()
            final = p.tokens_total and p.tokens_done >= p.tokens_total
            if final or now - last[0] >= self.progress_interval:
                self.post(M.IngestProgressed(p))
                last[0] = now
            if now - last[1] >= self.stats_interval:
                self._post_stats()
                last[1] = now

        try:
            result = session.ingest(req.path, progress=progress, cancel=self.cancel_event)
        except BaseException:
            self.post(M.IngestDone(req.path, None, self.cancel_event.is_set()))
            self._post_stats()
            raise
        self.post(M.IngestDone(req.path, result, self.cancel_event.is_set()))
        self._drift_due = True
        self._post_stats()

    def _post_stats(self, report: bool = False) -> None:
        session = self.session
        if session is None:
            return
        self._guard(session)
        heap = throughput = mlx = memory = None
        try:
            heap = session.heap_stats()
        except Exception:  # noqa: BLE001 - a dashboard refresh must not fail a request
            log.exception("heap_stats failed")
        try:
            throughput = session.throughput()
        except Exception:  # noqa: BLE001
            log.exception("throughput failed")
        try:
            mlx = session.mlx_memory()
        except Exception:  # noqa: BLE001
            log.exception("mlx_memory failed")
        try:
            memory = session.memory_map(self.watch)
        except Exception:  # noqa: BLE001
            log.exception("memory_map failed")
        self.post(M.EngineStats(heap, throughput, mlx, report=report, memory=memory))

    def _guard(self, session: ChatSession) -> None:
        sample, self._sample = self._sample, None
        if sample is None:
            return
        try:
            note = session.observe_system(sample)
        except UserError as e:
            note = str(e)
        except Exception:  # noqa: BLE001 - the guard must not fail a request
            log.exception("observe_system failed")
            return
        if note:
            log.info("memory guard: %s", note)
            self.post(M.EngineNotice(_one_line(note)))

    # -- drift ---------------------------------------------------------------------------

    def _drift(self, forced: bool) -> None:
        """One shadow comparison, unless the schedule or the mode says no (then say why)."""
        self._drift_due = False
        session = self.session
        if session is None:
            return
        if self.drift_mode == "off" and not forced:
            return
        heap = session.heap_stats()
        if heap.tokens_seen <= heap.tokens_kept or heap.evictions == 0:
            self.post(M.DriftUpdate(self.drift_mode, note="nothing evicted yet: the heap is the full cache"))
            return
        now = time.monotonic()
        if not forced and now < self._drift_next:
            return
        window = min(heap.tokens_seen, DRIFT_WINDOW)
        tps = session.throughput().prefill_tps
        estimate = window / tps if tps > 0 else math.inf
        if self.drift_mode == "auto" and not forced and estimate > DRIFT_AUTO_SECONDS:
            self.post(M.DriftUpdate(self.drift_mode, note=(
                f"auto: off here (a {window:,}-token shadow would take ~{_seconds(estimate)}); /drift on or /drift now")))
            return
        result = session.drift(window)
        seconds = float(result.get("seconds", 0.0))
        gap = max(DRIFT_MIN_GAP, seconds * (1 / DRIFT_DUTY - 1))
        self._drift_next = time.monotonic() + gap
        self.post(M.DriftUpdate(self.drift_mode, float(result["kl"]), float(result["top1_agree"]),
                                int(result["tokens"]), seconds, bool(result["exact"]), gap))

    # -- conversations ----------------------------------------------------------------------

    def _store(self) -> SessionStore:
        if self.store is None:
            self.store = SessionStore()
        return self.store

    def _summary(self, session: ChatSession) -> dict:
        """Settings plus what the conversations list shows (tokens read, messages)."""
        try:
            tokens = session.heap_stats().tokens_seen
        except Exception:  # noqa: BLE001
            tokens = None
        messages = count_messages(session.transcript)
        return {**self.settings, "overflow": session.overflow, "tokens": tokens, "messages": messages}

    def _write(self, session: ChatSession, name: str) -> Any:
        """Every save (autosave, /save) goes through here: another instance that
        saved `name` since this one read it wins, and this one is told (SaveConflict)."""
        with self.store_lock:
            saved = self._store().save(name, list(session.transcript), self._summary(session),
                                       model=session.model_name, snapshot=session.save,
                                       expected_revision=self._revisions.get(name))
            self._revisions[name] = saved.revision
        self.dirty = False
        if self._conflicted == name:
            self._conflicted = None
        return saved

    def _autosave(self, background: bool = False) -> None:
        """Save the current conversation if it changed. A background autosave
        that lost to another instance says so once, not after every request;
        leaving the conversation (new, resume, another model) tries again and
        stops there, so the user can /save NEW-NAME first."""
        session = self.session
        if session is None or not self.dirty:
            return
        if background and self.name is not None and self._conflicted == self.name:
            return
        if self.name is None:
            if not session.transcript:
                self.dirty = False  # nothing worth a row yet
                return
            self.name = self._fresh_name(session)
        try:
            saved = self._write(session, self.name)
        except SaveConflict:
            self._conflicted = self.name
            raise
        self.post(M.ConversationNamed(self.name, saved.updated))

    def _fresh_name(self, session: ChatSession) -> str:
        """After the first message or document, unique among the saved ones."""
        first = next((t for t in session.transcript if t.get("role") in ("user", "document")), {})
        base = slug(first.get("source") or first.get("content") or "")
        taken = {s for s, _ in self._store().list()}
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        return name

    def _save_as(self, session: ChatSession, name: str) -> None:
        old = self.name
        saved = self._write(session, name)
        self.name = name
        kept = False
        if old and old != name:
            with self.store_lock:
                # the same conversation, saved earlier under its old name; unless another instance saved over it since
                store = self._store()
                kept = not store.delete(old, self._revisions.get(old)) and old in self._revisions and store._has(old)
                self._revisions.pop(old, None)
        self.post(M.EngineNotice(f"saved session {name!r} ({what_it_holds(saved.transcript)})"))
        if kept:
            self.post(M.EngineNotice(f"session {old!r} was left as it is: another mlx-kv instance saved it since"))
        self.post(M.ConversationNamed(name, saved.updated))

    def _rename(self, name: str) -> None:
        if self.name is not None:
            self.rename_saved(self.name, name)
        else:
            if name in {s for s, _ in self._store().list()}:
                raise UserError(f"a saved session is already named {name!r}")
            self.name = name
            self.dirty = True
            self.post(M.ConversationNamed(name))
        self.post(M.EngineNotice(f"conversation renamed to {name!r}"))

    def _opened(self, transcript: list[dict]) -> None:
        """Tell the UI which conversation is on screen now, with what each turn cost."""
        memory = None
        try:
            memory = self.session.memory_map()
        except Exception:  # noqa: BLE001
            log.exception("memory_map failed")
        self.post(M.ConversationOpened(self.name, list(transcript), memory))
        self.post(M.ConversationNamed(self.name))

    def _new(self, session: ChatSession, req: New) -> None:
        if req.save and self.dirty and self.autosave:
            self._autosave()
        session.clear()
        session.set_system("")
        if session.overflow != "heap":
            session.set_overflow("heap")
        self.settings.update(system=None, overflow="heap", temperature=0.0)
        self.name, self.dirty = None, False
        self._ready()
        self._opened([])

    def _switch_model(self, req: SwitchModel) -> None:
        if self.dirty and self.autosave:
            self._autosave()
        options = dict(self.settings.get("options") or {})
        session = self._load_session(req.model, self.settings.get("budget"), self.settings.get("policy"), options)
        self.session = session  # the old session is released only once the new one is up
        self.settings.update(model=req.model, system=None, overflow="heap", temperature=0.0)
        self.name, self.dirty = None, False
        self._ready()
        self._opened([])
        self.post(M.EngineNotice(f"model {session.model_name} is ready: this is a new conversation on it"))

    def _resume(self, req: Resume) -> None:
        store = self._store()
        if req.name is None:
            self.post(M.SessionList(store.list()))
            return
        if self.dirty and self.autosave and req.name != self.name:
            self._autosave()  # the conversation being left is kept
        cls = self._session_class()
        # a snapshot replaced by another instance's save between the row and the file: the newer save is read
        saved, session = store.restore(req.name, lambda path: cls.restore(path, progress=self._note))
        settings = {**self.settings, **saved.settings}
        for key in ("tokens", "messages"):
            settings.pop(key, None)
        if session is None:
            session = cls.load(model=settings.get("model"), budget=settings.get("budget"), policy=settings.get("policy"),
                               progress=self._note, **(settings.get("options") or {}))
            if settings.get("system"):
                session.set_system(settings["system"])
        if settings.get("overflow") and settings["overflow"] != session.overflow:
            session.set_overflow(settings["overflow"])
        self.session = session  # the old session is released only once the new one is up
        self.settings = settings
        self.name, self.dirty = req.name, False
        self._revisions[req.name] = saved.revision
        if self._conflicted == req.name:
            self._conflicted = None  # theirs is on screen now
        self._ready()
        self._opened(saved.transcript)

    def _export(self, session: ChatSession, req: Export) -> None:
        name = self.name or "conversation"
        if req.path:
            target = Path(req.path).expanduser()
        else:
            folder = self.exports or (self._store().root / "exports")
            target = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.md"
        if target.exists():
            raise UserError(f"export: {target} exists already; give another file name")
        try:
            memory = session.memory_map()
        except Exception:  # noqa: BLE001
            memory = None
        text = conversation_markdown(name, session.transcript, session.model_name, self.settings, memory)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".md")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, target)
        except OSError as e:
            raise UserError(f"export: cannot write {target}: {e.strerror or e}") from None
        turns = sum(1 for t in session.transcript if t.get("role") in ("user", "assistant"))
        self.post(M.EngineNotice(f"exported {turns} messages to {target}"))


@dataclass(frozen=True)
class _ScheduledDrift:
    """A drift sample the schedule may decline (queued by the worker itself after a reply or a load)."""


OVERFLOW_NOTES = {
    "heap": "overflow: heap (the policy picks what the heap keeps when it is full)",
    "stop": "overflow: stop (input that would make the heap evict is refused)",
    "rolling": "overflow: rolling window (the sinks and the newest tokens; the streaming policy)",
}


def _seconds(s: float) -> str:
    if s == math.inf:
        return "? s (no prefill measured yet)"
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
