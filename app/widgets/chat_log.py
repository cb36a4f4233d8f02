"""The scrollable conversation: user messages, streamed replies, notices, errors."""

from __future__ import annotations

from textual.containers import VerticalScroll

from app.widgets.chat_line import ChatLine
from app.widgets.reply_message import ReplyMessage
from app.widgets.user_message import UserMessage


class ChatLog(VerticalScroll):
    """Keeps itself scrolled to the newest message unless the user scrolls up."""

    DEFAULT_CSS = """
    ChatLog { height: 1fr; }
    """

    def on_mount(self) -> None:
        self.anchor()

    async def add_user(self, text: str) -> UserMessage:
        widget = UserMessage(text)
        await self.mount(widget)
        return widget

    async def add_reply(self, text: str = "", streaming: bool = True) -> ReplyMessage:
        widget = ReplyMessage(text, streaming=streaming)
        await self.mount(widget)
        return widget

    async def add_line(self, text: str, kind: str = "info") -> ChatLine:
        widget = ChatLine(text, kind)
        await self.mount(widget)
        return widget

    async def add_error(self, text: str) -> ChatLine:
        return await self.add_line(text, "error")

    def move_to_end(self, widget) -> None:
        """Put a message after everything shown so far (the engine took it up only now)."""
        if self.children and self.children[-1] is not widget:
            self.move_child(widget, after=self.children[-1])

    async def clear_messages(self) -> None:
        await self.remove_children()

    def lines(self, kind: str | None = None) -> list[str]:
        """Texts of notice/error lines (for tests and /stats)."""
        return [w.text for w in self.query(ChatLine) if kind is None or w.kind == kind]

    def replies(self) -> list[str]:
        return [w.text for w in self.query(ReplyMessage)]
