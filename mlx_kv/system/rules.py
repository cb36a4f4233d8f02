"""The pure decisions: a pressure level from PSI or free memory, a swap risk
from pressure and the swap-out rate (tested directly, no machine needed)."""

from __future__ import annotations

# Linux PSI thresholds (percent of wall time in the last 10 s during which
# some / all runnable tasks were stalled waiting for memory).
PSI_WARN_SOME = 10.0
PSI_WARN_FULL = 1.0
PSI_CRITICAL_SOME = 40.0
PSI_CRITICAL_FULL = 10.0

# Fallback when PSI is not readable (old kernels, some containers): the share
# of RAM still available.
AVAILABLE_WARN = 0.15
AVAILABLE_CRITICAL = 0.05

# Swap-out rates (bytes/s) that move the swap risk up.
SWAPOUT_MEDIUM = 1 << 20  # 1 MiB/s: the OS is paging out steadily
SWAPOUT_HIGH = 16 << 20  # 16 MiB/s: thrashing territory


def swap_risk(pressure: str, swap_out_rate: float | None) -> str:
    """How likely the next allocations are to be served by swap.

    Pressure says the OS is short of memory; a positive swap-out rate says it
    is already paging out.  Both together are worse than either alone.
    """
    rate = swap_out_rate
    if pressure == "unknown" and rate is None:
        return "unknown"
    rate = rate or 0.0
    if pressure == "critical" or rate >= SWAPOUT_HIGH:
        return "high"
    if pressure == "warn" and rate >= SWAPOUT_MEDIUM:
        return "high"
    if pressure == "warn" or rate >= SWAPOUT_MEDIUM:
        return "medium"
    return "low"


def pressure_from_psi(some_avg10: float | None, full_avg10: float | None) -> str:
    """Linux pressure level from PSI memory stall percentages (avg10)."""
    if some_avg10 is None and full_avg10 is None:
        return "unknown"
    some = some_avg10 or 0.0
    full = full_avg10 or 0.0
    if some >= PSI_CRITICAL_SOME or full >= PSI_CRITICAL_FULL:
        return "critical"
    if some >= PSI_WARN_SOME or full >= PSI_WARN_FULL:
        return "warn"
    return "normal"


def pressure_from_available(available: int | None, total: int | None) -> str:
    """Fallback pressure level from the share of RAM still available."""
    if available is None or not total:
        return "unknown"
    share = available / total
    if share < AVAILABLE_CRITICAL:
        return "critical"
    if share < AVAILABLE_WARN:
        return "warn"
    return "normal"


def worst(levels: list[str], order: tuple[str, ...]) -> str:
    """The most severe known level in ``levels`` ('unknown' if none is known)."""
    known = [lvl for lvl in levels if lvl in order and lvl != "unknown"]
    if not known:
        return "unknown"
    return max(known, key=order.index)
