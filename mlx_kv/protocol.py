"""The contract between a chat session and whatever drives it (the TUI's engine
thread, the CLI, tests).

Why a Protocol: the app must not probe a session for what it can do
(`inspect.signature`, `getattr(..., None)`), and its test double must not
drift from the real thing. `mlx_kv.engine.Session` and
`app.fake_engine.FakeSession` both implement it without inheriting from it;
tests/test_protocol.py checks both signatures against this one. Nothing here
imports MLX, so the UI can type against it.

Threading: every method runs on the one thread that owns the session (MLX
streams are thread-local); `cancel` events are the only thing other threads
touch.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from mlx_kv.events import HeapStats, IngestProgress, IngestResult, MemoryMap, Throughput

__all__ = ["ChatSession", "PROTOCOL_METHODS"]


@runtime_checkable
class ChatSession(Protocol):
    """A conversation with a model whose KV cache is a managed heap."""

    model_name: str
    transcript: list[dict]
    overflow: str

    @classmethod
    def load(cls, model: str | None = None, budget: int | str | None = None, policy: str | None = None,
             progress: Callable[[str], None] | None = None, weights: str = "auto", **heap: Any) -> ChatSession:
        """Load a model (None: the default one) behind a fresh heap; `progress`
        hears one-line notes (hub downloads); `heap` holds further HeapConfig
        fields. Bad settings raise UserError."""
        ...

    @classmethod
    def restore(cls, path: str, progress: Callable[[str], None] | None = None) -> ChatSession:
        """A session saved with `save`, model included (loading it reports to `progress`)."""
        ...

    def chat(self, message: str, max_tokens: int = 512, cancel: threading.Event | None = None,
             temperature: float = 0.0) -> Iterator[str]:
        """Stream the reply; a set `cancel` stops it and what was said stays in the transcript."""
        ...

    def regenerate(self, max_tokens: int = 512, cancel: threading.Event | None = None,
                   temperature: float = 0.0) -> Iterator[str]:
        """Take back the last reply and its message (their tokens leave the
        heap) and stream a new reply; UserError when the last turn is not a
        reply or cannot be taken back. Checks happen at the call, before the
        first piece."""
        ...

    def ingest(self, source: str, progress: Callable[[IngestProgress], None] | None = None,
               errors: str = "strict", cancel: threading.Event | None = None) -> IngestResult:
        """Read a document (a path, or the text itself) into the heap, chunk by chunk."""
        ...

    def set_budget(self, budget: int | str) -> None:
        """A new user budget (any form mlx_kv.sizes reads); the memory guard restores to it."""
        ...

    def set_policy(self, name: str) -> None:
        ...

    def set_system(self, text: str) -> None:
        ...

    def set_overflow(self, mode: str) -> None:
        """What happens when the heap is full: "heap" (evict by the policy),
        "stop" (refuse a message or document that would evict, end a reply at
        the budget) or "rolling" (a plain rolling window: sinks and the newest
        tokens). The session's `overflow` attribute holds the mode."""
        ...

    def clear(self) -> None:
        """Forget the conversation and empty the heap."""
        ...

    def save(self, path: str) -> None:
        ...

    def heap_stats(self) -> HeapStats:
        ...

    def memory_map(self, detail: tuple[int, ...] = ()) -> MemoryMap:
        """What the heap still holds of each turn (documents, messages,
        replies) as shares of (layer, KV head) pairs; the spans whose index
        is in `detail` also come token by token, with their text."""
        ...

    def throughput(self) -> Throughput:
        ...

    def mlx_memory(self) -> dict[str, int]:
        """{"active", "peak", "cache"} bytes."""
        ...

    def drift(self, window: int = 1024) -> dict[str, float]:
        """The heap's next-token distribution against a full cache's over the last `window` tokens."""
        ...

    def observe_system(self, sample: Any) -> str | None:
        """The memory-guard hook: one probe sample (mlx_kv.system.SystemSample)
        in; the budget change it caused, and any event the heap had with the
        machine since the last call (its recovery tier found the disk full),
        as one line, out (None: nothing to say). The session owns its guard."""
        ...


PROTOCOL_METHODS: tuple[str, ...] = tuple(
    name for name, value in vars(ChatSession).items()
    if not name.startswith("_") and (callable(value) or isinstance(value, classmethod))
)
