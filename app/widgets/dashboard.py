"""The live dashboard beside the chat: system, heap, drift, pillars, layers.

Collapsible: F2 (or the command palette) hides it to give the chat the full
width; each section is a bordered panel so it reads at a glance.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll

from app.widgets.drift_panel import DriftPanel
from app.widgets.heap_panel import HeapPanel
from app.widgets.layer_bars import LayerBars
from app.widgets.pillar_list import PillarList
from app.widgets.pillar_strip import PillarStrip
from app.widgets.system_panel import SystemPanel
from mlx_kv.events import HeapStats, Throughput
from mlx_kv.system import SystemSample


class Dashboard(VerticalScroll):
    DEFAULT_CSS = """
    Dashboard { width: 40%; min-width: 42; max-width: 52; }
    Dashboard > * { border: round $primary 50%; border-title-color: $accent; padding: 0 1; }
    Dashboard.-hidden { display: none; }
    """

    def compose(self) -> ComposeResult:
        yield SystemPanel(id="system-panel")
        yield HeapPanel(id="heap-panel")
        yield DriftPanel(id="drift-panel")
        yield PillarStrip(id="pillar-strip")
        yield PillarList(id="pillar-list")
        yield LayerBars(id="layer-bars")

    def show_sample(self, sample: SystemSample) -> None:
        self.query_one(SystemPanel).show(sample)

    def show_stats(self, heap: HeapStats | None, throughput: Throughput | None, mlx: dict | None) -> None:
        self.query_one(HeapPanel).show(heap, throughput, mlx)
        self.query_one(PillarStrip).show(heap)
        self.query_one(PillarList).show(heap.pillars if heap else [])
        self.query_one(LayerBars).show(heap.layers if heap else [])

    def toggle(self) -> bool:
        """Hide or show; returns True when visible."""
        self.toggle_class("-hidden")
        return not self.has_class("-hidden")
