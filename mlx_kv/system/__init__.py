"""RAM, swap, memory-pressure and thermal probes for the dashboard and the memory guard.

Why a package of its own: the heap keeps the KV cache inside a budget, but
the budget only means something next to what the machine is doing: whether
the OS is about to swap, or the SoC is throttling.  These probes read that
without sudo and without extra dependencies, on macOS and Linux, and answer
``"unknown"`` rather than raising anywhere else (a dashboard must never crash
because a file is missing).

- ``reading``: what one reading is (``SystemSample``) and its level words;
- ``rules``: the pure decisions (pressure from PSI or free memory, swap risk);
- ``linux``: /proc and /sys (meminfo, PSI, vmstat, thermal zones, cpufreq);
- ``darwin``: sysctl and ``NSProcessInfo.thermalState`` through ctypes;
- ``probe``: ``SystemProbe``, which picks the platform and keeps the
  swap-out counter between samples for the rate.

Nothing here imports MLX: MLX memory numbers come from an optional callable
the engine passes in (``SystemProbe(mlx_memory=session.mlx_memory)``).  Every
reader is injectable (paths, a ``read_text`` function, a ``sysctl`` function,
a ``thermal_state`` function, a clock) so tests feed fake ``/proc`` files and
fake ``sysctl`` outputs.

Swap risk is computed from memory pressure *and the swap-out rate*, not from
swap used: macOS and Linux keep cold pages in swap for hours after the
pressure that put them there has passed, so "swap used" alone says little
about whether the next allocation will swap.
"""

from mlx_kv.system.darwin import (darwin_thermal_state, darwin_thermal_word, parse_darwin_pressure,
                                  parse_darwin_swapusage, run_sysctl)
from mlx_kv.system.linux import linux_thermal, parse_meminfo, parse_psi, parse_vmstat, read_text
from mlx_kv.system.probe import SystemProbe
from mlx_kv.system.rules import (AVAILABLE_CRITICAL, AVAILABLE_WARN, PSI_CRITICAL_FULL, PSI_CRITICAL_SOME,
                                 PSI_WARN_FULL, PSI_WARN_SOME, SWAPOUT_HIGH, SWAPOUT_MEDIUM,
                                 pressure_from_available, pressure_from_psi, swap_risk, worst)
from mlx_kv.system.reading import PRESSURES, SWAP_RISKS, THERMALS, SystemSample, format_bytes, unknown_sample

__all__ = [
    "AVAILABLE_CRITICAL", "AVAILABLE_WARN", "PRESSURES", "PSI_CRITICAL_FULL", "PSI_CRITICAL_SOME",
    "PSI_WARN_FULL", "PSI_WARN_SOME", "SWAPOUT_HIGH", "SWAPOUT_MEDIUM", "SWAP_RISKS", "THERMALS",
    "SystemProbe", "SystemSample", "darwin_thermal_state", "darwin_thermal_word", "format_bytes",
    "linux_thermal", "parse_darwin_pressure", "parse_darwin_swapusage", "parse_meminfo", "parse_psi",
    "parse_vmstat", "pressure_from_available", "pressure_from_psi", "read_text", "run_sysctl",
    "swap_risk", "unknown_sample", "worst",
]
