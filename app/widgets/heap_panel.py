"""The heap at work: bytes vs budget, tokens per tier, GC counters, MLX memory, speed."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from app import format as F
from mlx_kv.events import HeapStats, Throughput

BAR = 10
LABEL = 9  # label column width; lines stay within 36 cells
MUTED = "$text-muted"


def _label(text: str) -> tuple[str, str]:
    return text.ljust(LABEL), "bold"


def _pad() -> str:
    return " " * LABEL


class HeapPanel(Static):
    DEFAULT_CSS = """
    HeapPanel { height: auto; }
    """

    def on_mount(self) -> None:
        self.border_title = "KV heap"
        self.show(None, None, None)

    def show(self, heap: HeapStats | None, throughput: Throughput | None, mlx: dict | None) -> None:
        self.heap, self.throughput, self.mlx = heap, throughput, mlx
        self.update(self.render_stats(heap, throughput, mlx))

    @staticmethod
    def render_stats(heap: HeapStats | None, tp: Throughput | None, mlx: dict | None) -> Content:
        lines: list[Content] = []
        if heap is None:
            lines.append(Content.assemble(("no heap yet (loading…)", MUTED)))
        else:
            frac = heap.nbytes / heap.budget_bytes if heap.budget_bytes else None
            kept_frac = heap.tokens_kept / heap.tokens_seen if heap.tokens_seen else None
            lines += [
                Content.assemble(_label("Policy"), (heap.policy, "$accent")),
                Content.assemble(
                    _label("Budget"), f"{F.count(heap.budget_tokens)} tok · {F.nbytes(heap.budget_bytes)}"
                ),
                Content.assemble(_label("Heap"), F.bar(frac, BAR), f" {F.pair(heap.nbytes, heap.budget_bytes)}"),
                Content.assemble(_label("Seen"), f"{F.count(heap.tokens_seen)} tokens"),
                Content.assemble(
                    _label("Kept"),
                    f"{F.count(heap.tokens_kept)} tokens",
                    (f" ({kept_frac:.0%})" if kept_frac is not None else "", MUTED),
                ),
                Content.assemble(
                    _label("Tiers"), ("sinks ", MUTED), F.count(heap.sinks), ("  young ", MUTED), F.count(heap.young)
                ),
                Content.assemble(
                    _pad(), ("intermediate ", MUTED), F.count(heap.intermediate),
                    (f"  ({F.count(heap.cold)} at {heap.cold_bits}-bit)" if heap.cold_bits else "", MUTED),
                ),
                Content.assemble(_pad(), ("tenured ", MUTED), F.count(heap.tenured)),
                Content.assemble(_label("GC"), ("evictions ", MUTED), F.count(heap.evictions)),
                Content.assemble(_pad(), ("promotions ", MUTED), F.count(heap.promotions)),
                Content.assemble(_pad(), ("compactions ", MUTED), F.count(heap.compactions)),
            ]
        if mlx:
            lines += [
                Content.assemble(_label("MLX"), ("active ", MUTED), F.nbytes(mlx.get("active"))),
                Content.assemble(_pad(), ("peak ", MUTED), F.nbytes(mlx.get("peak"))),
                Content.assemble(_pad(), ("cache ", MUTED), F.nbytes(mlx.get("cache"))),
            ]
        else:
            lines.append(Content.assemble(_label("MLX"), ("?", MUTED)))
        lines += [
            Content.assemble(_label("Speed"), ("prefill ", MUTED), F.rate(tp.prefill_tps if tp else None)),
            Content.assemble(_pad(), ("decode ", MUTED), F.rate(tp.decode_tps if tp else None)),
        ]
        return Content("\n").join(lines)
