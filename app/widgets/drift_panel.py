"""Live drift: how far the heap's next-token prediction is from a full cache's.

Each sample re-reads the session's last tokens into a full (never evicting)
cache beside the heap and compares the two predictions (KL divergence, and
whether the top token agrees). It costs a prefill of that many tokens, so
the panel shows the cost and the pause the engine keeps between samples.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from app import format as F
from app.engine_worker import DRIFT_DUTY
from app.messages import DriftUpdate

LABEL = 9
MUTED = "$text-muted"
HISTORY = 8


class DriftPanel(Static):
    DEFAULT_CSS = """
    DriftPanel { height: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.samples: list[DriftUpdate] = []
        self.last: DriftUpdate | None = None

    def on_mount(self) -> None:
        self.border_title = "Drift vs full cache"
        self.update(self.render_drift(None, []))

    def show(self, update: DriftUpdate) -> None:
        self.last = update
        if update.kl is not None:
            self.samples = (self.samples + [update])[-HISTORY:]
        self.update(self.render_drift(update, self.samples))

    @staticmethod
    def render_drift(last: DriftUpdate | None, samples: list[DriftUpdate]) -> Content:
        label = lambda text: (text.ljust(LABEL), "bold")  # noqa: E731
        if last is None:
            return Content.assemble(("sampled after replies once the heap evicts", MUTED))
        lines = [Content.assemble(label("Mode"), last.mode)]
        if samples:
            s = samples[-1]
            agree = sum(x.top1_agree for x in samples) / len(samples)
            lines += [
                Content.assemble(label("KL"), f"{s.kl:.4f} nats", (f"  (mean {sum(x.kl for x in samples) / len(samples):.4f})", MUTED)),
                Content.assemble(label("Top-1"), "agrees" if s.top1_agree >= 1 else ("differs", "bold $warning"),
                                 (f"  ({agree:.0%} of {len(samples)})", MUTED)),
                Content.assemble(label("Shadow"), f"{F.count(s.tokens)} tok · {F.duration(s.seconds) if s.seconds >= 1 else f'{s.seconds:.2f}s'}",
                                 ("" if s.exact else " (last tokens only)", MUTED)),
                Content.assemble(label("Next"), f"≥ {F.duration(s.gap_s)}", (f" (≤{DRIFT_DUTY:.0%} of the time)", MUTED)),
            ]
        if last.note:
            lines.append(Content.assemble((last.note, MUTED)))
        return Content("\n").join(lines)
