"""GGUF files (llama.cpp's format) as mlx-lm models: read, check, convert.

`--model FILE.gguf` converts the file once into the user's cache
(`converted_folder`) and loads the folder from there; `mlx-kv convert`
writes such a folder wherever asked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from mlx_kv.gguf.convert import convert_gguf, model_config
from mlx_kv.gguf.reader import GGUFError, GGUFFile, read_gguf

__all__ = ["GGUFError", "GGUFFile", "convert_gguf", "converted_folder", "model_config", "read_gguf",
           "tenths_reporter"]


def converted_folder(source: Path, progress: Callable[[str], None] | None = None) -> Path:
    """The cached conversion of `source`, made on first use (a changed file
    gets a new one: the cache key holds its path, size and mtime)."""
    from mlx_kv.paths import models_dir

    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    out = models_dir() / f"{source.stem}-{key}"
    if (out / "config.json").is_file():
        return out
    read_gguf(source)  # a damaged file fails here, before any note about converting it
    if progress is not None:
        progress(f"converting {source.name} to MLX once (into {out.parent})")
    try:
        convert_gguf(source, out, progress=tenths_reporter(source.name, progress), note=progress)
    except GGUFError:
        if (out / "config.json").is_file():  # another process converted it meanwhile
            return out
        raise
    return out


def tenths_reporter(label: str, progress: Callable[[str], None] | None):
    """A (done, total, what) callback that reports every 10% as one line."""
    if progress is None:
        return None
    last = [-1]

    def report(done: int, total: int, what: str) -> None:
        tenth = 10 * done // max(1, total)
        if tenth != last[0]:
            last[0] = tenth
            progress(f"converting {label}: {10 * tenth}% ({done}/{total} tensors)")

    return report
