"""The multi-line message box.

Why a TextArea subclass: the chat needs Enter to send and still allow
multi-line messages (pasted documents, code).  Enter sends; Shift+Enter,
Alt+Enter or Ctrl+J insert a newline (terminals that cannot report
Shift+Enter still send Ctrl+J).  Up in an empty box (or while browsing) recalls earlier messages.
"""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("shift+enter", "alt+enter", "ctrl+j", "newline")


class ChatInput(TextArea):
    """Enter submits (posts ``ChatInput.Submitted``); the box then empties."""

    DEFAULT_CSS = """
    ChatInput {
        height: auto;
        min-height: 3;
        max-height: 10;
    }
    """

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("placeholder", "Message, or /help for commands  (Enter sends, Shift/Alt+Enter or Ctrl+J: new line)")
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.sent_history: list[str] = []
        self._history_index: int | None = None

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        browsing = self._history_index is not None or not self.text
        if event.key == "up" and browsing and self.cursor_location[0] == 0 and self.sent_history:
            event.stop()
            event.prevent_default()
            self._recall(-1)
            return
        if event.key == "down" and self._history_index is not None and self.cursor_location[0] == self.document.line_count - 1:
            event.stop()
            event.prevent_default()
            self._recall(+1)
            return
        await super()._on_key(event)

    def submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        if not self.sent_history or self.sent_history[-1] != text:
            self.sent_history.append(text)
        self._history_index = None
        self.clear()
        self.post_message(self.Submitted(text))

    def _recall(self, step: int) -> None:
        index = len(self.sent_history) if self._history_index is None else self._history_index
        index += step
        if index >= len(self.sent_history):
            self._history_index = None
            self.load_text("")
            return
        self._history_index = max(0, index)
        self.load_text(self.sent_history[self._history_index])
        self.move_cursor(self.document.end)
