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
