"""Messages the engine thread and the probe worker post to the UI.

Why messages: the engine runs on its own thread (MLX streams are
thread-local), and Textual's ``post_message`` is the thread-safe way back into
the UI's event loop.  Every payload is plain data (see ``mlx_kv.events``), so
no MLX array ever reaches the UI thread.
"""

from __future__ import annotations

from textual.message import Message

from mlx_kv.events import HeapStats, IngestProgress, IngestResult, Throughput
from mlx_kv.system import SystemSample


class EngineReady(Message):
    """A session is loaded (at start, after /resume or /clear)."""

    def __init__(self, model_name: str, settings: dict) -> None:
        super().__init__()
        self.model_name = model_name
        self.settings = settings


class EngineBusy(Message):
    """The engine started (busy=True) or finished (False) a request; `what` says which."""

    def __init__(self, busy: bool, what: str = "") -> None:
        super().__init__()
        self.busy = busy
        self.what = what


class ReplyStarted(Message):
    def __init__(self, prompt: str) -> None:
        super().__init__()
        self.prompt = prompt


class ReplyChunk(Message):
    """Generated text (one or several pieces, coalesced by the worker)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ReplyDone(Message):
    def __init__(self, cancelled: bool, pieces: int, seconds: float) -> None:
        super().__init__()
        self.cancelled = cancelled
        self.pieces = pieces
        self.seconds = seconds


class IngestStarted(Message):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source


class IngestProgressed(Message):
    def __init__(self, progress: IngestProgress) -> None:
        super().__init__()
        self.progress = progress


class IngestDone(Message):
    """`result` is None when the ingest was cancelled or failed."""

    def __init__(self, source: str, result: IngestResult | None, cancelled: bool) -> None:
        super().__init__()
        self.source = source
        self.result = result
        self.cancelled = cancelled


class EngineStats(Message):
    """Heap, throughput and MLX memory, read on the engine thread."""

    def __init__(
        self, heap: HeapStats | None, throughput: Throughput | None, mlx: dict | None, report: bool = False
    ) -> None:
        super().__init__()
        self.report = report  # True: the user asked (/stats); print a summary in the chat
        self.heap = heap
        self.throughput = throughput
        self.mlx = mlx


class EngineNotice(Message):
    """A one-line informational message for the chat ("budget set to 2GB")."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class EngineError(Message):
    """A one-line error for the chat; never a traceback."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class SessionResumed(Message):
    def __init__(self, name: str, transcript: list[dict]) -> None:
        super().__init__()
        self.name = name
        self.transcript = transcript


class SessionList(Message):
    def __init__(self, sessions: list[tuple[str, float]]) -> None:
        super().__init__()
        self.sessions = sessions


class ProbeSampled(Message):
    """A system probe sample (RAM, swap, pressure, thermal)."""

    def __init__(self, sample: SystemSample) -> None:
        super().__init__()
        self.sample = sample
