"""Where mlx-kv keeps what it makes on the user's machine.

The cache holds what can be rebuilt (converted models, profiles): it never
goes into the checkout or the installed package, which may be read-only or
shared. `MLX_KV_CACHE_DIR` moves it (tests point it at a temporary folder).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("MLX_KV_CACHE_DIR"):
        return Path(os.environ["MLX_KV_CACHE_DIR"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mlx-kv"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlx-kv"


def models_dir() -> Path:
    """Converted models (GGUF files turned into mlx-lm folders)."""
    return cache_dir() / "models"
