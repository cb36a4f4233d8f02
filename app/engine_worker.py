"""The one thread that owns the engine.

Why one thread: since mlx 0.31.2 MLX streams are thread-local, so loading the
model, prefilling, generating and evicting must all run on the same thread.
The UI never calls the session; it puts requests on a queue and receives
Textual messages (``app.messages``) back through a thread-safe ``post``.

Cancellation: Esc sets a ``threading.Event`` that the session's ``chat`` and
``ingest`` check between steps; the worker also stops pulling pieces from the
generator and closes it on this thread, so the engine can leave the session
consistent.

The worker codes against ``mlx_kv.protocol.ChatSession`` (load/restore,
chat, ingest, the settings, stats and the memory-guard hook), which the real
``Session`` and ``app.fake_engine.FakeSession`` both implement, so tests drive
it with the fake.  With ``session_cls=None`` it imports ``mlx_kv.engine`` on
the engine thread, which keeps MLX out of the UI process until the thread
starts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from textual.message import Message

from app import messages as M
from app.store import SessionStore
from mlx_kv.errors import UserError
from mlx_kv.protocol import ChatSession

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # never write tracebacks onto the TUI


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
class Clear:
    pass


@dataclass(frozen=True)
class Stats:
    report: bool = False  # True: the user asked (/stats), print it in the chat


@dataclass(frozen=True)
class Save:
    name: str


@dataclass(frozen=True)
class Resume:
    name: str | None


@dataclass(frozen=True)
class Shutdown:
    pass


Request = Load | Chat | Ingest | SetBudget | SetPolicy | SetSystem | Clear | Stats | Save | Resume | Shutdown


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _default_session_cls() -> type[ChatSession]:
    from mlx_kv.engine import Session  # imported on the engine thread only

    return Session


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
    ) -> None:
        self.post = post
        self._session_cls = session_cls
        self.store = store
        self.stats_interval = stats_interval
        self.flush_interval = flush_interval
        self.progress_interval = progress_interval
        self.max_tokens = max_tokens
        self.session: ChatSession | None = None
        self.settings: dict = {"model": None, "budget": None, "policy": None, "system": None}
        self.cancel_event = threading.Event()
        self._queue: queue.Queue[Request] = queue.Queue()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlx-kv-engine", daemon=True)
        self._sample: Any | None = None
        self._current: Request | None = None

    # -- UI side -----------------------------------------------------------------

    def start(self, model: str | None = None, budget: int | str | None = None, policy: str | None = None,
              options: dict[str, Any] | None = None) -> None:
        self._thread.start()
        self.submit(Load(model, budget, policy, tuple(sorted((options or {}).items()))))

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
        """Cancel what runs, and wait for the thread (longer while a save is being written)."""
        self.cancel_event.set()
        self.submit(Shutdown())
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(save_timeout if isinstance(self._current, Save) else timeout)

    # -- engine thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            request = self._queue.get()
            if isinstance(request, Shutdown):
                return
            self.cancel_event.clear()
            self._current = request
            self._busy.set()
            what = type(request).__name__.lower()
            if not isinstance(request, Stats):
                self.post(M.EngineBusy(True, what))
            try:
                self._handle(request)
            except UserError as e:
                self.post(M.EngineError(_one_line(str(e))))
            except Exception as e:  # noqa: BLE001 - a bug must not kill the engine thread
                log.exception("engine request %r failed", request)
                self.post(M.EngineError(_one_line(f"engine error ({type(e).__name__}): {e}")))
            finally:
                self._current = None
                self._busy.clear()
                if not isinstance(request, Stats):
                    self.post(M.EngineBusy(False, what))

    def _handle(self, request: Request) -> None:
        if isinstance(request, Load):
            self._load(request)
        elif isinstance(request, Resume):
            self._resume(request)
        elif isinstance(request, Stats):
            if self.session is not None:
                self._post_stats(report=request.report)
            elif request.report:
                raise UserError("no model loaded yet")
        else:
            session = self._require()
            if isinstance(request, Chat):
                self._chat(session, request)
            elif isinstance(request, Ingest):
                self._ingest(session, request)
            elif isinstance(request, SetBudget):
                session.set_budget(request.budget)
                self.settings["budget"] = request.budget
                self.post(M.EngineNotice(f"budget set to {request.budget}"))
                self._post_stats()
            elif isinstance(request, SetPolicy):
                session.set_policy(request.policy)
                self.settings["policy"] = request.policy
                self.post(M.EngineNotice(f"policy set to {request.policy}"))
                self._post_stats()
            elif isinstance(request, SetSystem):
                session.set_system(request.text)
                self.settings["system"] = request.text
                self.post(M.EngineNotice("system prompt set"))
            elif isinstance(request, Clear):
                session.clear()
                self.post(M.EngineNotice("conversation cleared, heap emptied"))
                self._post_stats()
            elif isinstance(request, Save):
                self._save(session, request)

    def _session_class(self) -> type[ChatSession]:
        if self._session_cls is None:
            self._session_cls = _default_session_cls()
        return self._session_cls

    def _require(self) -> ChatSession:
        if self.session is None:
            raise UserError("no model loaded: fix the error above, then /resume a session or restart")
        return self.session

    def _ready(self) -> None:
        name = self.session.model_name or "model"
        self.post(M.EngineReady(name, dict(self.settings)))
        self._post_stats()

    def _load(self, req: Load) -> None:
        self.post(M.EngineNotice(f"loading {req.model or 'the default model'}…"))
        options = dict(req.options)
        self.session = self._session_class().load(
            model=req.model, budget=req.budget, policy=req.policy,
            progress=self._note,  # hub downloads report what they fetch
            **options)
        self.settings.update(model=req.model, budget=req.budget, policy=req.policy, options=options)
        self._ready()

    def _note(self, text: str) -> None:
        """A session's loading note, as a line in the chat."""
        self.post(M.EngineNotice(_one_line(str(text))))

    def _chat(self, session: ChatSession, req: Chat) -> None:
        self.post(M.ReplyStarted(req.text, req.ident))
        start = last_flush = last_stats = time.monotonic()
        pieces = 0
        pending: list[str] = []
        error: BaseException | None = None
        gen = session.chat(req.text, max_tokens=req.max_tokens or self.max_tokens, cancel=self.cancel_event)
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
            self.post(M.ReplyDone(self.cancel_event.is_set() or error is not None, pieces, time.monotonic() - start))
            self._post_stats()
        if error is not None:
            raise error

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
        self._post_stats()

    def _post_stats(self, report: bool = False) -> None:
        session = self.session
        if session is None:
            return
        self._guard(session)
        heap = throughput = mlx = None
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
        self.post(M.EngineStats(heap, throughput, mlx, report=report))

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

    def _store(self) -> SessionStore:
        if self.store is None:
            self.store = SessionStore()
        return self.store

    def _save(self, session: ChatSession, req: Save) -> None:
        saved = self._store().save(
            req.name,
            list(session.transcript),
            self.settings,
            model=session.model_name,
            snapshot=session.save,
        )
        self.post(M.EngineNotice(f"saved session {req.name!r} ({len(saved.transcript)} messages)"))

    def _resume(self, req: Resume) -> None:
        store = self._store()
        if req.name is None:
            self.post(M.SessionList(store.list()))
            return
        saved = store.load(req.name)
        cls = self._session_class()
        settings = {**self.settings, **saved.settings}
        if saved.snapshot_path:
            session = cls.restore(saved.snapshot_path, progress=self._note)
        else:
            session = cls.load(model=settings.get("model"), budget=settings.get("budget"), policy=settings.get("policy"),
                               progress=self._note, **(settings.get("options") or {}))
            if settings.get("system"):
                session.set_system(settings["system"])
        self.session = session  # the old session is released only once the new one is up
        self.settings = settings
        self._ready()
        self.post(M.SessionResumed(req.name, saved.transcript))
