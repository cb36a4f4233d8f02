"""What the user typed, shown verbatim (no markup, no Markdown)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static


class UserMessage(Static):
    DEFAULT_CSS = """
    UserMessage {
        margin: 1 1 0 8;
        padding: 0 1;
        background: $primary 15%;
        border-left: thick $primary;
    }
    UserMessage.queued { border-left: dashed $primary; color: $text-muted; }
    """

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(Content(text))
