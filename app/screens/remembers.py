"""What the model still remembers (F5): each loaded document, and the
conversation, as the heap holds them now.

Why: a chat app with a fixed memory budget forgets; this one can show what.
The engine reads, for every token of the chosen span, the share of (layer,
KV head) pairs that keep it (mlx_kv.memory_map); the view redraws whenever
the engine posts stats (every half second while it reads or writes, every
second when idle), so eviction is seen as it happens.  Choosing a span tells
the engine which one to detail (EngineWorker.watch), so only that one is
decoded and counted token by token.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from app import format as F
from app.widgets.memory_text import MemoryText, legend, shade
from mlx_kv.events import MemoryMap, SpanMemory

CONVERSATION = "conversation"


class RemembersScreen(Screen):
    DEFAULT_CSS = """
    RemembersScreen #rem-spans { width: 34; border: round $primary 50%; }
    RemembersScreen #rem-right { width: 1fr; }
    RemembersScreen #rem-summary { height: auto; padding: 0 1; color: $text; }
    RemembersScreen #rem-legend { height: auto; padding: 0 1; border-bottom: solid $primary 30%; }
    RemembersScreen #rem-scroll { height: 1fr; }
    """

    BINDINGS = [
        Binding("escape", "close", "Back to chat"),
        Binding("f5", "close", "Back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.memory: MemoryMap | None = None
        self.pillars: set[int] = set()
        self.choice: str | None = None  # a document span's start position as text, or CONVERSATION
        self._keys: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield OptionList(id="rem-spans")
            with Vertical(id="rem-right"):
                yield Static("", id="rem-summary")
                yield Static(legend(), id="rem-legend")
                with VerticalScroll(id="rem-scroll"):
                    yield MemoryText(id="rem-text")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "what the model still remembers"
        self.query_one(OptionList).focus()
        self.show(self.app.last_memory, self.app.last_pillars)

    # -- data from the engine ---------------------------------------------------------

    def show(self, memory: MemoryMap | None, pillars: set[int] | None = None) -> None:
        self.memory = memory
        if pillars is not None:
            self.pillars = set(pillars)
        spans = list(memory.spans) if memory is not None else []
        self._list(spans)
        chosen = self.chosen_spans()
        if chosen is None:
            return
        indices, picked = chosen
        want = tuple(indices)
        if self.app.watch_memory(want) or any(s.tokens is None for s in picked):
            return  # the detail comes with the next stats
        self._draw(picked)

    def _list(self, spans: list[SpanMemory]) -> None:
        options, keys = [], []
        for span in spans:
            if span.kind == "document":
                keys.append(str(span.start))
                options.append(Option(f"▤ {span.source}\n  {F.count(span.length)} tok · {span.kept:.0%} kept", id=str(span.start)))
        chat = [s for s in spans if s.kind != "document"]
        if chat:
            length = sum(s.length for s in chat)
            kept = sum(s.kept * s.length for s in chat) / length if length else 0.0
            keys.append(CONVERSATION)
            options.append(Option(f"✉ conversation\n  {F.count(length)} tok · {kept:.0%} kept", id=CONVERSATION))
        box = self.query_one(OptionList)
        if keys != self._keys:
            box.clear_options()
            box.add_options(options)
            self._keys = keys
        else:
            for option in options:
                box.replace_option_prompt(option.id, option.prompt)
        if self.choice not in keys:
            self.choice = keys[0] if keys else None
        if self.choice is not None:
            box.highlighted = keys.index(self.choice)
        if not keys:
            self.query_one("#rem-summary", Static).update("nothing read yet: /load a document or send a message")

    def chosen_spans(self) -> tuple[list[int], list[SpanMemory]] | None:
        if self.memory is None or self.choice is None:
            return None
        out = [(i, s) for i, s in enumerate(self.memory.spans)
               if (s.kind != "document" if self.choice == CONVERSATION else
                   s.kind == "document" and str(s.start) == self.choice)]
        return [i for i, _ in out], [s for _, s in out]

    def _draw(self, spans: list[SpanMemory]) -> None:
        m = self.memory
        length = sum(s.length for s in spans)
        kept = sum(s.kept * s.length for s in spans) / length if length else 0.0
        what = spans[0].source if self.choice != CONVERSATION else "the conversation"
        counts = {"all": 0, "most": 0, "some": 0, "none": 0}
        for s in spans:
            for k in (s.tokens.kept if s.tokens else ()):
                counts[shade(k)] += 1
        summary = (f"{what}: {length:,} tokens · each (layer, KV head) pair still holds {kept:.0%} of them on average "
                   f"({m.layers} layers × {m.heads} KV heads = {m.pairs} pairs)\n"
                   f"kept by every pair {counts['all']:,} · by at least half {counts['most']:,} · by some "
                   f"{counts['some']:,} · by none {counts['none']:,} tokens")
        self.query_one("#rem-summary", Static).update(summary)
        self.query_one(MemoryText).show(spans, self.pillars, headings=self.choice == CONVERSATION)

    @on(OptionList.OptionHighlighted)
    def picked(self, event: OptionList.OptionHighlighted) -> None:
        key = event.option.id
        if key != self.choice:
            self.choice = key
            self.show(self.memory)

    def action_close(self) -> None:
        self.app.watch_memory(())
        self.app.pop_screen()
