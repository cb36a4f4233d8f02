"""The top pillar tokens with their text: what the model keeps looking at."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from mlx_kv.events import Pillar


class PillarList(Static):
    DEFAULT_CSS = """
    PillarList { height: auto; }
    """

    top = 8

    def on_mount(self) -> None:
        self.border_title = "Top pillars"
        self.show([])

    def show(self, pillars: list[Pillar]) -> None:
        self.pillars = sorted(pillars, key=lambda p: -p.score)[: self.top]
        self.update(self.render_pillars(self.pillars))

    @staticmethod
    def render_pillars(pillars: list[Pillar]) -> Content:
        if not pillars:
            return Content.assemble(("none yet", "$text-muted"))
        lines = []
        for rank, p in enumerate(pillars, 1):
            text = " ".join(p.text.split()) or "⏎"
            text = "".join(ch if ch.isprintable() else "?" for ch in text)
            if len(text) > 16:
                text = text[:15] + "…"
            lines.append(
                Content.assemble(
                    (f"{rank:>2} ", "$text-muted"),
                    (f"@{p.position:<8,}", "$text-muted"),
                    (f"{text!r:<18}", "bold"),
                    f" {p.score:.2f}",
                )
            )
        return Content("\n").join(lines)
