"""The main screen: chat column on the left (messages, progress bars, the
context line, the message box), dashboard on the right."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from app.widgets.chat_input import ChatInput
from app.widgets.chat_log import ChatLog
from app.widgets.context_bar import ContextBar
from app.widgets.dashboard import Dashboard
from app.widgets.download_bar import DownloadBar
from app.widgets.ingest_bar import IngestBar


class MainScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="chat-column"):
                yield ChatLog(id="chat")
                yield DownloadBar(id="download")
                yield IngestBar(id="ingest")
                yield ContextBar(id="context")
                yield ChatInput(id="input")
            yield Dashboard(id="dashboard")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ChatInput).focus()

    @property
    def chat(self) -> ChatLog:
        return self.query_one(ChatLog)

    @property
    def dashboard(self) -> Dashboard:
        return self.query_one(Dashboard)

    @property
    def ingest_bar(self) -> IngestBar:
        return self.query_one(IngestBar)

    @property
    def download_bar(self) -> DownloadBar:
        return self.query_one(DownloadBar)

    @property
    def context_bar(self) -> ContextBar:
        return self.query_one(ContextBar)

    @property
    def input(self) -> ChatInput:
        return self.query_one(ChatInput)
