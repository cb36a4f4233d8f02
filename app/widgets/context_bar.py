"""Two lines under the chat: how much was read, how much the heap keeps, the
budget; what happens when it is full, how much of each document is evicted,
and the conversation's name.

Why always visible: with a fixed budget, "how much does it still remember?"
is the question of every long session (aichat puts a used-tokens percentage
in its prompt; Ollama's silent truncation is what people complain about).
The bar has three parts on one scale (the larger of read and budget): kept
tokens, tokens read and evicted, and room left in the budget.
"""

from __future__ import annotations

import time

from textual.content import Content
from textual.widgets import Static

from app import format as F
from mlx_kv.events import HeapStats, MemoryMap

WIDTH = 18
KEPT, EVICTED, ROOM = "█", "▒", "░"
MODES = {"heap": "the heap evicts", "stop": "stop at the budget", "rolling": "a rolling window (sinks + newest)"}


class ContextBar(Static):
    DEFAULT_CSS = """
    ContextBar { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.heap: HeapStats | None = None
        self.memory: MemoryMap | None = None
        self.overflow = "heap"
        self.conversation: str | None = None
        self.saved_at: float | None = None

    def on_mount(self) -> None:
        self.redraw()

    def show(self, heap: HeapStats | None = None, memory: MemoryMap | None = None) -> None:
        if heap is not None:
            self.heap = heap
        if memory is not None:
            self.memory = memory
        self.redraw()

    def set_conversation(self, name: str | None, saved_at: float | None = None, overflow: str | None = None) -> None:
        self.conversation = name
        if saved_at is not None or name is None:
            self.saved_at = saved_at
        if overflow is not None:
            self.overflow = overflow
        self.redraw()

    def redraw(self) -> None:
        self.update(self.render_context(self.heap, self.memory, self.overflow, self.conversation, self.saved_at))

    @property
    def plain(self) -> str:
        return self.render_context(self.heap, self.memory, self.overflow, self.conversation, self.saved_at).plain

    @staticmethod
    def cells(seen: int, kept: int, budget: int, width: int = WIDTH) -> str:
        scale = max(seen, budget, 1)
        n_kept = round(width * kept / scale)
        n_evicted = min(width - n_kept, round(width * max(0, seen - kept) / scale))
        if seen > kept and n_evicted == 0 and n_kept < width:
            n_evicted = 1  # any eviction shows
        return KEPT * n_kept + EVICTED * n_evicted + ROOM * (width - n_kept - n_evicted)

    @classmethod
    def render_context(cls, heap: HeapStats | None, memory: MemoryMap | None, overflow: str,
                    conversation: str | None, saved_at: float | None) -> Content:
        parts: list = [("Context ", "bold")]
        if heap is None:
            parts.append("no heap yet")
        else:
            seen, kept, budget = heap.tokens_seen, heap.tokens_kept, heap.budget_tokens
            chars = cls.cells(seen, kept, budget)
            style = {KEPT: F.fraction_style(kept / budget if budget else None), EVICTED: "$error 70%", ROOM: "$text-muted"}
            parts += [(ch, style[ch]) for ch in chars]
            share = f" ({kept / seen:.0%})" if seen else ""
            parts += [f" read {F.count(seen)} · kept {F.count(kept)}{share} · budget {F.count(budget)}/layer\n",
                      ("When full: ", "bold"), (MODES.get(overflow, overflow), "$accent")]
            if overflow == "stop":
                parts.append(f" (room {F.count(max(0, budget - seen))})")
            elif overflow == "heap":
                parts.append(f" by {heap.policy}")
        for span in (memory.spans if memory is not None else ()):
            if span.kind == "document" and span.evicted >= 0.005:
                parts += [" · ", (f"{span.source} {span.evicted:.0%} evicted", "$warning")]
        if conversation:
            saved = f" · saved {time.strftime('%H:%M', time.localtime(saved_at))}" if saved_at else ""
            parts += [" · ", (conversation, "$text"), saved]
        else:
            parts.append(" · new conversation (saved after the first message)")
        if heap is None:
            parts.insert(1, "\n")
        return Content.assemble(*parts)
