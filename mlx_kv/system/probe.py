"""The probe: one sample of this machine, on whichever platform it is."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Mapping

from mlx_kv.system.darwin import darwin_fields, darwin_thermal_state, run_sysctl
from mlx_kv.system.linux import linux_fields, read_text
from mlx_kv.system.rules import pressure_from_available, swap_risk
from mlx_kv.system.reading import SystemSample


def psutil_memory() -> tuple[int, int, int, int, int | None] | None:
    """(ram_used, ram_total, swap_used, swap_total, swap_out_bytes) from psutil, if installed."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        return int(vm.total - vm.available), int(vm.total), int(sw.used), int(sw.total), int(sw.sout)
    except Exception:  # noqa: BLE001
        return None


def _page_size() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4096


def other_fields(memory: Callable[[], tuple | None]) -> dict:
    """Anywhere else: psutil's numbers, pressure from the share of RAM still free."""
    out: dict = {"raw": {}}
    mem = memory()
    if mem:
        ram_used, ram_total, swap_used, swap_total, sout = mem
        out.update(ram_used=ram_used, ram_total=ram_total, swap_used=swap_used, swap_total=swap_total)
        out["pressure"] = pressure_from_available(ram_total - ram_used, ram_total)
        if sout is not None:
            out["swap_out_bytes"] = sout
    return out


class SystemProbe:
    """Samples the machine; remembers the previous swap-out counter for the rate.

    All inputs are injectable:
      platform      "linux", "darwin" or anything else (-> psutil or unknown)
      read          path -> text or None (Linux /proc and /sys)
      proc, sys_root  roots of /proc and /sys
      sysctl        name -> output text or None (macOS)
      thermal_state () -> NSProcessInfoThermalState int or None (macOS)
      memory        () -> (ram_used, ram_total, swap_used, swap_total, swap_out_bytes) or None
                    (macOS / other platforms; default psutil)
      mlx_memory    () -> {"active", "peak", "cache"} or None (the engine's numbers)
      clock         () -> seconds, monotonic
    """

    def __init__(
        self,
        platform: str | None = None,
        *,
        read: Callable[[str], str | None] = read_text,
        proc: str = "/proc",
        sys_root: str = "/sys",
        listdir: Callable[[str], list[str]] | None = None,
        sysctl: Callable[[str], str | None] = run_sysctl,
        thermal_state: Callable[[], int | None] = darwin_thermal_state,
        memory: Callable[[], tuple | None] = psutil_memory,
        mlx_memory: Callable[[], Mapping[str, int] | None] | None = None,
        page_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.platform = platform or sys.platform
        self.read = read
        self.proc = proc
        self.sys_root = sys_root
        self.listdir = listdir
        self.sysctl = sysctl
        self.thermal_state = thermal_state
        self.memory = memory
        self.mlx_memory = mlx_memory
        self.page_size = page_size or _page_size()
        self.clock = clock
        self._last_swapout: tuple[float, int] | None = None

    # -- public --------------------------------------------------------------

    def sample(self) -> SystemSample:
        """Read everything once.  Never raises."""
        now = self.clock()
        try:
            if self.platform.startswith("linux"):
                fields = self._linux()
            elif self.platform == "darwin":
                fields = self._darwin()
            else:
                fields = self._other()
        except Exception as e:  # noqa: BLE001 - a probe never raises
            fields = {"raw": {"error": f"{type(e).__name__}: {e}"}}
        swap_out_bytes = fields.pop("swap_out_bytes", None)
        rate = self._rate(now, swap_out_bytes)
        pressure = fields.get("pressure", "unknown")
        return SystemSample(
            time=time.time(),
            ram_used=fields.get("ram_used"),
            ram_total=fields.get("ram_total"),
            swap_used=fields.get("swap_used"),
            swap_total=fields.get("swap_total"),
            swap_out_rate=rate,
            pressure=pressure,
            swap_risk=swap_risk(pressure, rate),
            thermal=fields.get("thermal", "unknown"),
            mlx=self._mlx(),
            raw=fields.get("raw", {}),
        )

    # -- platforms -----------------------------------------------------------

    def _linux(self) -> dict:
        return linux_fields(self.read, self.proc, self.sys_root, self.listdir, self.page_size)

    def _darwin(self) -> dict:
        return darwin_fields(self.sysctl, self.memory, self.thermal_state)

    def _other(self) -> dict:
        return other_fields(self.memory)

    # -- helpers -------------------------------------------------------------

    def _rate(self, now: float, swap_out_bytes: int | None) -> float | None:
        if swap_out_bytes is None:
            self._last_swapout = None
            return None
        last = self._last_swapout
        self._last_swapout = (now, swap_out_bytes)
        if last is None:
            return None
        dt = now - last[0]
        if dt <= 0:
            return None
        return max(0.0, (swap_out_bytes - last[1]) / dt)

    def _mlx(self) -> dict | None:
        if self.mlx_memory is None:
            return None
        try:
            mem = self.mlx_memory()
            return dict(mem) if mem is not None else None
        except Exception:  # noqa: BLE001
            return None
