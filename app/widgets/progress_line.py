"""One line of progress: a name, a bar and a stats label.  Hidden when idle.

The model bar and the /load bar are the same widget with different words;
each subclass gives its `prefix` (the ids of its parts) and says what to show.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class ProgressLine(Horizontal):
    DEFAULT_CSS = """
    ProgressLine { height: 1; display: none; padding: 0 1; }
    ProgressLine.active { display: block; }
    ProgressLine .progress-name { width: auto; max-width: 40; margin-right: 1; color: $accent; }
    ProgressLine ProgressBar { width: auto; }
    ProgressLine ProgressBar Bar { width: 20; }
    ProgressLine .progress-stats { width: 1fr; margin-left: 1; color: $text-muted; }
    """
    prefix = "progress"

    def compose(self) -> ComposeResult:
        yield Label("", id=f"{self.prefix}-name", classes="progress-name")
        yield ProgressBar(total=None, show_eta=False, id=f"{self.prefix}-progress")
        yield Label("", id=f"{self.prefix}-stats", classes="progress-stats")

    def set_line(self, *, name: str | None = None, done: int | None = None, total: int | None = None,
                 stats: str | None = None) -> None:
        """Update the parts given; `total` None with `done` None: an indeterminate bar."""
        if name is not None:
            self.query_one(f"#{self.prefix}-name", Label).update(name)
        if stats is not None:
            self.stats_text = stats
            self.query_one(f"#{self.prefix}-stats", Label).update(stats)
        bar = self.query_one(ProgressBar)
        if total is None and done is None:
            bar.update(total=None, progress=0)
        elif total is not None:
            bar.update(total=max(1, total), progress=done or 0)
        self.add_class("active")

    def finish(self) -> None:
        self.remove_class("active")

    @property
    def active(self) -> bool:
        return self.has_class("active")
