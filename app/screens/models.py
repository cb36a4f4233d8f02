"""The model picker (F4): models on this machine, a hub id to download, a folder to search.

Why a list of what is already here: people keep GGUF files where LM Studio
or llama.cpp put them and hub models in the Hugging Face cache; the picker
finds them (mlx_kv.catalog, in a thread worker: walking folders may be slow)
so nobody types a path.  Choosing one starts a new conversation on it (the
current one is saved first); a hub id that is not cached downloads behind
the progress bar.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Static

from app import format as F
from app.messages import Listed
from mlx_kv.catalog import ModelEntry, find_models


class ModelsScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    ModelsScreen { align: center middle; }
    ModelsScreen > Vertical {
        width: 130; max-width: 95%; height: 85%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    ModelsScreen #models-title { text-style: bold; color: $accent; margin-bottom: 1; }
    ModelsScreen DataTable { height: 1fr; }
    ModelsScreen Input { margin-top: 1; }
    ModelsScreen #models-status { color: $text-muted; height: auto; }
    """

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("f4", "close", "Close", show=False),
        Binding("ctrl+l", "focus_spec", "Hub id / path"),
    ]

    def __init__(self, current: str | None, folders: list[str], finder=find_models) -> None:
        super().__init__()
        self.finder = finder  # mlx_kv.catalog.find_models, or a stand-in in tests
        self.current = current
        self.folders = list(folders)
        self.entries: list[ModelEntry] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Models (choosing one starts a new conversation; the current one is saved)", id="models-title")
            yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
            yield Input(placeholder="a hub id (org/name, downloads once), a .gguf file or a model folder; Enter loads it",
                        id="models-spec")
            yield Input(placeholder="add a folder to search for .gguf files and model folders; Enter adds it",
                        id="models-folder")
            yield Static("searching…", id="models-status")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(" ", "Model", "Kind", "Where", "Size", "Note")
        self.scan()
        table.focus()

    @work(thread=True, exclusive=True, group="models")
    def scan(self) -> None:
        try:
            entries = self.finder(self.folders)
        except Exception as e:  # noqa: BLE001 - a listing must never take the app down
            self.app.call_from_thread(self.status, f"could not list models: {' '.join(str(e).split())}")
            entries = []
        self.post_message(Listed("models", entries))

    def on_listed(self, message: Listed) -> None:
        if message.kind != "models":
            return
        self.entries = list(message.rows)
        table = self.query_one(DataTable)
        table.clear()
        for entry in self.entries:
            current = self.current is not None and (entry.name in self.current or entry.spec == self.current)
            table.add_row("●" if current else "", entry.name, entry.kind, _short(entry.where, 34),
                          F.nbytes(entry.size) if entry.size else "", _short(entry.note, 44, tail=False))
        places = "LM Studio, llama.cpp, the Hugging Face cache" + (", " + ", ".join(self.folders) if self.folders else "")
        self.status(f"{len(self.entries)} models ({places}) · Enter loads · Ctrl+L types a hub id or path · Esc closes")

    def status(self, text: str) -> None:
        self.query_one("#models-status", Static).update(text)

    @on(DataTable.RowSelected)
    def chosen(self, event: DataTable.RowSelected) -> None:
        row = event.cursor_row
        if 0 <= row < len(self.entries):
            entry = self.entries[row]
            if not entry.usable:
                self.status(f"{entry.name}: {entry.note}")
                return
            self.app.switch_model(entry.spec)
            self.dismiss()

    @on(Input.Submitted, "#models-spec")
    def typed(self, event: Input.Submitted) -> None:
        spec = event.value.strip()
        if spec:
            self.app.switch_model(spec)
            self.dismiss()

    @on(Input.Submitted, "#models-folder")
    def add_folder(self, event: Input.Submitted) -> None:
        folder = event.value.strip()
        if not folder:
            return
        if folder not in self.folders:
            self.folders.append(folder)
            self.app.add_model_folder(folder)
        event.input.value = ""
        self.status(f"searching {folder}…")
        self.scan()

    def action_focus_spec(self) -> None:
        self.query_one("#models-spec", Input).focus()

    def action_close(self) -> None:
        self.dismiss()


def _short(text: str, width: int, tail: bool = True) -> str:
    """At most `width` cells: a path keeps its end, a note its start."""
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1):] if tail else text[: width - 1] + "…"
