"""The /load progress bar: tokens, tokens/s and ETA.  Hidden when idle."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from app import format as F
from mlx_kv.events import IngestProgress


class IngestBar(Horizontal):
    DEFAULT_CSS = """
    IngestBar { height: 1; display: none; padding: 0 1; }
    IngestBar.active { display: block; }
    IngestBar #ingest-name { width: auto; max-width: 28; margin-right: 1; color: $accent; }
    IngestBar ProgressBar { width: auto; }
    IngestBar ProgressBar Bar { width: 20; }
    IngestBar #ingest-stats { width: 1fr; margin-left: 1; color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        yield Label("", id="ingest-name")
        yield ProgressBar(total=None, show_eta=False, id="ingest-progress")
        yield Label("", id="ingest-stats")

    def start(self, source: str) -> None:
        self.source = source
        self.query_one("#ingest-name", Label).update(f"loading {Path(source).name}")
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.query_one("#ingest-stats", Label).update("reading…  (Esc stops)")
        self.add_class("active")

    def show(self, p: IngestProgress) -> None:
        self.query_one(ProgressBar).update(total=max(1, p.tokens_total), progress=p.tokens_done)
        self.stats_text = (
            f"{F.count(p.tokens_done)}/{F.count(p.tokens_total)} tok · "
            f"{F.rate(p.tokens_per_s)} · ETA {F.duration(p.eta_s)}"
        )
        self.query_one("#ingest-stats", Label).update(self.stats_text)

    def finish(self) -> None:
        self.remove_class("active")

    @property
    def active(self) -> bool:
        return self.has_class("active")
