"""Edit this conversation's system prompt (/system without text), as oterm lets you per chat.

Why a screen: a system prompt is often several lines; the message box sends
on Enter, this editor does not.  Ctrl+S saves it (an empty prompt clears
it), Esc leaves it as it was.  The prompt is saved with the conversation.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, TextArea


class SystemPromptScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    SystemPromptScreen { align: center middle; }
    SystemPromptScreen > Vertical {
        width: 90; max-width: 95%; height: 60%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    SystemPromptScreen TextArea { height: 1fr; }
    SystemPromptScreen Horizontal { height: auto; align-horizontal: right; }
    SystemPromptScreen Button { margin-left: 1; }
    """

    BINDINGS = [Binding("ctrl+s", "save", "Save"), Binding("escape", "cancel", "Cancel")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("System prompt for this conversation (Ctrl+S saves, Esc cancels; empty clears it)")
            yield TextArea(self.text, id="system-text", soft_wrap=True)
            with Horizontal():
                yield Button("Save", variant="primary", id="system-save")
                yield Button("Cancel", id="system-cancel")

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "system-save":
            self.action_save()
        else:
            self.action_cancel()

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
