"""One reading of the machine, and the words its levels are spelled in."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

PRESSURES = ("normal", "warn", "critical", "unknown")
SWAP_RISKS = ("low", "medium", "high", "unknown")
THERMALS = ("nominal", "fair", "serious", "critical", "unknown")


@dataclass(frozen=True)
class SystemSample:
    """One reading of the machine.  Sizes in bytes, ``None`` where unreadable."""

    time: float
    ram_used: int | None
    ram_total: int | None
    swap_used: int | None
    swap_total: int | None
    swap_out_rate: float | None  # bytes/s since the previous sample; None on the first
    pressure: str  # normal | warn | critical | unknown
    swap_risk: str  # low | medium | high | unknown
    thermal: str  # nominal | fair | serious | critical | unknown
    mlx: dict | None = None  # {"active", "peak", "cache"} bytes, from the engine
    raw: dict = field(default_factory=dict)  # the readings the levels came from

    @property
    def ram_fraction(self) -> float | None:
        if self.ram_used is None or not self.ram_total:
            return None
        return self.ram_used / self.ram_total


def unknown_sample(now: float | None = None) -> SystemSample:
    """A sample where nothing could be read (the dashboard's initial state)."""
    return SystemSample(
        time=time.time() if now is None else now,
        ram_used=None,
        ram_total=None,
        swap_used=None,
        swap_total=None,
        swap_out_rate=None,
        pressure="unknown",
        swap_risk="unknown",
        thermal="unknown",
    )


def format_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'; None -> '?': sizes as the dashboard shows them."""
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
