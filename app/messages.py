"""Messages the engine thread and the background workers post to the UI.

Why messages: the engine runs on its own thread (MLX streams are
thread-local), and Textual's ``post_message`` is the thread-safe way back into
the UI's event loop.  Every payload is plain data (see ``mlx_kv.events``), so
no MLX array ever reaches the UI thread.  They are dataclasses, as Textual
supports, so a message reads as the record it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from mlx_kv.events import HeapStats, IngestProgress, IngestResult, MemoryMap, Throughput
from mlx_kv.system import SystemSample


@dataclass
class EngineReady(Message):
    """A session is loaded (at start, after a resume, a new conversation or a model switch)."""

    model_name: str
    settings: dict


@dataclass
class EngineBusy(Message):
    """The engine started (busy=True) or finished (False) a request; `what` says which."""

    busy: bool
    what: str = ""


@dataclass
class ReplyStarted(Message):
    """The engine took up a chat request; `ident` is the one the UI gave it."""

    prompt: str
    ident: int = 0
    regenerated: bool = False  # a new answer to the last message: the old reply goes


@dataclass
class ReplyChunk(Message):
    """Generated text (one or several pieces, coalesced by the worker)."""

    text: str


@dataclass
class ReplyDone(Message):
    """`prompt_tokens`: what the question cost (template included); `reply_tokens`: the answer's."""

    cancelled: bool
    pieces: int
    seconds: float
    prompt_tokens: int | None = None
    reply_tokens: int | None = None
    note: str = ""  # why it ended early, when the engine knows ("the context is full")
    error: str = ""  # the one-line error that ended it (also posted as EngineError)


@dataclass
class IngestStarted(Message):
    source: str


@dataclass
class IngestProgressed(Message):
    progress: IngestProgress


@dataclass
class IngestDone(Message):
    """`result` is None when the ingest failed."""

    source: str
    result: IngestResult | None
    cancelled: bool


@dataclass
class EngineStats(Message):
    """Heap, throughput, MLX memory and what each turn still holds, read on the engine thread.

    `report`: the user asked (/stats); print a summary in the chat.  `memory`
    carries per-token detail only for the spans the remembers view watches.
    """

    heap: HeapStats | None
    throughput: Throughput | None
    mlx: dict | None
    report: bool = False
    memory: MemoryMap | None = None


@dataclass
class EngineNotice(Message):
    """A one-line informational message for the chat ("budget set to 2GB")."""

    text: str


@dataclass
class EngineError(Message):
    """A one-line error for the chat; never a traceback."""

    text: str


@dataclass
class ConversationOpened(Message):
    """The conversation on screen is now this one (a saved one reopened, or a
    new one: name None, empty transcript), with what each turn cost."""

    name: str | None
    transcript: list[dict]
    memory: MemoryMap | None = None


@dataclass
class SessionList(Message):
    """(name, last used) of every saved conversation, newest first."""

    sessions: list[tuple[str, float]]


@dataclass
class ConversationNamed(Message):
    """The current conversation's name changed (None: not saved yet), or it was just saved."""

    name: str | None
    saved_at: float | None = None


@dataclass
class ModelProgress(Message):
    """A model is being fetched: `fraction` of `total_bytes` (None: unknown yet); `done` when it ends."""

    model: str
    fraction: float | None
    text: str = ""
    done: bool = False


@dataclass
class DriftUpdate(Message):
    """A drift sample (KL and top-1 agreement, heap vs a full-cache shadow, and
    what the shadow cost), or, without one, `note` says why none was taken."""

    mode: str
    kl: float | None = None
    top1_agree: float | None = None
    tokens: int = 0
    seconds: float = 0.0
    exact: bool = False  # the shadow re-read the whole session
    gap_s: float = 0.0  # the pause before the next sample that keeps shadows within the duty share
    note: str = ""


@dataclass
class ProbeSampled(Message):
    """A system probe sample (RAM, swap, pressure, thermal)."""

    sample: SystemSample


@dataclass
class Listed(Message):
    """Rows a background lookup found (saved conversations, models), for the screen that asked."""

    kind: str
    rows: list = field(default_factory=list)
