"""The model's reply: Markdown that grows while tokens stream in, and a line of what it cost.

Why a stream: re-rendering the whole Markdown document for every token is
quadratic; Textual's ``MarkdownStream`` batches pieces that arrive faster than
the widget can render them and appends only the new blocks.

Click to copy (as oterm does): a click on a code block copies the code, a
click anywhere else on the reply copies the whole reply, through the app's
clipboard (OSC 52, so it works over ssh in terminals that allow it).
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownFence, MarkdownStream


class ReplyMessage(Vertical):
    DEFAULT_CSS = """
    ReplyMessage {
        height: auto;
        margin: 1 8 0 1;
        padding: 0 1;
        border-left: thick $accent;
        background: $boost;
    }
    ReplyMessage > Markdown { margin: 0; padding: 0; background: transparent; }
    ReplyMessage > Markdown > *:last-child { margin-bottom: 0; }
    ReplyMessage > .meta { color: $text-muted; height: auto; display: none; }
    ReplyMessage > .meta.-shown { display: block; }
    ReplyMessage.cancelled { border-left: thick $warning; }
    ReplyMessage.waiting > Markdown { color: $text-muted; }
    ReplyMessage:hover { background: $boost 150%; }
    """

    PLACEHOLDER = "*thinking…*"

    def __init__(self, text: str = "", streaming: bool = True) -> None:
        super().__init__()
        self.text = text  # the reply itself (never the placeholder)
        self.streaming = streaming
        self.note = ""
        self.tokens: int | None = None
        self._stream: MarkdownStream | None = None
        if streaming:
            self.add_class("waiting")

    def compose(self) -> ComposeResult:
        # While the prompt is prefilled nothing streams yet: show a placeholder.
        yield Markdown(self.PLACEHOLDER if self.streaming and not self.text else self.text)
        yield Static("", classes="meta")

    @property
    def body(self) -> Markdown:
        return self.query_one(Markdown)

    async def add(self, piece: str) -> None:
        """Append generated text."""
        if not piece:
            return
        if self._stream is None:
            self.remove_class("waiting")
            await self.body.update(self.text)  # drop the placeholder
            self._stream = Markdown.get_stream(self.body)
        self.text += piece
        await self._stream.write(piece)

    async def finish(self, cancelled: bool = False, note: str = "") -> None:
        """Flush the stream; mark a stopped reply so it is not mistaken for a complete one."""
        self.streaming = False
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        elif self.has_class("waiting"):
            await self.body.update(self.text or ("*(stopped)*" if cancelled else "*(no reply)*"))
        self.remove_class("waiting")
        if cancelled:
            self.add_class("cancelled")
        self.set_note(note)

    def set_note(self, note: str) -> None:
        """The muted line under the reply: tokens, speed, why it ended."""
        self.note = note
        meta = self.query_one(".meta", Static)
        meta.update(note)
        meta.set_class(bool(note), "-shown")

    def code_blocks(self) -> list[str]:
        return [fence.code for fence in self.query(MarkdownFence)]

    def on_click(self, event: events.Click) -> None:
        fence = _ancestor(event.widget, MarkdownFence)
        if fence is not None:
            self.app.copy_to_clipboard(fence.code)
            self.app.notify(f"copied the code block ({len(fence.code):,} characters)", timeout=2)
        elif self.text:
            self.app.copy_to_clipboard(self.text)
            self.app.notify(f"copied the reply ({len(self.text):,} characters)", timeout=2)
        event.stop()


def _ancestor(widget: Widget | None, kind: type) -> Widget | None:
    while widget is not None and not isinstance(widget, kind):
        widget = widget.parent if isinstance(widget.parent, Widget) else None
    return widget
