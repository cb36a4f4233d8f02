"""Probes read fake /proc, /sys and sysctl outputs; every level word is reachable; nothing raises."""

from __future__ import annotations

import fnmatch
import sys

import pytest

from mlx_kv import system as S

MEMINFO = """\
MemTotal:       16000000 kB
MemFree:         1000000 kB
MemAvailable:    8000000 kB
Buffers:          100000 kB
Cached:          2000000 kB
SwapTotal:       4000000 kB
SwapFree:        3000000 kB
HugePages_Total:       0
"""

PSI_CALM = """\
some avg10=0.00 avg60=0.10 avg300=0.00 total=12345
full avg10=0.00 avg60=0.00 avg300=0.00 total=100
"""
PSI_WARN = "some avg10=12.50 avg60=3.00 avg300=1.00 total=1\nfull avg10=0.20 avg60=0 avg300=0 total=1\n"
PSI_CRIT = "some avg10=55.00 avg60=3.00 avg300=1.00 total=1\nfull avg10=20.00 avg60=0 avg300=0 total=1\n"


def vmstat(pswpout: int) -> str:
    return f"nr_free_pages 1000\npswpin 10\npswpout {pswpout}\npgfault 99\n"


class FakeFS:
    """A dict of path -> text standing in for /proc and /sys."""

    def __init__(self, files: dict[str, str]):
        self.files = dict(files)

    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def listdir(self, pattern: str) -> list[str]:
        dirs = {p.rsplit("/", 1)[0] for p in self.files}
        # include parents too (cpu dirs are two levels above their files)
        for p in list(dirs):
            while "/" in p:
                p = p.rsplit("/", 1)[0]
                dirs.add(p)
        return sorted(d for d in dirs if fnmatch.fnmatch(d, pattern))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def linux_probe(fs: FakeFS, clock: Clock | None = None) -> S.SystemProbe:
    return S.SystemProbe(
        "linux", read=fs.read, listdir=fs.listdir, page_size=4096, clock=clock or Clock()
    )


def base_files(**extra: str) -> dict[str, str]:
    files = {
        "/proc/meminfo": MEMINFO,
        "/proc/pressure/memory": PSI_CALM,
        "/proc/vmstat": vmstat(0),
    }
    files.update(extra)
    return files


# -- pure rules -------------------------------------------------------------


@pytest.mark.parametrize(
    "pressure,rate,expected",
    [
        ("unknown", None, "unknown"),
        ("normal", None, "low"),
        ("normal", 0.0, "low"),
        ("unknown", 0.0, "low"),
        ("normal", 2 * S.SWAPOUT_MEDIUM, "medium"),
        ("warn", 0.0, "medium"),
        ("warn", 2 * S.SWAPOUT_MEDIUM, "high"),
        ("normal", 2 * S.SWAPOUT_HIGH, "high"),
        ("critical", 0.0, "high"),
        ("critical", None, "high"),
    ],
)
def test_swap_risk_combines_pressure_and_rate(pressure, rate, expected):
    assert S.swap_risk(pressure, rate) == expected


def test_swap_used_alone_does_not_raise_risk():
    # Lots of swap used but no pressure and nothing being paged out: low risk.
    fs = FakeFS(base_files(**{"/proc/meminfo": MEMINFO.replace("SwapFree:        3000000", "SwapFree:              0")}))
    clock = Clock()
    probe = linux_probe(fs, clock)
    probe.sample()
    clock.t += 1
    s = probe.sample()
    assert s.swap_used == 4000000 * 1024
    assert s.swap_risk == "low"


def test_psi_thresholds():
    assert S.pressure_from_psi(None, None) == "unknown"
    assert S.pressure_from_psi(0.0, 0.0) == "normal"
    assert S.pressure_from_psi(12.0, 0.0) == "warn"
    assert S.pressure_from_psi(0.0, 2.0) == "warn"
    assert S.pressure_from_psi(45.0, 0.0) == "critical"
    assert S.pressure_from_psi(1.0, 15.0) == "critical"


# -- Linux ------------------------------------------------------------------


def test_linux_meminfo_psi_and_swapout_rate():
    fs = FakeFS(base_files())
    clock = Clock()
    probe = linux_probe(fs, clock)
    first = probe.sample()
    assert first.ram_total == 16000000 * 1024
    assert first.ram_used == (16000000 - 8000000) * 1024
    assert first.swap_total == 4000000 * 1024
    assert first.swap_used == 1000000 * 1024
    assert first.pressure == "normal"
    assert first.swap_out_rate is None  # no previous sample yet
    assert first.swap_risk == "low"
    assert first.raw["psi_some_avg10"] == 0.0

    # 2 s later, 1024 pages (4 MiB) swapped out: 2 MiB/s -> medium risk.
    fs.files["/proc/vmstat"] = vmstat(1024)
    clock.t += 2
    second = probe.sample()
    assert second.swap_out_rate == pytest.approx(2 * 1024 * 1024)
    assert second.swap_risk == "medium"

    # Pressure warn plus paging out -> high.
    fs.files["/proc/pressure/memory"] = PSI_WARN
    fs.files["/proc/vmstat"] = vmstat(2048)
    clock.t += 2
    third = probe.sample()
    assert third.pressure == "warn"
    assert third.swap_risk == "high"


def test_linux_critical_psi():
    probe = linux_probe(FakeFS(base_files(**{"/proc/pressure/memory": PSI_CRIT})))
    s = probe.sample()
    assert s.pressure == "critical"
    assert s.swap_risk == "high"


def test_linux_without_psi_falls_back_to_available_share():
    files = base_files()
    del files["/proc/pressure/memory"]
    files["/proc/meminfo"] = MEMINFO.replace("MemAvailable:    8000000", "MemAvailable:     500000")
    s = linux_probe(FakeFS(files)).sample()
    assert s.pressure == "critical"
    assert s.raw["pressure_source"] == "meminfo"


def test_linux_nothing_readable_is_unknown():
    s = linux_probe(FakeFS({})).sample()
    assert (s.ram_used, s.ram_total, s.swap_used) == (None, None, None)
    assert s.pressure == "unknown"
    assert s.swap_risk == "unknown"
    assert s.thermal == "unknown"


def test_linux_garbage_files_do_not_raise():
    files = {
        "/proc/meminfo": "\x00\xff garbage\nMemTotal: lots kB\n",
        "/proc/pressure/memory": "some avg10=abc\nfull\n",
        "/proc/vmstat": "pswpout x\n",
        "/sys/class/thermal/thermal_zone0/temp": "hot\n",
        "/sys/class/thermal/thermal_zone0/trip_point_0_type": "passive\n",
        "/sys/class/thermal/thermal_zone0/trip_point_0_temp": "??\n",
    }
    s = linux_probe(FakeFS(files)).sample()
    assert s.pressure == "unknown"
    assert s.thermal == "unknown"


def zone(n: int, temp_mc: int, trips: list[tuple[str, int]]) -> dict[str, str]:
    d = {f"/sys/class/thermal/thermal_zone{n}/temp": f"{temp_mc}\n"}
    for i, (kind, t) in enumerate(trips):
        d[f"/sys/class/thermal/thermal_zone{n}/trip_point_{i}_type"] = kind + "\n"
        d[f"/sys/class/thermal/thermal_zone{n}/trip_point_{i}_temp"] = f"{t}\n"
    return d


TRIPS = [("passive", 85000), ("hot", 95000), ("critical", 105000)]


@pytest.mark.parametrize(
    "temp,expected",
    [(50000, "nominal"), (86000, "fair"), (96000, "serious"), (106000, "critical")],
)
def test_linux_thermal_trip_points(temp, expected):
    s = linux_probe(FakeFS(base_files(**zone(0, temp, TRIPS)))).sample()
    assert s.thermal == expected
    assert s.raw["max_temp_c"] == temp / 1000


def test_linux_thermal_worst_zone_wins_and_no_trip_fallback():
    files = base_files(**zone(0, 40000, TRIPS), **zone(1, 92000, []))
    s = linux_probe(FakeFS(files)).sample()
    assert s.thermal == "serious"  # zone1: 92 C with no trips -> fixed thresholds


def cpu(n: int, hw_max: int, sc_max: int, cur: int) -> dict[str, str]:
    base = f"/sys/devices/system/cpu/cpu{n}/cpufreq"
    return {
        f"{base}/cpuinfo_max_freq": f"{hw_max}\n",
        f"{base}/scaling_max_freq": f"{sc_max}\n",
        f"{base}/scaling_cur_freq": f"{cur}\n",
    }


def test_linux_cpufreq_cap_means_throttling_but_idle_does_not():
    idle = linux_probe(FakeFS(base_files(**cpu(0, 3000000, 3000000, 800000)))).sample()
    assert idle.thermal == "nominal"
    assert idle.raw["cpu_freq_ratio"] == pytest.approx(800000 / 3000000)
    capped = linux_probe(FakeFS(base_files(**cpu(0, 3000000, 2400000, 2400000)))).sample()
    assert capped.thermal == "fair"
    hard = linux_probe(FakeFS(base_files(**cpu(0, 3000000, 1500000, 1500000), **cpu(1, 3000000, 3000000, 3000000)))).sample()
    assert hard.thermal == "serious"


# -- macOS ------------------------------------------------------------------


def darwin_probe(outputs: dict[str, str | None], thermal: int | None, memory=None) -> S.SystemProbe:
    return S.SystemProbe(
        "darwin",
        sysctl=lambda name: outputs.get(name),
        thermal_state=lambda: thermal,
        memory=lambda: memory,
        clock=Clock(),
    )


@pytest.mark.parametrize(
    "level,pressure", [("1", "normal"), ("2", "warn"), ("4", "critical"), ("7", "unknown"), ("x", "unknown")]
)
def test_darwin_pressure_levels(level, pressure):
    s = darwin_probe({"kern.memorystatus_vm_pressure_level": level}, 0).sample()
    assert s.pressure == pressure


@pytest.mark.parametrize("state,word", [(0, "nominal"), (1, "fair"), (2, "serious"), (3, "critical"), (None, "unknown"), (9, "unknown")])
def test_darwin_thermal_states(state, word):
    assert darwin_probe({}, state).sample().thermal == word


def test_darwin_swapusage_and_memsize():
    outputs = {
        "kern.memorystatus_vm_pressure_level": "1",
        "vm.swapusage": "total = 2048.00M  used = 1024.50M  free = 1023.50M  (encrypted)",
        "hw.memsize": "17179869184",
    }
    s = darwin_probe(outputs, 0, memory=(8 << 30, 16 << 30, 0, 0, 1000)).sample()
    assert s.ram_total == 17179869184
    assert s.ram_used == 8 << 30
    assert s.swap_total == 2048 << 20
    assert s.swap_used == int(1024.5 * (1 << 20))
    assert s.swap_risk == "low"


def test_darwin_rate_from_cumulative_swapouts():
    clock = Clock()
    counter = {"sout": 0}
    probe = S.SystemProbe(
        "darwin",
        sysctl=lambda name: "4" if name == "kern.memorystatus_vm_pressure_level" else None,
        thermal_state=lambda: None,
        memory=lambda: (1, 2, 0, 0, counter["sout"]),
        clock=clock,
    )
    probe.sample()
    counter["sout"] = 64 << 20
    clock.t += 1
    s = probe.sample()
    assert s.swap_out_rate == pytest.approx(64 << 20)
    assert s.swap_risk == "high"


def test_darwin_nothing_works_is_unknown():
    s = darwin_probe({}, None).sample()
    assert (s.pressure, s.swap_risk, s.thermal) == ("unknown", "unknown", "unknown")


def test_parse_swapusage_garbage():
    assert S.parse_darwin_swapusage("nonsense") is None


# -- robustness ---------------------------------------------------------------


def test_reader_that_raises_is_contained():
    def boom(path):
        raise RuntimeError("disk on fire")

    s = S.SystemProbe("linux", read=boom, listdir=lambda p: [], clock=Clock()).sample()
    assert s.pressure == "unknown" and s.thermal == "unknown"
    assert "disk on fire" in s.raw["error"]


def test_unknown_platform_uses_memory_callable():
    s = S.SystemProbe("plan9", memory=lambda: (50, 100, 0, 0, None), clock=Clock()).sample()
    assert s.ram_used == 50 and s.pressure == "normal"
    s = S.SystemProbe("plan9", memory=lambda: (90, 100, 0, 0, None), clock=Clock()).sample()
    assert s.pressure == "warn"
    s = S.SystemProbe("plan9", memory=lambda: (99, 100, 0, 0, None), clock=Clock()).sample()
    assert s.pressure == "critical"
    s = S.SystemProbe("plan9", memory=lambda: None, clock=Clock()).sample()
    assert s.pressure == "unknown" and s.thermal == "unknown"


def test_mlx_memory_callable_is_optional_and_contained():
    s = S.SystemProbe("plan9", memory=lambda: None, mlx_memory=lambda: {"active": 1, "peak": 2, "cache": 3}).sample()
    assert s.mlx == {"active": 1, "peak": 2, "cache": 3}

    def bad():
        raise RuntimeError("no mlx")

    assert S.SystemProbe("plan9", memory=lambda: None, mlx_memory=bad).sample().mlx is None


def test_darwin_thermal_state_off_macos_is_none():
    if sys.platform != "darwin":
        assert S.darwin_thermal_state() is None


def test_real_machine_sample_never_raises():
    s = S.SystemProbe().sample()
    assert s.pressure in S.PRESSURES
    assert s.swap_risk in S.SWAP_RISKS
    assert s.thermal in S.THERMALS


def test_module_does_not_import_mlx():
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", "import mlx_kv.system, sys; print('mlx' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_format_bytes():
    assert S.format_bytes(None) == "?"
    assert S.format_bytes(512) == "512 B"
    assert S.format_bytes(1536) == "1.5 KiB"
    assert S.format_bytes(3 << 30) == "3.0 GiB"
