"""The session file: a checksummed, versioned wrapper around a heap snapshot.

Layout: one header line `MLXKV-SESSION <version> sha256=<hex> bytes=<n>\\n`
followed by the safetensors payload mlx-lm's save_prompt_cache writes.
Writes go to a temporary file in the same folder, are fsynced, and then
replace the target atomically; the previous save is kept as `<name>.bak`.
A file whose header, length or checksum does not match is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

from mlx_kv.errors import UserError

MAGIC = "MLXKV-SESSION"
VERSION = 1
_HEADER = re.compile(rb"^MLXKV-SESSION (\d+) sha256=([0-9a-f]{64}) bytes=(\d+)\n$")


def write_session_file(path: str | os.PathLike, write_payload: Callable[[str], None]) -> None:
    """`write_payload(tmp_path)` writes the safetensors payload; this wraps and commits it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, payload_path = tempfile.mkstemp(dir=target.parent, prefix=".payload-", suffix=".safetensors")
    os.close(fd)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".session")
    os.close(fd)
    try:
        write_payload(payload_path)
        data = Path(payload_path).read_bytes()
        header = f"{MAGIC} {VERSION} sha256={hashlib.sha256(data).hexdigest()} bytes={len(data)}\n".encode()
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if target.exists() and _is_valid(target):
            os.replace(target, backup_path(target))
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, payload_path):
            if os.path.exists(leftover):
                os.unlink(leftover)


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
        return f"is truncated ({len(data)} of {size} bytes)"
    if hashlib.sha256(data).hexdigest() != digest:
        return "is corrupted (checksum mismatch)"
    return None


def _is_valid(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return _problem(f.readline(200), f.read()) is None
    except OSError:
        return False
