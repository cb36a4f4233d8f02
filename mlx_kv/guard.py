"""Memory guard: shrink the heap before the OS swaps, grow it back after.

The guard reads probe samples (mlx_kv.system). Pressure at "warn" or
"critical", or a swap-out rate above `swap_out_limit`, tightens the heap
budget by `shrink` (again at each pressured sample, down to `floor` of the
user's budget); `calm_samples` consecutive calm samples restore the user's
budget. Each change is returned as a one-line event for the dashboard and
the log; the session keeps answering throughout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("mlx_kv.guard")


@dataclass
class GuardEvent:
    action: str  # "tighten" | "relax"
    budget_tokens: int
    reason: str

    def __str__(self) -> str:
        return f"memory guard: {self.action} heap to {self.budget_tokens} tokens/layer ({self.reason})"


@dataclass
class MemoryGuard:
    session: Any  # anything with .cache (HeapKVCache layers) and set_layer_budgets(list[int])
    shrink: float = 0.5
    floor: float = 0.125
    swap_out_limit: float = 1 * 2**20  # bytes/s
    calm_samples: int = 5
    events: list[GuardEvent] = field(default_factory=list)
    _user_budgets: list[int] | None = None
    _calm: int = 0

    @property
    def tightened(self) -> bool:
        return self._user_budgets is not None

    def observe(self, sample: Any) -> GuardEvent | None:
        """Feed one probe sample; returns the change it caused, if any."""
        reason = self._pressure_reason(sample)
        if reason:
            self._calm = 0
            return self._tighten(reason)
        if self.tightened:
            self._calm += 1
            if self._calm >= self.calm_samples:
                return self._relax()
        return None

    def _pressure_reason(self, sample: Any) -> str | None:
        if getattr(sample, "pressure", "unknown") in ("warn", "critical"):
            return f"memory pressure {sample.pressure}"
        rate = getattr(sample, "swap_out_rate", None)
        if rate is not None and rate > self.swap_out_limit:
            return f"swapping out {rate / 2**20:.1f} MiB/s"
        return None

    def _tighten(self, reason: str) -> GuardEvent | None:
        current = [layer.budget for layer in self.session.cache]
        if self._user_budgets is None:
            self._user_budgets = current
        minimum = [max(layer.sinks + layer.window + 1, int(user * self.floor))
                   for layer, user in zip(self.session.cache, self._user_budgets)]
        target = [max(lo, int(b * self.shrink)) for b, lo in zip(current, minimum)]
        if target == current:
            return None
        self.session.set_layer_budgets(target)
        return self._record(GuardEvent("tighten", target[0], reason))

    def _relax(self) -> GuardEvent:
        budgets, self._user_budgets, self._calm = self._user_budgets, None, 0
        self.session.set_layer_budgets(budgets)
        return self._record(GuardEvent("relax", budgets[0], "pressure passed"))

    def _record(self, event: GuardEvent) -> GuardEvent:
        self.events.append(event)
        log.warning(str(event))
        return event
