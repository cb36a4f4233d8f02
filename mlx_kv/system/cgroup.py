"""The memory cgroup this process lives in: its limit, what is charged to it, its pressure (Linux).

Why: in a container, a systemd scope with MemoryMax, or any cgroup with a
memory limit, the kernel's OOM killer acts when the cgroup reaches its
limit, whatever /proc/meminfo says about the machine (a 24 GB host with a
1 GB container has 20 GB "available" right up to the kill), and
/proc/pressure/memory averages over every task on the host. The guard must
see what the kernel will act on.

Both hierarchies are read: cgroup v2 (memory.max, memory.current,
memory.stat's inactive_file, memory.pressure) and v1's memory controller
(memory.limit_in_bytes, memory.usage_in_bytes, memory.stat's
hierarchical_memory_limit and total_inactive_file), on hosts that mount
both (v1 memory controller, v2 tree beside it) the pressure comes from the
process's group in the v2 tree. The limit is the tightest one on the way up
to the hierarchy's root (a limit set on a parent binds the children).
Inactive file pages are what the kernel reclaims before it kills anyone, so
they count as available, as `docker stats` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mlx_kv.system.linux import parse_psi

UNLIMITED = 1 << 60  # v1 writes 9223372036854771712 (PAGE_COUNTER_MAX pages) for "no limit"


@dataclass(frozen=True)
class CgroupMemory:
    version: int  # 1 or 2 (of the memory controller)
    path: str  # the cgroup's folder
    limit: int  # bytes: the tightest limit on the way to the root
    usage: int  # bytes charged to it, page cache included
    reclaimable: int  # inactive file pages, dropped before anything is killed
    psi: dict[str, float] = field(default_factory=dict)  # the group's memory.pressure (v2 tree), if readable

    @property
    def used(self) -> int:
        return max(0, self.usage - self.reclaimable)

    @property
    def available(self) -> int:
        return max(0, self.limit - self.used)


def parse_mountinfo(text: str) -> list[tuple[str, str, str, str]]:
    """/proc/self/mountinfo -> (mount root, mount point, fs type, super options) per line."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mounts.append((_unescape(fields[3]), _unescape(fields[4]), tail[0], tail[2]))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/self/cgroup -> {"2": path in the v2 tree, "memory": path in v1's memory hierarchy}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            out["2"] = path
        elif "memory" in controllers.split(","):
            out["memory"] = path
    return out


def cgroup_memory(read: Callable[[str], str | None], proc: str = "/proc") -> CgroupMemory | None:
    """This process's memory cgroup, if it has a memory limit; None otherwise
    (no cgroups, no limit, files unreadable): the machine's numbers apply then."""
    mounts = parse_mountinfo(read(f"{proc}/self/mountinfo") or "")
    groups = parse_proc_cgroup(read(f"{proc}/self/cgroup") or "")
    v2 = _folder(mounts, groups.get("2"), lambda kind, opts: kind == "cgroup2")
    v1 = _folder(mounts, groups.get("memory"), lambda kind, opts: kind == "cgroup" and "memory" in opts.split(","))
    psi = parse_psi(read(f"{v2[1]}/memory.pressure") or "") if v2 else {}
    if v2 and read(f"{v2[1]}/memory.current") is not None:
        found = _read_v2(read, *v2, psi)
        if found is not None:
            return found
    if v1:
        return _read_v1(read, v1[1], psi)
    return None


def _folder(mounts: list, path: str | None, wanted: Callable[[str, str], bool]) -> tuple[str, str] | None:
    """(the hierarchy's mount point, the group's folder) for a /proc/self/cgroup path."""
    if path is None:
        return None
    for root, point, kind, opts in mounts:
        if not wanted(kind, opts):
            continue
        relative = path[len(root):] if root != "/" and path.startswith(root) else path
        return point, (point.rstrip("/") + "/" + relative.strip("/")).rstrip("/")
    return None


def _read_v2(read: Callable[[str], str | None], top: str, folder: str, psi: dict) -> CgroupMemory | None:
    usage = _int(read(f"{folder}/memory.current"))
    limit, here = None, folder
    while True:  # the tightest memory.max from here up to the mount point
        value = _int(read(f"{here}/memory.max"))
        if value is not None and (limit is None or value < limit):
            limit = value
        if len(here) <= len(top) or "/" not in here:
            break
        here = here.rsplit("/", 1)[0]
    if usage is None or limit is None or limit >= UNLIMITED:
        return None
    stat = _stat(read(f"{folder}/memory.stat"))
    return CgroupMemory(2, folder, limit, usage, stat.get("inactive_file", 0), psi)


def _read_v1(read: Callable[[str], str | None], folder: str, psi: dict) -> CgroupMemory | None:
    usage = _int(read(f"{folder}/memory.usage_in_bytes"))
    stat = _stat(read(f"{folder}/memory.stat"))
    limits = [v for v in (_int(read(f"{folder}/memory.limit_in_bytes")), stat.get("hierarchical_memory_limit"))
              if v is not None]
    if usage is None or not limits or min(limits) >= UNLIMITED:
        return None
    return CgroupMemory(1, folder, min(limits), usage, stat.get("total_inactive_file", stat.get("inactive_file", 0)),
                        psi)


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    word = text.strip()
    if word == "max":
        return UNLIMITED
    try:
        return int(word)
    except ValueError:
        return None


def _stat(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _unescape(field_text: str) -> str:
    """mountinfo writes spaces, tabs and backslashes in paths as octal escapes (\\040)."""
    return field_text.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
