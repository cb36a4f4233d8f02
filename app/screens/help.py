"""Help (F1): every key and every slash command on one screen.

Why generated: the list is built from the app's and the screens' bindings
and from the command table, so a new key or command cannot be missing here
(tests/test_app_features.py checks that every binding and command appears).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from app import commands as C

INPUT_KEYS = [
    ("Enter", "send the message or command"),
    ("Shift+Enter, Alt+Enter, Ctrl+J", "new line in the message"),
    ("Up / Down", "recall earlier messages (in an empty box)"),
    ("click a reply", "copy it; click a code block to copy the code"),
    ("Ctrl+P", "command palette (every action, the theme picker)"),
]


def key_name(key: str) -> str:
    names = []
    for k in key.split(","):
        parts = [p.capitalize() if len(p) > 1 else p.upper() for p in k.strip().split("+")]
        names.append("+".join("Esc" if p == "Escape" else p for p in parts))
    return ", ".join(names)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 104; max-width: 95%; height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    """

    BINDINGS = [Binding("escape", "close", "Close"), Binding("f1", "close", "Close", show=False)]

    def __init__(self, bindings: list[tuple[str, str]], screens: dict[str, list[tuple[str, str]]]) -> None:
        super().__init__()
        self.bindings = bindings
        self.screens = screens

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(self.render_help(self.bindings, self.screens), id="help-text")

    @staticmethod
    def render_help(bindings: list[tuple[str, str]], screens: dict[str, list[tuple[str, str]]]) -> Content:
        width = 34
        rows: list = [("Keys\n", "bold $accent")]
        for key, what in bindings:
            rows += [(key_name(key).ljust(width), "bold"), what, "\n"]
        for key, what in INPUT_KEYS:
            rows += [(key.ljust(width), "bold"), what, "\n"]
        for title, keys in screens.items():
            rows.append((f"\n{title}\n", "bold $accent"))
            for key, what in keys:
                rows += [(key_name(key).ljust(width), "bold"), what, "\n"]
        rows.append(("\nCommands (type them in the message box; //text sends a line that starts with /)\n", "bold $accent"))
        for spec in C.COMMANDS.values():
            rows += [(spec.usage.ljust(width), "bold"), spec.help, "\n"]
        return Content.assemble(*rows)

    def action_close(self) -> None:
        self.dismiss()
