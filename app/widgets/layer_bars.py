"""Per-layer budget bars: how full each layer's share of the heap is.

Layer-adaptive budgets give early and late layers more room than the middle
ones; the bar's length is the layer's budget relative to the largest one, and
its fill is how much of that budget is in use.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from app import format as F
from mlx_kv.events import LayerUsage

WIDTH = 20
SPARK = "▁▂▃▄▅▆▇█"


class LayerBars(Static):
    DEFAULT_CSS = """
    LayerBars { height: auto; }
    """

    max_rows = 16

    def on_mount(self) -> None:
        self.border_title = "Layers: kept / budget"
        self.show([])

    def show(self, layers: list[LayerUsage]) -> None:
        self.layer_usage = list(layers)
        self.update(self.render_layers(self.layer_usage, self.max_rows))

    @staticmethod
    def render_layers(layers: list[LayerUsage], max_rows: int = 16) -> Content:
        if not layers:
            return Content.assemble(("no layers yet", "$text-muted"))
        biggest = max(l.budget for l in layers) or 1
        if len(layers) > max_rows:
            # Compact: one column per layer; height = budget share, colour = fill.
            cells = []
            for l in layers:
                share = l.budget / biggest
                fill = l.kept / l.budget if l.budget else None
                cells.append((SPARK[min(len(SPARK) - 1, int(share * (len(SPARK) - 1)))], F.fraction_style(fill)))
            return Content.assemble(
                ("budget/fill ", "$text-muted"), *cells, "\n", ("L0", "$text-muted"),
                " " * max(1, len(layers) + 12 - 2 - len(f"L{len(layers) - 1}")), (f"L{len(layers) - 1}", "$text-muted"),
            )
        lines = []
        for i, l in enumerate(layers):
            span = max(1, int(round(WIDTH * l.budget / biggest)))
            fill = l.kept / l.budget if l.budget else None
            lines.append(
                Content.assemble(
                    (f"L{i:<3}", "bold"),
                    F.bar(fill, span),
                    " " * (WIDTH - span + 1),
                    f"{F.count(l.kept)}/{F.count(l.budget)}",
                )
            )
        return Content("\n").join(lines)
