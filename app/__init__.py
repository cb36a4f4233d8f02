"""The mlx-kv terminal app (Textual): chat, long documents, and the live memory dashboard.

Entry point: ``app.run_app(model, budget, policy, heap_options)`` (what
``mlx-kv chat`` calls). It is resolved lazily, so importing a piece of the
app (``app.commands``, ``app.fake_engine``) does not load Textual, and a
missing Textual is an ImportError at ``from app import run_app``. Nothing in
this package imports MLX; the engine runs on its own thread.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_app"]


def __getattr__(name: str) -> Any:
    if name == "run_app":
        from app.app import run_app

        return run_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
