"""The CLI's progress bar for a document being read."""

from __future__ import annotations

import sys

from mlx_kv.events import IngestProgress


class ProgressBar:
    """A one-line progress bar on stderr: tokens, tokens/s, ETA."""

    def __init__(self, width: int = 30) -> None:
        self.width = width

    def __call__(self, p: IngestProgress) -> None:
        filled = int(self.width * p.fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if p.tokens_done >= p.tokens_total else ""
        print(f"\r[{bar}] {p.tokens_done}/{p.tokens_total} tokens  {p.tokens_per_s:,.0f} tok/s  ETA {p.eta_s:,.0f}s",
              end=end, file=sys.stderr, flush=True)
