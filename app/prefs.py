"""The app's own preferences (theme, model folders, live drift) in one JSON file.

Why a file of its own: these belong to the person, not to a conversation, so
they live beside the session store (``prefs.json`` in the data directory)
and survive every conversation.  Writes go to a temporary file that is
renamed into place, so a crash leaves the old file or the new one; a file
that cannot be read counts as empty (the defaults) and is never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "prefs.json"
DRIFT_MODES = ("auto", "on", "off")


@dataclass
class Prefs:
    theme: str | None = None  # a Textual theme name; None: Textual's default
    model_folders: list[str] = field(default_factory=list)  # searched for .gguf files and model folders
    drift: str = "auto"  # live drift sampling: auto (only where it is cheap), on, off

    @classmethod
    def load(cls, root: Path) -> "Prefs":
        try:
            data = json.loads((root / FILE_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable preferences %s: %s", root / FILE_NAME, e)
            return cls()
        known = {f.name for f in fields(cls)}
        prefs = cls(**{k: v for k, v in data.items() if k in known}) if isinstance(data, dict) else cls()
        if prefs.drift not in DRIFT_MODES:
            prefs.drift = "auto"
        if not isinstance(prefs.model_folders, list):
            prefs.model_folders = []
        return prefs

    def save(self, root: Path) -> None:
        """Atomic; an unwritable data directory is logged, not raised (preferences are a convenience)."""
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=root, prefix=".prefs-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(asdict(self), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, root / FILE_NAME)
        except OSError as e:
            log.warning("could not save preferences in %s: %s", root, e)
