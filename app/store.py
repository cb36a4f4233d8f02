"""Saved sessions: transcript and settings in SQLite, heap snapshots beside it.

Why this shape: a long session is hours of work, so a save must never damage
the previous one.  Nothing is overwritten in place:

1. the engine writes its heap snapshot into a fresh temporary directory,
2. the directory is renamed (atomic) to a new, unique snapshot directory,
3. one SQLite transaction switches the session's row (transcript, settings,
   snapshot pointer, checksums) to the new data,
4. only then is the previous snapshot directory deleted.

A crash or error anywhere before step 3 leaves the earlier row and its
snapshot untouched (the half-written directory is removed, or ignored on the
next start); after step 3 the new save is complete.  Each row carries a
format version and a SHA-256 of its transcript and snapshot, so a damaged
save is refused with a clear message instead of being half-loaded.

Location: ``$MLX_KV_DATA_DIR`` if set, else the platform's user data
directory (``~/Library/Application Support/mlx-kv`` on macOS,
``$XDG_DATA_HOME/mlx-kv`` or ``~/.local/share/mlx-kv`` elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from mlx_kv.errors import UserError

FORMAT_VERSION = 1
DB_NAME = "sessions.sqlite3"
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_FILE = "heap.safetensors"  # the path handed to session.save() inside a snapshot directory

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    name TEXT PRIMARY KEY,
    format_version INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model TEXT,
    settings TEXT NOT NULL,
    transcript TEXT NOT NULL,
    transcript_sha256 TEXT NOT NULL,
    snapshot TEXT,
    snapshot_sha256 TEXT
);
"""


def data_dir(env: Mapping[str, str] | None = None, platform: str | None = None, home: str | None = None) -> Path:
    """The user's data directory for mlx-kv (not created here)."""
    env = os.environ if env is None else env
    platform = platform or sys.platform
    home_path = Path(home) if home else Path.home()
    if env.get("MLX_KV_DATA_DIR"):
        return Path(env["MLX_KV_DATA_DIR"]).expanduser()
    if platform == "darwin":
        return home_path / "Library" / "Application Support" / "mlx-kv"
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA") or str(home_path / "AppData" / "Local")
        return Path(base) / "mlx-kv"
    xdg = env.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else home_path / ".local" / "share") / "mlx-kv"


@dataclass(frozen=True)
class SavedSession:
    name: str
    created: float
    updated: float
    model: str | None
    settings: dict
    transcript: list[dict]
    snapshot_path: str | None  # the path to pass to Session.restore(), or None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationSummary:
    """One row of the conversations list."""

    name: str
    model: str | None
    updated: float
    tokens: int | None
    messages: int | None


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sha256_dir(root: Path) -> str:
    """Hash of every file's relative path and bytes under ``root`` (sorted)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


class SessionStore:
    """Named sessions under one data directory."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir()
        self.snapshots = self.root / SNAPSHOT_DIR
        self.db_path = self.root / DB_NAME

    # -- plumbing --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=10)
            conn.execute(_SCHEMA)
            return conn
        except (OSError, sqlite3.Error) as e:
            raise UserError(f"cannot open the session store at {self.root}: {e}") from e

    def _remove_stale_temps(self, older_than_s: float = 3600.0) -> None:
        """Half-written snapshot directories from a crashed save.

        Only old ones: another app instance may be writing a fresh one right now.
        """
        if not self.snapshots.is_dir():
            return
        cutoff = time.time() - older_than_s
        for p in self.snapshots.glob(".tmp-*"):
            try:
                if p.stat().st_mtime < cutoff:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass

    # -- public ----------------------------------------------------------------

    def save(
        self,
        name: str,
        transcript: list[dict],
        settings: dict,
        model: str | None = None,
        snapshot: Callable[[str], None] | None = None,
    ) -> SavedSession:
        """Save (or replace) session ``name`` atomically.

        ``snapshot(path)`` is the engine's ``Session.save``; it is called with a
        path inside a fresh directory, so whatever files it writes there (and
        whatever suffix it adds) travel together.
        """
        conn = self._connect()
        self._remove_stale_temps()
        new_dir: Path | None = None
        tmp_dir: Path | None = None
        try:
            transcript_json = json.dumps(list(transcript), ensure_ascii=False)
            settings_json = json.dumps(dict(settings), ensure_ascii=False, default=str)
            snapshot_rel = snapshot_sha = None
            if snapshot is not None:
                token = f"{name}-{uuid.uuid4().hex[:12]}"
                tmp_dir = self.snapshots / f".tmp-{token}"
                tmp_dir.mkdir(parents=True)
                snapshot(str(tmp_dir / SNAPSHOT_FILE))
                snapshot_sha = _sha256_dir(tmp_dir)
                _fsync_tree(tmp_dir)
                new_dir = self.snapshots / token
                os.replace(tmp_dir, new_dir)
                tmp_dir = None
                snapshot_rel = f"{SNAPSHOT_DIR}/{token}"
            now = time.time()
            with conn:  # one transaction: all of the row or none of it
                old = conn.execute("SELECT created, snapshot FROM sessions WHERE name = ?", (name,)).fetchone()
                created = old[0] if old else now
                conn.execute(
                    "INSERT OR REPLACE INTO sessions (name, format_version, created, updated, model, settings,"
                    " transcript, transcript_sha256, snapshot, snapshot_sha256) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        name,
                        FORMAT_VERSION,
                        created,
                        now,
                        model,
                        settings_json,
                        transcript_json,
                        _sha256_text(transcript_json),
                        snapshot_rel,
                        snapshot_sha,
                    ),
                )
            new_dir = None  # committed: it is the live snapshot now
            if old and old[1] and old[1] != snapshot_rel:
                shutil.rmtree(self.root / old[1], ignore_errors=True)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"could not save session {name!r}: {type(e).__name__}: {e}") from e
        finally:
            conn.close()
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            if new_dir is not None:  # renamed but never committed
                shutil.rmtree(new_dir, ignore_errors=True)
        return SavedSession(
            name,
            created,
            now,
            model,
            json.loads(settings_json),
            json.loads(transcript_json),
            str(self.root / snapshot_rel / SNAPSHOT_FILE) if snapshot_rel else None,
        )

    def load(self, name: str) -> SavedSession:
        """Read session ``name``; refuse anything damaged or from another format version."""
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT name, format_version, created, updated, model, settings, transcript,"
                " transcript_sha256, snapshot, snapshot_sha256 FROM sessions WHERE name = ?",
                (name,),
            ).fetchone()
        except sqlite3.Error as e:
            raise UserError(f"the session store is damaged: {e}") from e
        finally:
            conn.close()
        if row is None:
            known = ", ".join(s for s, _ in self.list()) or "none saved yet"
            raise UserError(f"no saved session named {name!r} (saved: {known})")
        (_, version, created, updated, model, settings_json, transcript_json, tsha, snap, ssha) = row
        if version != FORMAT_VERSION:
            raise UserError(
                f"session {name!r} was saved in format {version}; this version reads format {FORMAT_VERSION}"
            )
        if _sha256_text(transcript_json) != tsha:
            raise UserError(f"session {name!r} is corrupted (transcript checksum mismatch)")
        try:
            transcript = json.loads(transcript_json)
            settings = json.loads(settings_json)
        except ValueError as e:
            raise UserError(f"session {name!r} is corrupted ({e})") from e
        snapshot_path = None
        if snap:
            snap_dir = self.root / snap
            if not snap_dir.is_dir():
                raise UserError(f"session {name!r}: its heap snapshot is missing ({snap_dir})")
            if ssha and _sha256_dir(snap_dir) != ssha:
                raise UserError(f"session {name!r}: its heap snapshot is corrupted (checksum mismatch)")
            snapshot_path = str(snap_dir / SNAPSHOT_FILE)
        return SavedSession(name, created, updated, model, settings, transcript, snapshot_path)

    def list(self) -> list[tuple[str, float]]:
        """(name, updated) of every saved session, newest first."""
        if not self.db_path.exists():
            return []
        conn = self._connect()
        try:
            return [(n, u) for n, u in conn.execute("SELECT name, updated FROM sessions ORDER BY updated DESC")]
        except sqlite3.Error:
            return []
        finally:
            conn.close()

    def summaries(self) -> list[ConversationSummary]:
        """Every saved session for a list: name, model, tokens, messages, last
        used (newest first); tokens and messages come from the settings the
        app saves with each row (None for rows saved before it did)."""
        if not self.db_path.exists():
            return []
        conn = self._connect()
        try:
            rows = conn.execute("SELECT name, model, updated, settings FROM sessions ORDER BY updated DESC").fetchall()
        except sqlite3.Error:
            return []
        finally:
            conn.close()
        out = []
        for name, model, updated, settings_json in rows:
            try:
                settings = json.loads(settings_json)
            except ValueError:
                settings = {}
            settings = settings if isinstance(settings, dict) else {}
            out.append(ConversationSummary(name, model, updated, settings.get("tokens"), settings.get("messages")))
        return out

    def rename(self, old: str, new: str) -> None:
        """Give session `old` the name `new` (one UPDATE: all or nothing); refuses a taken name."""
        conn = self._connect()
        try:
            with conn:
                if conn.execute("SELECT 1 FROM sessions WHERE name = ?", (new,)).fetchone():
                    raise UserError(f"a saved session is already named {new!r}")
                if conn.execute("UPDATE sessions SET name = ? WHERE name = ?", (new, old)).rowcount == 0:
                    raise UserError(f"no saved session named {old!r}")
        except sqlite3.Error as e:
            raise UserError(f"could not rename session {old!r}: {e}") from e
        finally:
            conn.close()

    def delete(self, name: str) -> None:
        conn = self._connect()
        try:
            with conn:
                row = conn.execute("SELECT snapshot FROM sessions WHERE name = ?", (name,)).fetchone()
                conn.execute("DELETE FROM sessions WHERE name = ?", (name,))
        finally:
            conn.close()
        if row and row[0]:
            shutil.rmtree(self.root / row[0], ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flush the snapshot's files to disk before the rename makes them live."""
    for path in root.rglob("*"):
        if path.is_file():
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass
