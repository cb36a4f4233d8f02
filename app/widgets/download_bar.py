"""The model-loading bar: a hub download's progress, or a load in progress.

Why its own bar: fetching a model can take minutes, and mlx_kv.models
reports a download in tenths (DownloadNote); a bar says more than ten lines
in the chat.
"""

from __future__ import annotations

from app.widgets.progress_line import ProgressLine


class DownloadBar(ProgressLine):
    prefix = "download"

    def show(self, model: str, fraction: float | None, text: str = "") -> None:
        """`fraction` None: loading, size unknown (an indeterminate bar)."""
        self.model = model
        self.fraction = fraction
        done = None if fraction is None else round(100 * fraction)
        self.set_line(name=f"model {model}", done=done, total=None if fraction is None else 100,
                      stats=text or "loading…")
