"""What every writer of user files needs when a process dies or a disk fills.

Why one module: session files, the app's store, model conversion and the
recovery tier's spill file all write to disk; each must tell a full disk
from a bug in one line, leave no half-written file behind when its process
is killed (temporary names carry the writer's pid, so the next writer knows
which leftovers are orphans), and make its renames durable.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (ours counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's process, or a number too large to be one
    return True


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make the renames inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """A write that failed for want of room: ENOSPC/EDQUOT/EFBIG, SQLite's
    "disk is full", or MLX's "Unable to write" (it keeps no errno) where the
    folder has (almost) nothing free."""
    if getattr(exc, "errno", None) in _FULL:
        return True
    text = str(exc)
    if "disk is full" in text:
        return True
    if "Unable to write" in text and folder is not None:
        free = free_bytes(folder)
        return free is not None and free < 1 << 20
    return False


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Free bytes for this user in `folder` (its nearest existing parent), or None."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def room_note(folder: str | os.PathLike) -> str:
    """' (3.1 MiB free)', or '' when it cannot be read."""
    free = free_bytes(folder)
    return "" if free is None else f" ({free / 2**20:.1f} MiB free)"
