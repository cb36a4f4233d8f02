"""Reading a document the user wants to load: UTF-8 text or Markdown.

Binary files, undecodable bytes and empty files are refused with one clear
line; `errors="replace"` loads undecodable text anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlx_kv.errors import UserError

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text", ".log", ".csv", ".json", ".py"}
ERROR_MODES = ("strict", "replace")


def looks_like_path(source: str) -> bool:
    if "\n" in source or len(source) > 4096:
        return False
    return Path(source).suffix.lower() in TEXT_SUFFIXES or os.sep in source or source.startswith("~")


def read_document(source: str, errors: str = "strict") -> tuple[str, str]:
    """(text, display name) for a file path or for the text itself."""
    if errors not in ERROR_MODES:
        raise UserError(f"errors: must be one of {', '.join(ERROR_MODES)}, got {errors!r}")
    # no path holds a newline or a NUL (expanduser raises on "~\x00")
    path = _as_path(source) if len(source) <= 4096 and "\n" not in source and "\x00" not in source else None
    kind = _kind(path) if path is not None else None
    if kind == "file":
        return decode_document(_read_bytes(path), path.name, errors), path.name
    if kind == "dir":
        raise UserError(f"document: {source} is a folder, not a file")
    if looks_like_path(source):
        raise UserError(f"document: file {source} does not exist")
    if not source.strip():
        raise UserError("document: the text is empty")
    return source, "text"


def _as_path(source: str) -> Path:
    try:
        return Path(source).expanduser()
    except RuntimeError:  # "~name" for a user that does not exist
        return Path(source)


def _kind(path: Path) -> str | None:
    try:
        return "file" if path.is_file() else "dir" if path.is_dir() else None
    except (OSError, ValueError):  # too long for a file name, or a NUL byte in it
        return None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"document: cannot read {path}: {exc.strerror or exc}") from None


def decode_document(data: bytes, name: str, errors: str = "strict") -> str:
    if not data.strip():
        raise UserError(f"document: {name} is empty")
    if errors == "strict" and _is_binary(data):
        raise UserError(f"document: {name} looks like a binary file, not text (use --errors replace to load it anyway)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"document: {name} is not valid UTF-8 (byte {exc.start}); use --errors replace to load it anyway"
        ) from None
    if not text.strip():
        raise UserError(f"document: {name} has no text")
    return text


def _is_binary(data: bytes) -> bool:
    sample = data[:8192]
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return control > len(sample) * 0.1
