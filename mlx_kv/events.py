"""Plain data the engine hands to its callers (CLI, TUI, benchmarks).

These types carry no MLX arrays, so the UI can hold them without touching
MLX and a fake engine in tests can build them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IngestProgress:
    """One progress report of a chunked document prefill."""

    tokens_done: int
    tokens_total: int
    tokens_per_s: float
    eta_s: float

    @property
    def fraction(self) -> float:
        return self.tokens_done / self.tokens_total if self.tokens_total else 1.0


@dataclass(frozen=True)
class IngestResult:
    tokens: int
    seconds: float
    source: str


@dataclass(frozen=True)
class Pillar:
    """A kept token that many queries attend to."""

    position: int
    text: str
    score: float


@dataclass(frozen=True)
class LayerUsage:
    kept: int
    budget: int
    nbytes: int


@dataclass(frozen=True)
class HeapStats:
    """A snapshot of the heap for dashboards; every number is read, not estimated."""

    policy: str
    budget_tokens: int
    budget_bytes: int
    nbytes: int
    tokens_seen: int
    tokens_kept: int
    sinks: int
    young: int
    intermediate: int
    tenured: int
    evictions: int
    promotions: int
    compactions: int
    layers: list[LayerUsage] = field(default_factory=list)
    pillars: list[Pillar] = field(default_factory=list)
    cold: int = 0  # intermediate tokens stored quantized (per layer, averaged)
    cold_bits: int | None = None


@dataclass(frozen=True)
class Throughput:
    prefill_tps: float
    decode_tps: float


@dataclass(frozen=True)
class TokenMemory:
    """Per token of a span: its text and how much of the heap still holds it.

    Each share is over every (layer, KV head) pair, because every pair picks
    its own tokens: 1.0 means every pair keeps the token, 0.0 that none does.
    """

    texts: tuple[str, ...]
    kept: tuple[float, ...]  # share of pairs that keep the token in memory
    cold: tuple[float, ...]  # share of pairs that keep it quantized (the cold tier); part of `kept`
    spilled: tuple[float, ...]  # share of pairs that hold it on disk (the recovery tier); not in `kept`


@dataclass(frozen=True)
class SpanMemory:
    """One turn's tokens in the heap: a document, a message's prompt or a reply.

    `start`/`stop` are token positions (what the heap calls a token's
    original position); `turn` indexes the transcript entry the span feeds.
    `kept` is the mean over its tokens of the share of (layer, KV head) pairs
    keeping each one, which is also the share of the span each pair still
    holds on average (every pair keeps as many tokens as the others).
    """

    kind: str  # "document", "user" (a message and its template) or "assistant"
    source: str  # a document's name; "" for chat turns
    turn: int
    start: int
    stop: int
    kept: float
    tokens: TokenMemory | None = None  # per-token detail, when it was asked for

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def evicted(self) -> float:
        return 1.0 - self.kept


@dataclass(frozen=True)
class MemoryMap:
    """What the heap still holds of each turn; `pairs` = layers x KV heads."""

    tokens_seen: int
    layers: int
    heads: int
    spans: tuple[SpanMemory, ...] = ()

    @property
    def pairs(self) -> int:
        return self.layers * self.heads


class DownloadNote(str):
    """A download progress note that is also a number.

    Loading reports through `progress(text)` callbacks that print lines; a
    caller that draws a bar reads `fraction` and `total_bytes` instead of
    parsing the text, and every other caller still gets the same string.
    """

    def __new__(cls, text: str, source: str = "", fraction: float | None = None,
                total_bytes: int | None = None) -> "DownloadNote":
        note = super().__new__(cls, text)
        note.source, note.fraction, note.total_bytes = source, fraction, total_bytes
        return note
