"""The model-loading bar: a hub download's progress, or a load in progress.  Hidden when idle.

Why its own bar: fetching a model can take minutes, and mlx_kv.models
reports a download in tenths (DownloadNote); a bar says more than ten lines
in the chat.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class DownloadBar(Horizontal):
    DEFAULT_CSS = """
    DownloadBar { height: 1; display: none; padding: 0 1; }
    DownloadBar.active { display: block; }
    DownloadBar #download-name { width: auto; max-width: 40; margin-right: 1; color: $accent; }
    DownloadBar ProgressBar { width: auto; }
    DownloadBar ProgressBar Bar { width: 20; }
    DownloadBar #download-stats { width: 1fr; margin-left: 1; color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        yield Label("", id="download-name")
        yield ProgressBar(total=None, show_eta=False, id="download-progress")
        yield Label("", id="download-stats")

    def show(self, model: str, fraction: float | None, text: str = "") -> None:
        """`fraction` None: loading, size unknown (an indeterminate bar)."""
        self.model = model
        self.fraction = fraction
        self.stats_text = text
        self.query_one("#download-name", Label).update(f"model {model}")
        bar = self.query_one(ProgressBar)
        if fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=100, progress=round(100 * fraction))
        self.query_one("#download-stats", Label).update(text or "loading…")
        self.add_class("active")

    def finish(self) -> None:
        self.remove_class("active")

    @property
    def active(self) -> bool:
        return self.has_class("active")
