"""Small text formatters shared by the dashboard widgets.

Why plain functions: every panel shows bytes, rates, levels and bars the same
way, and these are easy to test without a terminal.
"""

from __future__ import annotations

import time

from textual.content import Content

from mlx_kv.system import format_bytes

LEVEL_STYLES = {
    # pressure
    "normal": "$success",
    "warn": "bold $warning",
    # swap risk
    "low": "$success",
    "medium": "bold $warning",
    "high": "bold $error",
    # thermal
    "nominal": "$success",
    "fair": "$warning",
    "serious": "bold $error",
    "critical": "bold reverse $error",
    "unknown": "$text-muted",
}

BAR_FULL = "█"
BAR_EMPTY = "░"


def level(word: str) -> tuple[str, str]:
    """A level word with its colour, for Content.assemble."""
    return word, LEVEL_STYLES.get(word, "")


def nbytes(n: float | None) -> str:
    return format_bytes(n)


def pair(used: float | None, total: float | None) -> str:
    """'1.1/23.5 GiB' when both share a unit, else '512.0 MiB/23.5 GiB'."""
    a, b = nbytes(used), nbytes(total)
    ua, ub = a.rsplit(" ", 1)[-1], b.rsplit(" ", 1)[-1]
    if ua == ub and " " in a:
        return f"{a.rsplit(' ', 1)[0]}/{b}"
    return f"{a}/{b}"


def rate(tps: float | None, unit: str = "tok/s") -> str:
    if tps is None or tps <= 0:
        return f"– {unit}"
    if tps >= 10_000:
        return f"{tps / 1000:.0f}k {unit}"
    if tps >= 100:
        return f"{tps:.0f} {unit}"
    return f"{tps:.1f} {unit}"


def count(n: int | None) -> str:
    """12345 -> '12.3k'; keeps dashboard columns narrow."""
    if n is None:
        return "?"
    if n >= 1_000_000:
        return f"{n / 1_000_000:.2f}M"
    if n >= 10_000:
        return f"{n / 1000:.1f}k"
    return f"{n:,}"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def fraction_style(frac: float | None) -> str:
    if frac is None:
        return "$text-muted"
    if frac >= 0.95:
        return "$error"
    if frac >= 0.8:
        return "$warning"
    return "$success"


def bar(frac: float | None, width: int) -> Content:
    """A horizontal bar of ``width`` cells filled to ``frac`` (0..1)."""
    width = max(1, width)
    if frac is None:
        return Content.assemble((BAR_EMPTY * width, "$text-muted"))
    frac = min(max(frac, 0.0), 1.0)
    filled = int(round(frac * width))
    return Content.assemble(
        (BAR_FULL * filled, fraction_style(frac)),
        (BAR_EMPTY * (width - filled), "$text-muted"),
    )


def when(timestamp: float, now: float | None = None) -> str:
    """'today 14:03', '01 Dec 14:03', or '01 Dec 2025' for other years: short enough for a table column."""
    t = time.localtime(timestamp)
    today = time.localtime(now if now is not None else time.time())
    if t[:3] == today[:3]:
        return time.strftime("today %H:%M", t)
    if t.tm_year == today.tm_year:
        return time.strftime("%d %b %H:%M", t)
    return time.strftime("%d %b %Y", t)
