"""Real memory-limited cgroups for tests and scripts/memory_pressure.py (Linux, root).

`limited_cgroup(name, limit)` makes a group with a hard memory limit in
whichever hierarchy holds the memory controller (v2's memory.max, or v1's
memory.limit_in_bytes with swap off for the group), plus, on hosts that
mount the v2 tree beside v1, a v2 group of the same name so the group has
its own memory.pressure. `group.spawn(cmd)` starts a process inside.
Without root or a writable hierarchy it returns None and `why_not` says why.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mlx_kv.system.cgroup import parse_mountinfo

why_not = ""


class LimitedCgroup:
    def __init__(self, folders: list[Path], limit: int, version: int) -> None:
        self.folders, self.limit, self.version = folders, limit, version

    def join(self) -> None:
        """Move the calling process into the group (a preexec_fn for spawn)."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    def spawn(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(cmd, preexec_fn=self.join, **kwargs)

    def read(self, name: str) -> str:
        return (self.folders[0] / name).read_text()

    def events(self) -> dict[str, int]:
        """OOM kills and limit hits so far (v2 memory.events, v1 memory.oom_control and failcnt)."""
        if self.version == 2:
            return {k: int(v) for k, v in (line.split() for line in self.read("memory.events").splitlines())}
        oom = dict(line.split() for line in self.read("memory.oom_control").splitlines())
        return {"oom_kill": int(oom.get("oom_kill", 0)), "max": int(self.read("memory.failcnt"))}

    def remove(self) -> None:
        for folder in reversed(self.folders):
            for _ in range(50):
                try:
                    procs = (folder / "cgroup.procs").read_text().split()
                except OSError:
                    break
                if not procs:
                    break
                for pid in procs:  # strays of this group only
                    try:
                        os.kill(int(pid), 9)
                    except OSError:
                        pass
                import time

                time.sleep(0.1)
            try:
                folder.rmdir()
            except OSError:
                pass


def limited_cgroup(name: str, limit: int) -> LimitedCgroup | None:
    global why_not
    if os.geteuid() != 0:
        why_not = "creating cgroups needs root"
        return None
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    v2 = next((point for _, point, kind, _ in mounts if kind == "cgroup2"), None)
    v1 = next((point for _, point, kind, opts in mounts if kind == "cgroup" and "memory" in opts.split(",")), None)
    try:
        if v2 and "memory" in (Path(v2) / "cgroup.controllers").read_text().split():
            control = Path(v2) / "cgroup.subtree_control"
            if "memory" not in control.read_text().split():
                control.write_text("+memory")
            folder = Path(v2) / name
            folder.mkdir(exist_ok=True)
            (folder / "memory.max").write_text(str(limit))
            if (folder / "memory.swap.max").exists():
                (folder / "memory.swap.max").write_text("0")
            return LimitedCgroup([folder], limit, 2)
        if v1:
            folder = Path(v1) / name
            folder.mkdir(exist_ok=True)
            (folder / "memory.limit_in_bytes").write_text(str(limit))
            (folder / "memory.swappiness").write_text("0")
            folders = [folder]
            if v2:  # the v2 tree without the memory controller still keeps PSI per group
                pressure = Path(v2) / name
                pressure.mkdir(exist_ok=True)
                folders.append(pressure)
            return LimitedCgroup(folders, limit, 1)
    except OSError as exc:
        why_not = f"cannot make a memory cgroup here: {exc}"
        return None
    why_not = "no cgroup hierarchy with the memory controller is mounted"
    return None
