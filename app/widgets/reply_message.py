"""The model's reply: Markdown that grows while tokens stream in.

Why a stream: re-rendering the whole Markdown document for every token is
quadratic; Textual's ``MarkdownStream`` batches pieces that arrive faster than
the widget can render them and appends only the new blocks.
"""

from __future__ import annotations

from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownStream


class ReplyMessage(Markdown):
    DEFAULT_CSS = """
    ReplyMessage {
        margin: 1 8 0 1;
        padding: 0 1;
        border-left: thick $accent;
        background: $boost;
    }
    ReplyMessage.cancelled { border-left: thick $warning; }
    ReplyMessage.waiting { color: $text-muted; }
    """

    PLACEHOLDER = "*thinking…*"

    def __init__(self, text: str = "", streaming: bool = True) -> None:
        # While the prompt is prefilled nothing streams yet: show a placeholder.
        super().__init__(self.PLACEHOLDER if streaming and not text else text)
        self.text = text  # the reply itself (never the placeholder)
        self.streaming = streaming
        self._stream: MarkdownStream | None = None
        if streaming:
            self.add_class("waiting")

    async def add(self, piece: str) -> None:
        """Append generated text."""
        if not piece:
            return
        if self._stream is None:
            self.remove_class("waiting")
            await self.update(self.text)  # drop the placeholder
            self._stream = Markdown.get_stream(self)
        self.text += piece
        await self._stream.write(piece)

    async def finish(self, cancelled: bool = False, note: str = "") -> None:
        """Flush the stream; mark a stopped reply so it is not mistaken for a complete one."""
        self.streaming = False
        self.note = note
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        elif self.has_class("waiting"):
            await self.update(self.text or ("*(stopped)*" if cancelled else "*(no reply)*"))
        self.remove_class("waiting")
        if cancelled:
            self.add_class("cancelled")
