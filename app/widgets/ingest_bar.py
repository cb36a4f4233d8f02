"""The /load progress bar: tokens, tokens/s and ETA."""

from __future__ import annotations

from pathlib import Path

from app import format as F
from app.widgets.progress_line import ProgressLine
from mlx_kv.events import IngestProgress


class IngestBar(ProgressLine):
    prefix = "ingest"

    def start(self, source: str) -> None:
        self.source = source
        self.set_line(name=f"loading {Path(source).name}", stats="reading…  (Esc stops)")

    def show(self, p: IngestProgress) -> None:
        self.set_line(done=p.tokens_done, total=p.tokens_total, stats=(
            f"{F.count(p.tokens_done)}/{F.count(p.tokens_total)} tok · "
            f"{F.rate(p.tokens_per_s)} · ETA {F.duration(p.eta_s)}"))
