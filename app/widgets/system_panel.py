"""RAM, swap and swap risk, memory pressure, thermal state: what the machine is doing."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from app import format as F
from mlx_kv.system import SystemSample, unknown_sample

BAR = 10
LABEL = 9  # label column width; lines stay within 36 cells


class SystemPanel(Static):
    DEFAULT_CSS = """
    SystemPanel { height: auto; }
    """

    def on_mount(self) -> None:
        self.border_title = "System"
        self.show(unknown_sample())

    def show(self, s: SystemSample) -> None:
        self.sample = s
        self.update(self.render_sample(s))

    @staticmethod
    def render_sample(s: SystemSample) -> Content:
        ram_frac = s.ram_fraction
        swap_frac = s.swap_used / s.swap_total if s.swap_used is not None and s.swap_total else None
        rate = "?" if s.swap_out_rate is None else f"{F.nbytes(s.swap_out_rate)}/s"
        temp = s.raw.get("max_temp_c") if isinstance(s.raw, dict) else None
        label = lambda text: (text.ljust(LABEL), "bold")  # noqa: E731
        lines = [
            Content.assemble(label("RAM"), F.bar(ram_frac, BAR), f" {F.pair(s.ram_used, s.ram_total)}"),
            Content.assemble(label("Swap"), F.bar(swap_frac, BAR), f" {F.pair(s.swap_used, s.swap_total)}"),
            Content.assemble(label("Risk"), "swap risk ", F.level(s.swap_risk)),
            Content.assemble(" " * LABEL, ("swap-out ", "$text-muted"), rate),
            Content.assemble(label("Pressure"), F.level(s.pressure)),
            Content.assemble(
                label("Thermal"),
                F.level(s.thermal),
                f" ({temp:.0f}°C)" if isinstance(temp, (int, float)) else "",
            ),
        ]
        return Content("\n").join(lines)
