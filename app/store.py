"""Saved sessions: transcript and settings in SQLite, heap snapshots beside it.

Why this shape: a long session is hours of work, so a save must never damage
the previous one, whether the process is killed at any byte of it, the disk
fills up, or a second mlx-kv on the same data directory saves at the same
time (tests/test_kill_during_save.py, test_full_disk.py, test_two_instances.py).
Nothing is overwritten in place:

1. the engine writes its heap snapshot into a fresh temporary directory
   (``snapshots/.tmp-<pid>-<token>``, outside any lock: it may take seconds);
2. under SQLite's write lock (``BEGIN IMMEDIATE``) the directory is renamed
   (atomic) to its final name and the session's row (transcript, settings,
   snapshot pointer, checksums, revision) is switched to the new data in the
   same transaction;
3. only after the commit are snapshot directories no row points to deleted
   (the previous one, and any left by a writer that was killed between its
   rename and its commit; only a writer holding the lock renames, so an
   unreferenced directory seen under the lock is never one about to commit).

A crash anywhere before the commit leaves the earlier row and its snapshot
untouched; temporary directories of dead writers (their pid is gone, or an
hour has passed) are removed by the next save.

Two instances: every row has a revision, bumped by each save. An instance
that resumed (or last saved) revision r and saves again while the row is at
another revision lost the race: its save is refused with one line saying
so, and nothing is overwritten. A rename (one UPDATE under the write lock)
bumps the revision as a save does. A resume that finds its snapshot replaced
underneath it (the other instance saved meanwhile) reads the row again.

Each row carries a format version and a SHA-256 of its transcript and
snapshot; a damaged save (or a damaged row: wrong types, a snapshot pointer
outside the store) is refused with a clear message instead of being
half-loaded, and nothing outside the store is ever deleted.

Location: ``$MLX_KV_DATA_DIR`` if set, else the platform's user data
directory (``~/Library/Application Support/mlx-kv`` on macOS,
``$XDG_DATA_HOME/mlx-kv`` or ``~/.local/share/mlx-kv`` elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from mlx_kv.errors import DiskFull, UserError
from mlx_kv.storage import fsync_folder, is_disk_full, pid_alive, room_note

FORMAT_VERSION = 1
DB_NAME = "sessions.sqlite3"
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_FILE = "heap.safetensors"  # the path handed to session.save() inside a snapshot directory
LOCK_TIMEOUT_S = 30.0  # a save holds the write lock for one rename and one row

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
    snapshot_sha256 TEXT,
    revision INTEGER NOT NULL DEFAULT 0
);
"""
_COLUMNS = ("name, format_version, created, updated, model, settings, transcript, transcript_sha256, snapshot,"
            " snapshot_sha256, revision")
# a snapshot directory's name: never a dot first, which is how temporaries (.tmp-...) are told apart
_TOKEN = re.compile(r"^(?!\.)[A-Za-z0-9_.-]{0,64}-[0-9a-f]{12}$")
_TMP = re.compile(r"^\.tmp-(\d+)-")  # .tmp-<pid>-<token>; older versions wrote .tmp-<token>
T = TypeVar("T")


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


class SaveConflict(UserError):
    """Another instance saved the session after this one last read or saved it."""


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
    revision: int = 0  # bumped by every save; pass it back as save(expected_revision=)


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


def _slug(name: str) -> str:
    """The part of a session's name that may appear in a directory name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]


class SessionStore:
    """Named sessions under one data directory."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir()
        self.snapshots = self.root / SNAPSHOT_DIR
        self.db_path = self.root / DB_NAME

    # -- plumbing --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """A connection in autocommit mode: every write transaction is an explicit BEGIN IMMEDIATE."""
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise UserError(f"cannot open the session store at {self.root}: {e}") from None
        try:
            self._ensure_schema(conn)
        except sqlite3.Error as e:
            conn.close()
            raise UserError(_store_error(self.root, "open the session store", e)) from None
        return conn

    @staticmethod
    def _ensure_schema(conn: sqlite3.Connection) -> None:
        """The table, and the revision column stores written before it existed lack."""
        if _columns(conn) >= {"name", "revision"}:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SCHEMA)
            if "revision" not in _columns(conn):
                conn.execute("ALTER TABLE sessions ADD COLUMN revision INTEGER NOT NULL DEFAULT 0")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _remove_stale_temps(self, older_than_s: float = 3600.0) -> None:
        """Half-written snapshot directories from a crashed save: their writer's
        pid is gone, or (another machine on a shared folder, an older mlx-kv)
        they are an hour old. A live writer may be filling a fresh one right now."""
        if not self.snapshots.is_dir():
            return
        cutoff = time.time() - older_than_s
        for p in self.snapshots.glob(".tmp-*"):
            match = _TMP.match(p.name)
            try:
                if (match and not pid_alive(int(match.group(1)))) or p.stat().st_mtime < cutoff:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass

    def _snapshot_dir(self, rel: Any, name: str) -> Path:
        """The directory a row points to, refused unless it is one of the store's own."""
        parts = rel.split("/") if isinstance(rel, str) else []
        if len(parts) != 2 or parts[0] != SNAPSHOT_DIR or not _TOKEN.match(parts[1]):
            raise UserError(f"session {name!r} is damaged (its snapshot pointer {str(rel)[:80]!r} is not in the store)")
        return self.snapshots / parts[1]

    def _unreferenced(self, conn: sqlite3.Connection) -> list[Path]:
        """Snapshot directories no row points to (call it holding the write lock)."""
        referenced = {row[0] for row in conn.execute("SELECT snapshot FROM sessions")}
        try:
            entries = list(self.snapshots.iterdir())
        except OSError:
            return []
        return [p for p in entries if _TOKEN.match(p.name) and f"{SNAPSHOT_DIR}/{p.name}" not in referenced]

    # -- public ----------------------------------------------------------------

    def save(
        self,
        name: str,
        transcript: list[dict],
        settings: dict,
        model: str | None = None,
        snapshot: Callable[[str], None] | None = None,
        expected_revision: int | None = None,
    ) -> SavedSession:
        """Save (or replace) session ``name`` atomically.

        ``snapshot(path)`` is the engine's ``Session.save``; it is called with a
        path inside a fresh directory, so whatever files it writes there (and
        whatever suffix it adds) travel together. ``expected_revision``: the
        revision this caller last loaded or saved; when the row has moved on
        (another instance saved it), SaveConflict and nothing is written.
        """
        if not isinstance(name, str) or not name or not _encodable(name):
            raise UserError("session name: must be non-empty text (lone surrogates cannot be stored)")
        try:
            transcript_json = json.dumps(list(transcript))  # ASCII: any str, lone surrogates too, is valid UTF-8
            settings_json = json.dumps(dict(settings), default=str)
        except (TypeError, ValueError) as e:
            raise UserError(f"could not save session {name!r}: its data is not JSON ({e})") from None
        conn = self._connect()
        tmp_dir: Path | None = None
        new_dir: Path | None = None
        had_row = False
        try:
            self._remove_stale_temps()
            snapshot_rel = snapshot_sha = None
            if snapshot is not None:
                token = f"{_slug(name)}-{uuid.uuid4().hex[:12]}"
                tmp_dir = self.snapshots / f".tmp-{os.getpid()}-{token}"
                tmp_dir.mkdir(parents=True)
                snapshot(str(tmp_dir / SNAPSHOT_FILE))
                snapshot_sha = _sha256_dir(tmp_dir)
                _fsync_tree(tmp_dir)
                new_dir, snapshot_rel = self.snapshots / token, f"{SNAPSHOT_DIR}/{token}"
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time, from the revision check to the commit
            try:
                old = conn.execute("SELECT created, revision FROM sessions WHERE name = ?", (name,)).fetchone()
                had_row = old is not None
                revision = _int(old[1]) if old else 0
                if expected_revision is not None and old is not None and revision != expected_revision:
                    raise SaveConflict(
                        f"session {name!r} was saved by another mlx-kv instance since this one last read it "
                        f"(revision {revision}, this one has {expected_revision}); nothing was overwritten: "
                        f"/save NEW-NAME keeps this conversation, /resume {name} loads theirs")
                created = old[0] if old and isinstance(old[0], (int, float)) else now
                if tmp_dir is not None:
                    os.replace(tmp_dir, new_dir)
                    tmp_dir = None
                    fsync_folder(self.snapshots)
                conn.execute(
                    f"INSERT OR REPLACE INTO sessions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (name, FORMAT_VERSION, created, now, model, settings_json, transcript_json,
                     _sha256_text(transcript_json), snapshot_rel, snapshot_sha, revision + 1))
                garbage = self._unreferenced(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            new_dir = None  # committed: it is the live snapshot now
            for stale in garbage:
                shutil.rmtree(stale, ignore_errors=True)
        except SaveConflict:
            raise
        except DiskFull:
            raise DiskFull(_full_message(self.root, name, had_row or self._has(name))) from None
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - OSError, sqlite3.Error: one line, the earlier save kept
            if is_disk_full(e, self.root):
                raise DiskFull(_full_message(self.root, name, had_row or self._has(name))) from None
            raise UserError(_store_error(self.root, f"save session {name!r}", e)) from None
        finally:
            conn.close()
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            if new_dir is not None and new_dir.exists():  # renamed but never committed
                shutil.rmtree(new_dir, ignore_errors=True)
        snapshot_path = str(self.root / snapshot_rel / SNAPSHOT_FILE) if snapshot_rel else None
        return SavedSession(name, created, now, model, json.loads(settings_json), json.loads(transcript_json),
                            snapshot_path, revision=revision + 1)

    def load(self, name: str) -> SavedSession:
        """Read session ``name``; refuse anything damaged or from another format version.

        A snapshot that vanishes or changes while it is checked was replaced by
        another instance's save: the row is read again (a few times)."""
        for _ in range(5):
            row = self._row(name)
            saved, snap_dir, ssha = _parse_row(name, row, self)
            if snap_dir is None:
                return saved
            try:
                intact = snap_dir.is_dir() and (not ssha or _sha256_dir(snap_dir) == ssha)
            except OSError:  # a file went away under the hash: deleted by a newer save
                intact = False
            if intact:
                return saved
            if self._revision(name) == saved.revision:
                if not snap_dir.is_dir():
                    raise UserError(f"session {name!r}: its heap snapshot is missing ({snap_dir})")
                raise UserError(f"session {name!r}: its heap snapshot is corrupted (checksum mismatch)")
        raise UserError(f"session {name!r} keeps changing (another mlx-kv instance is saving it); try again")

    def restore(self, name: str, open_snapshot: Callable[[str], T]) -> tuple[SavedSession, T | None]:
        """load(name), then `open_snapshot(path)` (Session.restore) on its
        snapshot; when the snapshot was replaced between the two (another
        instance saved), the newer save is loaded instead."""
        for _ in range(5):
            saved = self.load(name)
            if saved.snapshot_path is None:
                return saved, None
            try:
                return saved, open_snapshot(saved.snapshot_path)
            except UserError:
                if self._revision(name) == saved.revision:
                    raise
        raise UserError(f"session {name!r} keeps changing (another mlx-kv instance is saving it); try again")

    def list(self) -> list[tuple[str, float]]:
        """(name, updated) of every saved session, newest first (damaged rows are left out)."""
        if not self.db_path.exists():
            return []
        conn = self._connect()
        try:
            rows = conn.execute("SELECT name, updated FROM sessions").fetchall()
        except sqlite3.Error:
            return []
        finally:
            conn.close()
        good = [(n, float(u)) for n, u in rows if isinstance(n, str) and isinstance(u, (int, float))]
        return sorted(good, key=lambda r: r[1], reverse=True)

    def summaries(self) -> list[ConversationSummary]:
        """Every saved session for a list: name, model, tokens, messages, last
        used (newest first); tokens and messages come from the settings the
        app saves with each row (None for rows saved before it did, or where
        they are not counts). Damaged rows are left out, as list() does."""
        if not self.db_path.exists():
            return []
        conn = self._connect()
        try:
            rows = conn.execute("SELECT name, model, updated, settings FROM sessions").fetchall()
        except sqlite3.Error:
            return []
        finally:
            conn.close()
        out = []
        for name, model, updated, settings_json in rows:
            if not isinstance(name, str) or not _number(updated) or not (model is None or isinstance(model, str)):
                continue
            try:
                settings = json.loads(settings_json) if isinstance(settings_json, str) else {}
            except ValueError:
                settings = {}
            settings = settings if isinstance(settings, dict) else {}
            tokens, messages = (settings.get(k) for k in ("tokens", "messages"))
            out.append(ConversationSummary(name, model, float(updated), tokens if _count(tokens) else None,
                                           messages if _count(messages) else None))
        return sorted(out, key=lambda r: r.updated, reverse=True)

    def rename(self, old: str, new: str, expected_revision: int | None = None) -> int:
        """Give session ``old`` the name ``new``, in one transaction (its
        snapshot directory stays: the row points to it); refuses a taken name.

        A rename is a change like a save: the row's revision is bumped, so an
        instance still holding the old name cannot save over it unawares, and
        with ``expected_revision`` (the revision this caller last loaded or
        saved) a row another instance saved since is refused (SaveConflict).
        Returns the row's new revision."""
        if not isinstance(new, str) or not new or not _encodable(new):
            raise UserError("session name: must be non-empty text (lone surrogates cannot be stored)")
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM sessions WHERE name = ?", (new,)).fetchone():
                    raise UserError(f"a saved session is already named {new!r}")
                row = conn.execute("SELECT revision FROM sessions WHERE name = ?", (old,)).fetchone()
                if row is None:
                    raise UserError(f"no saved session named {old!r}")
                revision = _int(row[0])
                if expected_revision is not None and revision != expected_revision:
                    raise SaveConflict(
                        f"session {old!r} was saved by another mlx-kv instance since this one last read it "
                        f"(revision {revision}, this one has {expected_revision}); it was not renamed: "
                        f"/save NEW-NAME keeps this conversation, /resume {old} loads theirs")
                conn.execute("UPDATE sessions SET name = ?, revision = ? WHERE name = ?", (new, revision + 1, old))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except UserError:
            raise
        except sqlite3.Error as e:
            if is_disk_full(e, self.root):
                raise DiskFull(f"could not rename session {old!r}: no space left in {self.root}"
                               f"{room_note(self.root)}; it keeps its name") from None
            raise UserError(_store_error(self.root, f"rename session {old!r}", e)) from None
        finally:
            conn.close()
        return revision + 1

    def delete(self, name: str, expected_revision: int | None = None) -> bool:
        """Remove session ``name`` and its snapshot directory (after the commit).
        With ``expected_revision``, a row another instance saved since is left
        alone. True when a row was deleted."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT revision FROM sessions WHERE name = ?", (name,)).fetchone()
                deleted = row is not None and (expected_revision is None or _int(row[0]) == expected_revision)
                if deleted:
                    conn.execute("DELETE FROM sessions WHERE name = ?", (name,))
                garbage = self._unreferenced(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except sqlite3.Error as e:
            raise UserError(_store_error(self.root, f"delete session {name!r}", e)) from None
        finally:
            conn.close()
        for stale in garbage:
            shutil.rmtree(stale, ignore_errors=True)
        return deleted

    # -- reading rows ------------------------------------------------------------

    def _row(self, name: str) -> tuple:
        conn = self._connect()
        try:
            row = conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error as e:
            raise UserError(f"the session store is damaged: {e}") from None
        finally:
            conn.close()
        if row is None:
            known = ", ".join(s for s, _ in self.list()) or "none saved yet"
            raise UserError(f"no saved session named {name!r} (saved: {known})")
        return row

    def _revision(self, name: str) -> int | None:
        """The row's revision now (None: gone, or unreadable)."""
        try:
            conn = self._connect()
        except UserError:
            return None
        try:
            row = conn.execute("SELECT revision FROM sessions WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error:
            return None
        finally:
            conn.close()
        return _int(row[0]) if row else None

    def _has(self, name: str) -> bool:
        return self._revision(name) is not None


def _parse_row(name: str, row: tuple, store: SessionStore) -> tuple[SavedSession, Path | None, str | None]:
    """A row as a SavedSession, every field checked for its type and shape."""
    (_, version, created, updated, model, settings_json, transcript_json, tsha, snap, ssha, revision) = row
    if version != FORMAT_VERSION:
        raise UserError(f"session {name!r} was saved in format {str(version)[:20]}; this version reads format "
                        f"{FORMAT_VERSION}")
    if not isinstance(transcript_json, str) or not isinstance(settings_json, str):
        raise UserError(f"session {name!r} is damaged (its transcript or settings are not text)")
    if not isinstance(tsha, str) or _sha256_text(transcript_json) != tsha:
        raise UserError(f"session {name!r} is corrupted (transcript checksum mismatch)")
    try:
        transcript = json.loads(transcript_json)
        settings = json.loads(settings_json)
    except ValueError as e:
        raise UserError(f"session {name!r} is corrupted ({e})") from None
    problem = _transcript_problem(transcript) or (None if isinstance(settings, dict) else "its settings are not a table")
    if problem is None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (created, updated)):
        problem = "its times are not numbers"
    if problem is None and not (model is None or isinstance(model, str)):
        problem = "its model is not a name"
    if problem is None and not (ssha is None or isinstance(ssha, str)):
        problem = "its snapshot checksum is not text"
    if problem:
        raise UserError(f"session {name!r} is damaged ({problem})")
    snap_dir = store._snapshot_dir(snap, name) if snap is not None else None
    saved = SavedSession(name, float(created), float(updated), model, settings, transcript,
                         str(snap_dir / SNAPSHOT_FILE) if snap_dir is not None else None, revision=_int(revision))
    return saved, snap_dir, ssha


def _transcript_problem(transcript: Any) -> str | None:
    if not isinstance(transcript, list):
        return "its transcript is not a list"
    for turn in transcript:
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) \
                or not isinstance(turn.get("content"), str):
            return "a turn of its transcript lacks a role or a text"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _rollback(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already (it rolls back by
    itself on a full disk, and a second ROLLBACK would hide that error)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _full_message(root: Path, name: str, had_previous: bool) -> str:
    kept = "; the previous save is intact" if had_previous else "; nothing was saved"
    return f"could not save session {name!r}: no space left in {root}{room_note(root)}{kept}"


def _store_error(root: Path, what: str, e: BaseException) -> str:
    """One line for a failed store operation, naming a busy or damaged database as such."""
    text = str(e)
    if "locked" in text or "busy" in text:
        return (f"could not {what}: the session store in {root} stayed locked by another mlx-kv instance for "
                f"{LOCK_TIMEOUT_S:.0f} s; try again")
    if "not a database" in text or "malformed" in text:
        return f"could not {what}: the session store {root / DB_NAME} is damaged ({text}); move it away to start anew"
    return f"could not {what}: {type(e).__name__}: {text}"


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
