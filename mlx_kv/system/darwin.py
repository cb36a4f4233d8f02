"""macOS: sysctl (memory pressure level, swap usage, RAM size) and the SoC's
thermal state through ``NSProcessInfo`` (Objective-C over ctypes, no PyObjC)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
import subprocess
import sys
from typing import Callable

# kern.memorystatus_vm_pressure_level values.
_DARWIN_PRESSURE = {1: "normal", 2: "warn", 4: "critical"}
# NSProcessInfoThermalState values.
_DARWIN_THERMAL = {0: "nominal", 1: "fair", 2: "serious", 3: "critical"}
_SIZE_UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}  # vm.swapusage's (binary)


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


def darwin_fields(sysctl: Callable[[str], str | None], memory: Callable[[], tuple | None],
                  thermal_state: Callable[[], int | None]) -> dict:
    """One macOS reading as SystemSample fields (plus ``swap_out_bytes`` for the rate)."""
    raw: dict = {}
    out: dict = {"raw": raw}
    level = sysctl("kern.memorystatus_vm_pressure_level")
    raw["vm_pressure_level"] = level
    out["pressure"] = parse_darwin_pressure(level) if level is not None else "unknown"
    swap = sysctl("vm.swapusage")
    parsed = parse_darwin_swapusage(swap) if swap else None
    if parsed:
        out["swap_used"], out["swap_total"] = parsed
    mem_total = sysctl("hw.memsize")
    if mem_total and mem_total.strip().isdigit():
        out["ram_total"] = int(mem_total.strip())
    mem = memory()
    if mem:
        ram_used, ram_total, swap_used, swap_total, sout = mem
        out.setdefault("ram_total", ram_total)
        out["ram_used"] = ram_used
        out.setdefault("swap_used", swap_used)
        out.setdefault("swap_total", swap_total)
        if sout is not None:
            out["swap_out_bytes"] = sout
    state = thermal_state()
    raw["thermal_state"] = state
    out["thermal"] = darwin_thermal_word(state)
    return out
