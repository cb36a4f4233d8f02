"""What the user typed, shown verbatim (no markup, no Markdown), with what it cost in tokens."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static


class UserMessage(Static):
    """``tokens``: the message's prompt tokens (chat template included), once the engine read it."""

    DEFAULT_CSS = """
    UserMessage {
        margin: 1 1 0 8;
        padding: 0 1;
        background: $primary 15%;
        border-left: thick $primary;
    }
    UserMessage.queued { border-left: dashed $primary; color: $text-muted; }
    UserMessage.refused { border-left: thick $error; color: $text-muted; }
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: int | None = None
        self.meta = ""
        super().__init__(Content(text))

    def set_meta(self, tokens: int | None = None, note: str = "") -> None:
        """A muted line under the message: its tokens, or why it was not read."""
        self.tokens = tokens if tokens is not None else self.tokens
        parts = [f"{self.tokens:,} tokens"] if self.tokens is not None else []
        parts += [note] if note else []
        self.meta = " · ".join(parts)
        self.update(Content.assemble(Content(self.text), ("\n" + self.meta, "$text-muted")) if self.meta
                    else Content(self.text))
