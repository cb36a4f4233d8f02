"""A strip over the session's token positions: where the kept attention lands.

Cell i covers an equal slice of positions 0..tokens_seen.  S marks the sink
tokens (always kept), █ a pillar (a token most later queries attend to, shaded
by score), ▓ the recent window (the young generation), · the rest of the
stream (mostly evicted, since the budget holds a fraction of it).
"""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from mlx_kv.events import HeapStats

SINK, PILLAR, RECENT, OTHER = "S", "█", "▓", "·"


class PillarStrip(Widget):
    DEFAULT_CSS = """
    PillarStrip { height: 5; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.heap: HeapStats | None = None

    def on_mount(self) -> None:
        self.border_title = "Attention pillars"

    def show(self, heap: HeapStats | None) -> None:
        self.heap = heap
        self.refresh()

    def render(self) -> Content:
        return self.render_strip(self.heap, max(8, self.size.width or 40))

    @staticmethod
    def cells(heap: HeapStats, width: int) -> list[str]:
        """The strip's characters (no styles), one per cell."""
        seen = max(1, heap.tokens_seen)
        width = max(1, min(width, seen))
        per = seen / width
        out = [OTHER] * width
        recent_start = seen - heap.young
        for i in range(width):
            lo, hi = i * per, (i + 1) * per
            if hi > recent_start and heap.young:
                out[i] = RECENT
            if lo < heap.sinks:
                out[i] = SINK
        for p in heap.pillars:
            if 0 <= p.position < seen:
                i = min(width - 1, int(p.position / per))
                if out[i] == OTHER:
                    out[i] = PILLAR
        return out

    @classmethod
    def render_strip(cls, heap: HeapStats | None, width: int) -> Content:
        if heap is None or heap.tokens_seen == 0:
            return Content.assemble(("no tokens yet", "$text-muted"))
        chars = cls.cells(heap, width)
        top = max((p.score for p in heap.pillars), default=1.0) or 1.0
        score_at: dict[int, float] = {}
        per = max(1, heap.tokens_seen) / len(chars)
        for p in heap.pillars:
            i = min(len(chars) - 1, int(p.position / per))
            score_at[i] = max(score_at.get(i, 0.0), p.score)
        styles = {SINK: "bold $accent", RECENT: "$success", OTHER: "$text-muted"}
        parts = []
        for i, ch in enumerate(chars):
            if ch == PILLAR:
                parts.append((ch, "bold $warning" if score_at.get(i, 0) >= 0.5 * top else "$warning 60%"))
            else:
                parts.append((ch, styles[ch]))
        end = f"{heap.tokens_seen:,}"
        scale = "0" + " " * max(1, len(chars) - 1 - len(end)) + end
        legend = Content.assemble(
            (SINK, styles[SINK]), " sinks  ", (PILLAR, "bold $warning"), " pillars  ", (RECENT, styles[RECENT]), " recent"
        )
        return Content("\n").join([Content.assemble(*parts), Content.assemble((scale, "$text-muted")), legend])
