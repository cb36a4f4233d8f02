"""RAM, swap, memory-pressure and thermal probes for the dashboard and the memory guard.

Why a module of its own: the heap keeps the KV cache inside a budget, but the
budget only means something next to what the machine is doing: whether the
OS is about to swap, or the SoC is throttling.  These probes read that without
sudo and without extra dependencies, on macOS and Linux, and answer
``"unknown"`` rather than raising anywhere else (a dashboard must never crash
because a file is missing).

Nothing here imports MLX: MLX memory numbers come from an optional callable
the engine passes in (``SystemProbe(mlx_memory=session.mlx_memory)``).

Every reader is injectable (paths, a ``read_text`` function, a ``sysctl``
function, a ``thermal_state`` function, a clock) so tests feed fake ``/proc``
files and fake ``sysctl`` outputs.

Swap risk is computed from memory pressure *and the swap-out rate*, not from
swap used: macOS and Linux keep cold pages in swap for hours after the
pressure that put them there has passed, so "swap used" alone says little
about whether the next allocation will swap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

PRESSURES = ("normal", "warn", "critical", "unknown")
SWAP_RISKS = ("low", "medium", "high", "unknown")
THERMALS = ("nominal", "fair", "serious", "critical", "unknown")

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

# macOS kern.memorystatus_vm_pressure_level values.
_DARWIN_PRESSURE = {1: "normal", 2: "warn", 4: "critical"}
# NSProcessInfoThermalState values.
_DARWIN_THERMAL = {0: "nominal", 1: "fair", 2: "serious", 3: "critical"}

# Linux fallbacks when a thermal zone has no usable trip points (degrees C).
_TEMP_FAIR = 80.0
_TEMP_SERIOUS = 90.0
_TEMP_CRITICAL = 100.0


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


# --------------------------------------------------------------------------
# Pure decision rules (tested directly)
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Parsers for the raw text formats (tested with fake content)
# --------------------------------------------------------------------------


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` -> {key: bytes}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+(kB))?", line)
        if m:
            value = int(m.group(2))
            out[m.group(1)] = value * 1024 if m.group(3) else value
    return out


def parse_psi(text: str) -> dict[str, float]:
    """``/proc/pressure/memory`` -> {"some_avg10": .., "full_avg10": .., ...}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        for item in parts[1:]:
            key, _, value = item.partition("=")
            try:
                out[f"{parts[0]}_{key}"] = float(value)
            except ValueError:
                continue
    return out


def parse_vmstat(text: str) -> dict[str, int]:
    """``/proc/vmstat`` -> {counter: value}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


_SIZE_UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_darwin_swapusage(text: str) -> tuple[int, int] | None:
    """``sysctl -n vm.swapusage`` ("total = 2048.00M  used = 1.25M  free = ...") -> (used, total)."""
    values = {}
    for key, number, unit in re.findall(r"(total|used|free)\s*=\s*([\d.]+)([BKMGT]?)", text):
        values[key] = int(float(number) * _SIZE_UNITS.get(unit or "B", 1))
    if "total" not in values or "used" not in values:
        return None
    return values["used"], values["total"]


def parse_darwin_pressure(text: str) -> str:
    """``sysctl -n kern.memorystatus_vm_pressure_level`` -> level word."""
    try:
        return _DARWIN_PRESSURE.get(int(text.strip()), "unknown")
    except (TypeError, ValueError):
        return "unknown"


def darwin_thermal_word(state: int | None) -> str:
    """NSProcessInfoThermalState integer -> level word."""
    if state is None:
        return "unknown"
    return _DARWIN_THERMAL.get(int(state), "unknown")


# --------------------------------------------------------------------------
# Default readers (the real machine)
# --------------------------------------------------------------------------


def read_text(path: str) -> str | None:
    """The file's text, or None if it cannot be read (missing, permission, ...)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def run_sysctl(name: str) -> str | None:
    """``sysctl -n NAME`` output, or None (no sysctl, unknown key, timeout)."""
    try:
        res = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() or None


def darwin_thermal_state() -> int | None:
    """``NSProcessInfo.processInfo.thermalState`` through libobjc (public API, no sudo).

    Returns the raw NSProcessInfoThermalState (0 nominal .. 3 critical) or None.
    """
    if sys.platform != "darwin":
        return None
    try:
        reader = _darwin_thermal_reader()
        return reader() if reader is not None else None
    except Exception:  # noqa: BLE001 - a probe never raises
        return None


@functools.lru_cache(maxsize=1)
def _darwin_thermal_reader() -> Callable[[], int] | None:
    """Resolve the Objective-C calls once; the probe runs every second."""
    try:
        objc = ctypes.cdll.LoadLibrary(ctypes.util.find_library("objc") or "libobjc.dylib")
        ctypes.cdll.LoadLibrary(
            ctypes.util.find_library("Foundation")
            or "/System/Library/Frameworks/Foundation.framework/Foundation"
        )
        objc.objc_getClass.restype = ctypes.c_void_p
        objc.objc_getClass.argtypes = [ctypes.c_char_p]
        objc.sel_registerName.restype = ctypes.c_void_p
        objc.sel_registerName.argtypes = [ctypes.c_char_p]
        # objc_msgSend must be called through a prototype with the exact
        # signature of the method (arm64 has no variadic fallback).
        send_obj = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
            ("objc_msgSend", objc)
        )
        send_long = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)(
            ("objc_msgSend", objc)
        )
        cls = objc.objc_getClass(b"NSProcessInfo")
        if not cls:
            return None
        sel_info = objc.sel_registerName(b"processInfo")
        sel_state = objc.sel_registerName(b"thermalState")

        def read() -> int:
            info = send_obj(cls, sel_info)
            if not info:
                raise OSError("NSProcessInfo.processInfo returned nil")
            return int(send_long(info, sel_state))

        return read
    except Exception:  # noqa: BLE001 - a probe never raises
        return None


def _psutil_memory() -> tuple[int, int, int, int, int | None] | None:
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


# --------------------------------------------------------------------------
# Linux thermal
# --------------------------------------------------------------------------


def linux_thermal(
    root: str = "/sys",
    read: Callable[[str], str | None] = read_text,
    listdir: Callable[[str], list[str]] | None = None,
) -> tuple[str, dict]:
    """Thermal level from thermal zones (temp vs trip points) and cpufreq caps.

    A zone at or above its ``passive`` trip is being throttled ("fair"), at a
    ``hot`` trip "serious", at ``critical`` "critical".  Zones without trip
    points use fixed temperatures.  cpufreq: when a cooling device lowers a
    CPU's ``scaling_max_freq`` below ``cpuinfo_max_freq`` the CPU is capped
    ("fair", "serious" below 70%).  ``scaling_cur_freq / scaling_max_freq`` is
    reported raw but not used alone: idle governors lower it all the time.
    """
    glob_fn = listdir or (lambda pattern: sorted(glob.glob(pattern)))
    raw: dict = {}
    levels: list[str] = []
    temps: list[float] = []
    for zone in glob_fn(f"{root}/class/thermal/thermal_zone*"):
        t = _read_int(read, f"{zone}/temp")
        if t is None or t <= 0:
            continue
        temp = t / 1000.0 if t > 1000 else float(t)
        temps.append(temp)
        trips: dict[str, float] = {}
        for i in range(32):
            kind = read(f"{zone}/trip_point_{i}_type")
            if kind is None:
                break
            tt = _read_int(read, f"{zone}/trip_point_{i}_temp")
            if tt is None or tt <= 0:
                continue
            ttemp = tt / 1000.0 if tt > 1000 else float(tt)
            kind = kind.strip()
            trips[kind] = min(trips.get(kind, ttemp), ttemp)
        if trips:
            level = "nominal"
            if "passive" in trips and temp >= trips["passive"]:
                level = "fair"
            if "hot" in trips and temp >= trips["hot"]:
                level = "serious"
            if "critical" in trips and temp >= trips["critical"]:
                level = "critical"
        else:
            level = (
                "critical"
                if temp >= _TEMP_CRITICAL
                else "serious" if temp >= _TEMP_SERIOUS else "fair" if temp >= _TEMP_FAIR else "nominal"
            )
        levels.append(level)
    if temps:
        raw["max_temp_c"] = max(temps)

    caps: list[float] = []
    cur_ratios: list[float] = []
    for cpu in glob_fn(f"{root}/devices/system/cpu/cpu[0-9]*"):
        hw_max = _read_int(read, f"{cpu}/cpufreq/cpuinfo_max_freq")
        sc_max = _read_int(read, f"{cpu}/cpufreq/scaling_max_freq")
        cur = _read_int(read, f"{cpu}/cpufreq/scaling_cur_freq")
        if hw_max and sc_max:
            caps.append(sc_max / hw_max)
        if sc_max and cur:
            cur_ratios.append(cur / sc_max)
    if caps:
        cap = min(caps)
        raw["cpu_freq_cap"] = cap
        levels.append("serious" if cap < 0.7 else "fair" if cap < 0.95 else "nominal")
    if cur_ratios:
        raw["cpu_freq_ratio"] = sum(cur_ratios) / len(cur_ratios)
    return worst(levels, THERMALS), raw


def _read_int(read: Callable[[str], str | None], path: str) -> int | None:
    text = read(path)
    if text is None:
        return None
    try:
        return int(text.strip().split()[0])
    except (ValueError, IndexError):
        return None


# --------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------


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
        memory: Callable[[], tuple | None] = _psutil_memory,
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
        raw: dict = {}
        out: dict = {"raw": raw}
        mem = parse_meminfo(self.read(f"{self.proc}/meminfo") or "")
        total = mem.get("MemTotal")
        available = mem.get("MemAvailable")
        if available is None and "MemFree" in mem:
            available = mem["MemFree"] + mem.get("Buffers", 0) + mem.get("Cached", 0)
        if total:
            out["ram_total"] = total
            if available is not None:
                out["ram_used"] = max(0, total - available)
        if "SwapTotal" in mem:
            out["swap_total"] = mem["SwapTotal"]
            out["swap_used"] = max(0, mem["SwapTotal"] - mem.get("SwapFree", mem["SwapTotal"]))

        psi_text = self.read(f"{self.proc}/pressure/memory")
        psi = parse_psi(psi_text) if psi_text else {}
        if "some_avg10" in psi or "full_avg10" in psi:
            raw["psi_some_avg10"] = psi.get("some_avg10")
            raw["psi_full_avg10"] = psi.get("full_avg10")
            out["pressure"] = pressure_from_psi(psi.get("some_avg10"), psi.get("full_avg10"))
            raw["pressure_source"] = "psi"
        else:
            out["pressure"] = pressure_from_available(available, total)
            raw["pressure_source"] = "meminfo" if out["pressure"] != "unknown" else None

        vm = parse_vmstat(self.read(f"{self.proc}/vmstat") or "")
        if "pswpout" in vm:
            raw["pswpout"] = vm["pswpout"]
            out["swap_out_bytes"] = vm["pswpout"] * self.page_size

        out["thermal"], traw = linux_thermal(self.sys_root, self.read, self.listdir)
        raw.update(traw)
        return out

    def _darwin(self) -> dict:
        raw: dict = {}
        out: dict = {"raw": raw}
        level = self.sysctl("kern.memorystatus_vm_pressure_level")
        raw["vm_pressure_level"] = level
        out["pressure"] = parse_darwin_pressure(level) if level is not None else "unknown"
        swap = self.sysctl("vm.swapusage")
        parsed = parse_darwin_swapusage(swap) if swap else None
        if parsed:
            out["swap_used"], out["swap_total"] = parsed
        mem_total = self.sysctl("hw.memsize")
        if mem_total and mem_total.strip().isdigit():
            out["ram_total"] = int(mem_total.strip())
        mem = self.memory()
        if mem:
            ram_used, ram_total, swap_used, swap_total, sout = mem
            out.setdefault("ram_total", ram_total)
            out["ram_used"] = ram_used
            out.setdefault("swap_used", swap_used)
            out.setdefault("swap_total", swap_total)
            if sout is not None:
                out["swap_out_bytes"] = sout
        state = self.thermal_state()
        raw["thermal_state"] = state
        out["thermal"] = darwin_thermal_word(state)
        return out

    def _other(self) -> dict:
        out: dict = {"raw": {}}
        mem = self.memory()
        if mem:
            ram_used, ram_total, swap_used, swap_total, sout = mem
            out.update(ram_used=ram_used, ram_total=ram_total, swap_used=swap_used, swap_total=swap_total)
            out["pressure"] = pressure_from_available(ram_total - ram_used, ram_total)
            if sout is not None:
                out["swap_out_bytes"] = sout
        return out

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


_default_probe: SystemProbe | None = None


def sample() -> SystemSample:
    """Sample this machine with a process-wide probe (keeps the swap-out rate's state)."""
    global _default_probe
    if _default_probe is None:
        _default_probe = SystemProbe()
    return _default_probe.sample()


def format_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'; None -> '?'. Shared by the CLI and the dashboard."""
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
