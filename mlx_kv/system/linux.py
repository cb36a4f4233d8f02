"""Linux: /proc/meminfo, PSI, /proc/vmstat, thermal zones and cpufreq caps."""

from __future__ import annotations

import glob
import re
from typing import Callable

from mlx_kv.system.rules import pressure_from_available, pressure_from_psi, worst
from mlx_kv.system.reading import PRESSURES, THERMALS

# Fallbacks when a thermal zone has no usable trip points (degrees C).
_TEMP_FAIR = 80.0
_TEMP_SERIOUS = 90.0
_TEMP_CRITICAL = 100.0


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


def read_text(path: str) -> str | None:
    """The file's text, or None if it cannot be read (missing, permission, ...)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


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


def linux_fields(read: Callable[[str], str | None], proc: str, sys_root: str,
                 listdir: Callable[[str], list[str]] | None, page_size: int) -> dict:
    """One Linux reading as SystemSample fields (plus ``swap_out_bytes`` for the rate)."""
    raw: dict = {}
    out: dict = {"raw": raw}
    mem = parse_meminfo(read(f"{proc}/meminfo") or "")
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

    psi_text = read(f"{proc}/pressure/memory")
    psi = parse_psi(psi_text) if psi_text else {}
    if "some_avg10" in psi or "full_avg10" in psi:
        raw["psi_some_avg10"] = psi.get("some_avg10")
        raw["psi_full_avg10"] = psi.get("full_avg10")
        out["pressure"] = pressure_from_psi(psi.get("some_avg10"), psi.get("full_avg10"))
        raw["pressure_source"] = "psi"
    else:
        out["pressure"] = pressure_from_available(available, total)
        raw["pressure_source"] = "meminfo" if out["pressure"] != "unknown" else None

    _apply_cgroup(out, raw, read, proc)

    vm = parse_vmstat(read(f"{proc}/vmstat") or "")
    if "pswpout" in vm:
        raw["pswpout"] = vm["pswpout"]
        out["swap_out_bytes"] = vm["pswpout"] * page_size

    out["thermal"], traw = linux_thermal(sys_root, read, listdir)
    raw.update(traw)
    return out


def _apply_cgroup(out: dict, raw: dict, read: Callable[[str], str | None], proc: str) -> None:
    """Inside a memory-limited cgroup its limit is the RAM that counts, and
    its pressure (PSI, or the share of the limit still free: without swap
    the OOM killer comes before the stalls) joins the machine's."""
    from mlx_kv.system.cgroup import cgroup_memory  # (it reads PSI with parse_psi from here)

    group = cgroup_memory(read, proc)
    if group is None:
        return
    raw["cgroup"] = {"version": group.version, "path": group.path, "limit": group.limit, "usage": group.usage,
                     "reclaimable": group.reclaimable, "psi_some_avg10": group.psi.get("some_avg10"),
                     "psi_full_avg10": group.psi.get("full_avg10")}
    out["ram_total"] = min(out.get("ram_total") or group.limit, group.limit)
    out["ram_used"] = min(group.used, out["ram_total"])
    levels = [out.get("pressure", "unknown"), pressure_from_available(group.available, group.limit)]
    if "some_avg10" in group.psi or "full_avg10" in group.psi:
        levels.append(pressure_from_psi(group.psi.get("some_avg10"), group.psi.get("full_avg10")))
    pressure = worst(levels, PRESSURES)
    if pressure != out.get("pressure"):
        raw["pressure_source"] = "cgroup"
    out["pressure"] = pressure
