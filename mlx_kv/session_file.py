"""The session file: a checksummed, versioned wrapper around a heap snapshot.

Layout: one header line `MLXKV-SESSION <version> sha256=<hex> bytes=<n>\\n`
followed by the safetensors payload mlx-lm's save_prompt_cache writes.
A file whose header, length or checksum does not match is refused.

Why the write goes the way it does (a process can be killed, or the disk
fill up, at any byte of it; tests/test_kill_during_save.py and
tests/test_full_disk.py try both):

1. the payload and the wrapped file are written to temporary files in the
   same folder (`.mlxkv-tmp-<pid>-...`, with the writer's pid), and fsynced;
2. the previous save gets a second name, `<name>.bak`, by a hard link (a
   copy where links are not supported), so at no moment is there no file
   at `<name>`: a rename of the old file to .bak would open such a moment;
3. the new file is renamed over `<name>` and the folder is fsynced, so the
   rename itself survives a power cut.

Temporary files of writers that died (their pid is gone) are removed by the
next save into the same folder. A save that fails (a full disk, say) leaves
`<name>` and `<name>.bak` as they were and says so in one line.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from mlx_kv.errors import DiskFull, UserError
from mlx_kv.storage import fsync_folder, is_disk_full, pid_alive, room_note

MAGIC = "MLXKV-SESSION"
VERSION = 1
_HEADER = re.compile(rb"^MLXKV-SESSION (\d+) sha256=([0-9a-f]{64}) bytes=(\d+)\n$")
_TEMP = re.compile(r"^\.mlxkv-(?:tmp|payload|bak)-(\d+)-")  # .mlxkv-tmp-<pid>-..., the writer's pid first


def write_session_file(path: str | os.PathLike, write_payload: Callable[[str], None]) -> None:
    """`write_payload(tmp_path)` writes the safetensors payload; this wraps and commits it.

    Raises UserError (one line) when the folder cannot take the file; the
    earlier save is then untouched."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"session: cannot create the folder {target.parent}: {exc.strerror or exc}") from None
    remove_stale_temps(target.parent)
    payload_path = tmp = None
    try:
        payload_path = _temp_file(target.parent, "payload", ".safetensors")
        tmp = _temp_file(target.parent, "tmp", ".session")
        write_payload(payload_path)
        digest, size = _digest(payload_path)
        header = f"{MAGIC} {VERSION} sha256={digest} bytes={size}\n".encode()
        with open(tmp, "wb") as out, open(payload_path, "rb") as src:
            out.write(header)
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.unlink(payload_path)
        if target.exists() and _is_valid(target):
            _keep_as_backup(target)
        os.replace(tmp, target)
        fsync_folder(target.parent)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, or MLX's RuntimeError for a failed write
        _remove(tmp, payload_path)  # first, so the message tells the room there is once they are gone
        raise (DiskFull if is_disk_full(exc, target.parent) else UserError)(_save_failed(target, exc)) from None
    finally:
        _remove(tmp, payload_path)


def _remove(*paths: str | None) -> None:
    for leftover in paths:
        try:
            if leftover is not None:
                os.unlink(leftover)
        except FileNotFoundError:
            pass


def _temp_file(folder: Path, kind: str, suffix: str) -> str:
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".mlxkv-{kind}-{os.getpid()}-", suffix=suffix)
    os.close(fd)
    return name


def _digest(path: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _keep_as_backup(target: Path) -> None:
    """`<name>.bak` becomes the current file, which keeps its own name too."""
    backup = backup_path(target)
    if backup.exists() and os.path.samefile(target, backup):
        return  # a save killed after its link: they are one file already (and a rename onto it does nothing)
    staged = _temp_file(target.parent, "bak", ".session")
    os.unlink(staged)
    try:
        os.link(target, staged)
    except OSError:  # no hard links here (FAT, some network shares): a copy
        shutil.copyfile(target, staged)
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
    os.replace(staged, backup)


def _save_failed(target: Path, exc: BaseException) -> str:
    """One line on why a save failed; a full disk is said as such, with what is free."""
    intact = "; the previous save is intact" if target.exists() else ""
    if is_disk_full(exc, target.parent):
        return (f"session: cannot save {target.name}: no space left in {target.parent}{room_note(target.parent)}; "
                f"a save needs twice its size while it is written{intact}")
    text = getattr(exc, "strerror", None) or exc
    return f"session: cannot save {target.name}: {type(exc).__name__}: {text}{intact}"


def remove_stale_temps(folder: Path) -> None:
    """Temporary files of writers that were killed (their pid is gone)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _TEMP.match(name)
        if match and not pid_alive(int(match.group(1))):
            try:
                os.unlink(folder / name)
            except OSError:
                pass


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def read_session_payload(path: str | os.PathLike) -> bytes:
    """The verified payload, or a UserError saying what is wrong with the file."""
    target = Path(path)
    try:
        with open(target, "rb") as f:
            header = f.readline(200)
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"session: {target} does not exist") from None
    except OSError as exc:
        raise UserError(f"session: cannot read {target}: {exc.strerror or exc}") from None
    problem = _problem(header, data)
    if problem:
        hint = f"; the previous save is in {backup_path(target).name}" if _is_valid(backup_path(target)) else ""
        raise UserError(f"session: {target.name} {problem}, refusing to load it{hint}")
    return data


def _problem(header: bytes, data: bytes) -> str | None:
    if not header.startswith(MAGIC.encode()):
        return "is not an mlx-kv session file"
    match = _HEADER.match(header)
    if not match:
        return "has a damaged header"
    version, digest, size = int(match.group(1)), match.group(2).decode(), int(match.group(3))
    if version != VERSION:
        return f"has format version {version}, this mlx-kv reads version {VERSION}"
    if len(data) != size:
        return f"is truncated ({len(data)} of {size} bytes)" if len(data) < size else \
            f"has {len(data) - size} bytes more than its header says"
    if hashlib.sha256(data).hexdigest() != digest:
        return "is corrupted (checksum mismatch)"
    return None


def _is_valid(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return _problem(f.readline(200), f.read()) is None
    except OSError:
        return False
