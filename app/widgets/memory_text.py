"""A document (or the conversation) as the heap holds it now, token by token.

Why shades: every (layer, KV head) pair keeps its own tokens, so a token can
be kept by all of the model, by part of it, or by none. The text is drawn in
four shades of that share (all / at least half / some / none, struck through),
pillars (tokens most pairs rank among their most attended) in bold colour,
tokens that most of the pairs keeping them hold quantized (the cold tier)
underlined, and tokens gone from memory but on disk (the recovery tier) in
italics.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from mlx_kv.events import SpanMemory

STYLES = {
    "all": "$text",
    "most": "$text 80%",
    "some": "$text 50%",
    "none": "$text 25% strike",
    "pillar": "bold $warning",
    "cold": "underline",
    "spilled": "italic $secondary",
}
ROLE = {"user": "you", "assistant": "reply", "document": "document"}


def shade(kept: float) -> str:
    if kept >= 0.999:
        return "all"
    if kept >= 0.5:
        return "most"
    if kept > 0:
        return "some"
    return "none"


def token_style(kept: float, cold: float, spilled: float, pillar: bool) -> str:
    style = STYLES["pillar"] if pillar else STYLES[shade(kept)]
    if kept > 0 and cold >= kept / 2:
        style += " " + STYLES["cold"]
    if kept == 0 and spilled > 0:
        style = STYLES["spilled"] + " strike" if spilled < 0.5 else STYLES["spilled"]
    return style


def render_spans(spans: list[SpanMemory], pillars: set[int] = frozenset(), headings: bool = False) -> Content:
    """The spans' text with each token styled; runs of one style are merged."""
    parts: list[tuple[str, str]] = []
    for span in spans:
        t = span.tokens
        if headings:
            head = f"── {ROLE.get(span.kind, span.kind)} · {span.length:,} tokens · {span.kept:.0%} kept ──"
            parts.append(("\n" if parts else "", ""))
            parts.append((head + "\n", "bold $accent"))
        if t is None:
            parts.append(("(no detail yet)\n", "$text-muted"))
            continue
        run, run_style = [], None
        for i, text in enumerate(t.texts):
            style = token_style(t.kept[i], t.cold[i], t.spilled[i], span.start + i in pillars)
            if style != run_style and run:
                parts.append(("".join(run), run_style))
                run = []
            run_style = style
            run.append(text)
        if run:
            parts.append(("".join(run), run_style))
    return Content.assemble(*parts) if parts else Content.assemble(("nothing read yet", "$text-muted"))


def legend() -> Content:
    return Content.assemble(
        ("kept by: ", "$text-muted"), ("all", STYLES["all"]), " · ", ("≥ half", STYLES["most"]), " · ",
        ("some", STYLES["some"]), " · ", ("none", STYLES["none"]), ("  of the (layer, KV head) pairs  ", "$text-muted"),
        ("pillar", STYLES["pillar"]), "  ", ("cold (quantized)", STYLES["cold"]), "  ",
        ("on disk (spilled)", STYLES["spilled"]),
    )


class MemoryText(Static):
    DEFAULT_CSS = """
    MemoryText { height: auto; padding: 0 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.spans: list[SpanMemory] = []
        self.pillars: frozenset[int] = frozenset()
        self._shown: tuple | None = None

    def show(self, spans: list[SpanMemory], pillars: set[int] = frozenset(), headings: bool = False) -> bool:
        """Redraw when what is held changed; True if it did."""
        key = (tuple((s.start, s.stop, s.tokens) for s in spans), frozenset(pillars), headings)
        if key == self._shown:
            return False
        self._shown = key
        self.spans, self.pillars = list(spans), frozenset(pillars)
        self.update(render_spans(self.spans, self.pillars, headings))
        return True
