"""Saved conversations (F3): open, rename, delete, or start a new one.

Why a screen over the chat (elia's and oterm's lists do the same): the list
needs room for name, model, tokens and when it was last used.  Reading the
store runs in a thread worker, so the list opens at once even while the
engine is busy; renames and deletes go through the app, which serialises
them with the engine's saves.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Static

from app import format as F
from app.commands import NAME_RE
from app.messages import Listed
from app.store import ConversationSummary


class ConversationsScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    ConversationsScreen { align: center middle; }
    ConversationsScreen > Vertical {
        width: 112; max-width: 95%; height: 80%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    ConversationsScreen #conv-title { text-style: bold; color: $accent; margin-bottom: 1; }
    ConversationsScreen DataTable { height: 1fr; }
    ConversationsScreen #conv-rename { display: none; }
    ConversationsScreen #conv-rename.-shown { display: block; }
    ConversationsScreen #conv-status { color: $text-muted; height: auto; }
    """

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("n", "new", "New"),
        Binding("r", "rename", "Rename"),
        Binding("d", "delete", "Delete"),
        Binding("f3", "close", "Close", show=False),
    ]

    def __init__(self, current: str | None) -> None:
        super().__init__()
        self.current = current
        self.rows: list[ConversationSummary] = []
        self._delete_armed: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Conversations", id="conv-title")
            yield DataTable(id="conv-table", cursor_type="row", zebra_stripes=True)
            yield Input(placeholder="new name (letters, digits, . _ -), Enter renames, Esc cancels", id="conv-rename")
            yield Static("Enter open · n new · r rename · d delete (twice) · Esc close", id="conv-status")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(" ", "Name", "Model", "Tokens", "Messages", "Last used")
        self.reload()
        table.focus()

    @work(thread=True, exclusive=True, group="conversations")
    def reload(self) -> None:
        self.post_message(Listed("conversations", self.app.list_conversations()))

    def on_listed(self, message: Listed) -> None:
        if message.kind != "conversations":
            return
        self.rows = list(message.rows)
        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        for row in self.rows:
            table.add_row(
                "●" if row.name == self.current else "",
                row.name,
                row.model or "?",
                F.count(row.tokens) if row.tokens is not None else "?",
                str(row.messages) if row.messages is not None else "?",
                F.when(row.updated),
                key=row.name,
            )
        if not self.rows:
            self.status("no saved conversations yet: they are saved after the first message · n new · Esc close")
        elif 0 <= keep < len(self.rows):
            table.move_cursor(row=keep)

    def status(self, text: str) -> None:
        self.query_one("#conv-status", Static).update(text)

    @property
    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row < 0 or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row].name

    @on(DataTable.RowSelected)
    def open_selected(self, event: DataTable.RowSelected) -> None:
        name = self.selected
        if name is not None:
            self.app.open_conversation(name)
            self.dismiss()

    def action_close(self) -> None:
        box = self.query_one("#conv-rename", Input)
        if box.has_class("-shown"):
            box.remove_class("-shown")
            self.query_one(DataTable).focus()
            return
        self.dismiss()

    def action_new(self) -> None:
        self.app.new_conversation()
        self.dismiss()

    def action_rename(self) -> None:
        name = self.selected
        if name is None:
            return
        box = self.query_one("#conv-rename", Input)
        box.value = name
        box.add_class("-shown")
        box.focus()
        self.status(f"rename {name!r} to: (Enter renames, Esc cancels)")

    @on(Input.Submitted, "#conv-rename")
    def rename_submitted(self, event: Input.Submitted) -> None:
        old, new = self.selected, event.value.strip()
        event.input.remove_class("-shown")
        self.query_one(DataTable).focus()
        if old is None or new == old:
            self.status("not renamed")
            return
        if not NAME_RE.match(new):
            self.status(f"bad name {new[:40]!r}: letters, digits, '.', '_' or '-' (at most 64)")
            return
        self.change(lambda: self.app.rename_conversation(old, new), f"renamed {old!r} to {new!r}")
        if self.current == old:
            self.current = new

    def action_delete(self) -> None:
        name = self.selected
        if name is None:
            return
        if self._delete_armed != name:
            self._delete_armed = name
            what = " (the open one: a new conversation starts)" if name == self.current else ""
            self.status(f"press d again to delete {name!r} for good{what}")
            return
        self._delete_armed = None
        self.change(lambda: self.app.delete_conversation(name), f"deleted {name!r}")

    @work(thread=True, group="conversations-change")
    def change(self, do, done: str) -> None:
        """Run a store change off the UI thread, then reload the list; errors are one line."""
        try:
            do()
        except Exception as e:  # noqa: BLE001 - UserError and friends: shown, never raised
            self.app.call_from_thread(self.status, " ".join(str(e).split()))
            return
        self.app.call_from_thread(self.status, done)
        self.post_message(Listed("conversations", self.app.list_conversations()))
