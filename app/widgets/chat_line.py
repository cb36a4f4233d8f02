"""One-line notices and errors in the chat (never a traceback)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static


class ChatLine(Static):
    """An info, error or help line.  ``kind`` is 'info', 'error' or 'help'."""

    DEFAULT_CSS = """
    ChatLine { margin: 0 1; color: $text-muted; }
    ChatLine.error { color: $text-error; }
    ChatLine.help { color: $text; }
    """

    PREFIX = {"info": "· ", "error": "✗ ", "help": ""}

    def __init__(self, text: str, kind: str = "info") -> None:
        self.kind = kind
        self.text = text
        # Content (not markup): text from files and engines is shown verbatim.
        super().__init__(Content(self.PREFIX.get(kind, "") + text), classes=kind)
