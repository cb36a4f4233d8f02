"""The Linux probe inside a memory-limited cgroup: fake cgroup files (v1, v2,
nested limits, containers), then a real cgroup where this machine allows one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_kv import system as S
from mlx_kv.system.cgroup import parse_mountinfo, parse_proc_cgroup
from test_system import Clock, FakeFS, base_files

MOUNTS_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
MOUNTS_V1 = ("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
             "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
GiB = 1 << 30
PSI_QUIET = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


def v2_files(current: int, limit: str = str(GiB), psi: str = PSI_QUIET, inactive: int = 0, **extra: str):
    group = "/sys/fs/cgroup/user.slice/chat.scope"
    return base_files(**{
        "/proc/self/mountinfo": MOUNTS_V2, "/proc/self/cgroup": "0::/user.slice/chat.scope\n",
        f"{group}/memory.current": f"{current}\n", f"{group}/memory.max": f"{limit}\n",
        f"{group}/memory.stat": f"anon {current}\ninactive_file {inactive}\n", f"{group}/memory.pressure": psi,
        "/sys/fs/cgroup/user.slice/memory.max": "max\n", **extra})


def sample(files: dict[str, str]):
    fs = FakeFS(files)
    return S.SystemProbe("linux", read=fs.read, listdir=fs.listdir, page_size=4096, clock=Clock()).sample()


def test_mountinfo_and_proc_cgroup_are_read_as_the_kernel_writes_them():
    assert parse_mountinfo(MOUNTS_V1)[0] == ("/", "/sys/fs/cgroup/memory", "cgroup", "rw,memory")
    assert parse_mountinfo("1 2 0:1 / /a\\040b rw - cgroup2 none rw\n")[0][1] == "/a b"
    assert parse_mountinfo("garbage\n\n") == []
    assert parse_proc_cgroup("0::/a\n4:memory:/b\n3:cpu,cpuacct:/c\n") == {"2": "/a", "memory": "/b"}


def test_a_limited_v2_group_is_the_ram_that_counts():
    s = sample(v2_files(current=300 << 20, inactive=100 << 20))
    assert s.ram_total == GiB and s.ram_used == 200 << 20  # inactive file pages are reclaimable
    assert s.pressure == "normal" and s.raw["cgroup"]["version"] == 2


@pytest.mark.parametrize("current, level", [(int(0.80 * GiB), "normal"), (int(0.90 * GiB), "warn"),
                                            (int(0.97 * GiB), "critical")])
def test_nearing_the_limit_is_pressure_though_the_machine_is_calm(current, level):
    """The host has 8 of 16 GB available and calm PSI; the group is what the OOM killer watches."""
    s = sample(v2_files(current=current))
    assert s.pressure == level
    assert s.raw["pressure_source"] == ("psi" if level == "normal" else "cgroup")


def test_the_groups_own_psi_counts_and_the_machines_still_does():
    stalled = "some avg10=45.00 avg60=3.00 avg300=1.00 total=1\nfull avg10=2.00 avg60=0 avg300=0 total=1\n"
    assert sample(v2_files(current=100 << 20, psi=stalled)).pressure == "critical"
    machine_stalled = v2_files(current=100 << 20)
    machine_stalled["/proc/pressure/memory"] = stalled
    assert sample(machine_stalled).pressure == "critical"


def test_a_parents_limit_binds_the_child():
    files = v2_files(current=600 << 20, limit="max")
    files["/sys/fs/cgroup/user.slice/memory.max"] = f"{700 << 20}\n"
    s = sample(files)
    assert s.ram_total == 700 << 20 and s.pressure == "warn"


def test_no_limit_or_no_cgroups_leaves_the_machines_numbers():
    for files in (v2_files(current=100 << 20, limit="max"), base_files(),
                  base_files(**{"/proc/self/mountinfo": MOUNTS_V2, "/proc/self/cgroup": "garbage"})):
        s = sample(files)
        assert s.ram_total == 16000000 * 1024 and "cgroup" not in s.raw


def test_a_v1_memory_controller_with_the_v2_tree_beside_it():
    group = "/sys/fs/cgroup/memory/docker/abc"
    files = base_files(**{
        "/proc/self/mountinfo": MOUNTS_V1, "/proc/self/cgroup": "4:memory:/docker/abc\n0::/docker/abc\n",
        f"{group}/memory.usage_in_bytes": f"{540 << 20}\n",
        f"{group}/memory.limit_in_bytes": "9223372036854771712\n",
        f"{group}/memory.stat": f"hierarchical_memory_limit {600 << 20}\ntotal_inactive_file {20 << 20}\n",
        "/sys/fs/cgroup/unified/docker/abc/memory.pressure": PSI_QUIET})
    s = sample(files)
    assert s.ram_total == 600 << 20 and s.ram_used == 520 << 20 and s.pressure == "warn"
    assert s.raw["cgroup"]["version"] == 1 and s.raw["cgroup"]["psi_some_avg10"] == 0.0


def test_damaged_cgroup_files_never_raise():
    for bad in ("", "x", "-1", "max max", "\0"):
        files = v2_files(current=1)
        for key in list(files):
            if key.startswith("/sys/fs/cgroup"):
                files[key] = bad
        s = sample(files)
        assert s.pressure in S.PRESSURES


PROBE = """
import json, sys
import numpy as np
from mlx_kv.system import SystemProbe
probe, held, out = SystemProbe(), [], []
while True:
    s = probe.sample()
    out.append({"pressure": s.pressure, "total": s.ram_total, "used": s.ram_used, "held_mb": len(held) * 16})
    if s.pressure != "normal" or len(held) > 400:
        break
    held.append(np.ones(2 << 20))  # 16 MB more, touched
print(json.dumps(out))
"""


def test_a_real_limited_cgroup_is_seen_before_the_oom_killer_acts():
    """A process in a 256 MB group allocates 16 MB at a time and samples the
    probe between steps: the probe reports the group's limit as its RAM and
    says warn while the process is still alive, well before the limit."""
    from cgroups import limited_cgroup, why_not

    group = limited_cgroup("mlx-kv-test-probe", 256 << 20)
    if group is None:
        pytest.skip(why_not)
    try:
        proc = group.spawn([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[1])
        out, err = proc.communicate(timeout=120)
        events = group.events()
    finally:
        group.remove()
    assert proc.returncode == 0, err[-500:]
    trace = json.loads(out)
    assert all(step["total"] == 256 << 20 for step in trace), trace[:2]
    assert trace[-1]["pressure"] == "warn", trace[-3:]
    assert trace[-1]["used"] < group.limit and events["oom_kill"] == 0
