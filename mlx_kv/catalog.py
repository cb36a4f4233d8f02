"""Models already on this machine, for a picker: the bundled and default
models, models mlx-kv converted, GGUF files where LM Studio and llama.cpp keep
them (and in folders the user adds), and the Hugging Face hub cache.

Why here and not in the app: what a model spec means (`--model`) is the
library's (mlx_kv.models), so the list of specs it can open belongs beside
it. Every entry's `spec` is what `--model`, Session.load and the app take.
Nothing is loaded or converted while listing; a folder's config.json is read
to tell which architectures mlx-kv cannot run, and a place that cannot be
read is skipped. Nothing here imports MLX.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

GGUF_PLACES = (
    ("LM Studio", "~/.lmstudio/models"),
    ("LM Studio", "~/.cache/lm-studio/models"),
    ("llama.cpp", "~/.cache/llama.cpp"),
)
MAX_DEPTH = 5  # LM Studio nests publisher/model/file
MAX_FILES = 2000  # per place: a mistaken folder (the home directory) must not hang the picker


@dataclass(frozen=True)
class ModelEntry:
    spec: str  # what --model takes
    name: str  # shown
    kind: str  # "bundled", "default", "converted", "gguf", "folder", "hub"
    where: str  # where it was found ("LM Studio", "Hugging Face cache", a folder)
    size: int | None = None  # bytes on disk
    note: str = ""  # why it may not load ("architecture gemma2 is not supported"), or what loading does

    @property
    def usable(self) -> bool:
        return not self.note.startswith("cannot")


def find_models(folders: Iterable[str] = (), home: str | os.PathLike | None = None,
                scan_hub: Callable[[], object] | None = None) -> list[ModelEntry]:
    """Every model found, the bundled and default ones first; duplicates (the
    same file reached from two places) once."""
    from mlx_kv.default_model import DEFAULT_NAME, default_model_dir, installed_default
    from mlx_kv.models import BUNDLED_MODEL
    from mlx_kv.paths import models_dir

    home_path = Path(home).expanduser() if home is not None else Path.home()
    out: list[ModelEntry] = [ModelEntry(BUNDLED_MODEL.name, BUNDLED_MODEL.name, "bundled", "bundled with mlx-kv",
                                        _folder_size(BUNDLED_MODEL), "a 2M-parameter test model, not for chat")]
    default = installed_default()
    out.append(ModelEntry(DEFAULT_NAME, DEFAULT_NAME, "default", str(default or default_model_dir()),
                          _folder_size(default) if default else None,
                          "" if default else "cannot load: not set up here (run `mlx-kv fetch`)"))
    converted = models_dir()
    if converted.is_dir():
        for folder in sorted(p for p in converted.iterdir() if p.is_dir() and p != default):
            if (folder / "config.json").is_file():
                out.append(_folder_entry(folder, "converted", "mlx-kv cache"))
    for where, place in GGUF_PLACES:
        root = Path(place.replace("~", str(home_path), 1))
        out += [ModelEntry(str(p), p.name, "gguf", where, _size(p), "converted once on first use")
                for p in _gguf_files(root)]
    for folder in folders:
        root = Path(folder).expanduser()
        label = f"{folder} (added)"
        if (root / "config.json").is_file():
            out.append(_folder_entry(root, "folder", label))
            continue
        out += [ModelEntry(str(p), p.name, "gguf", label, _size(p), "converted once on first use")
                for p in _gguf_files(root)]
        out += [_folder_entry(p, "folder", label) for p in _model_folders(root)]
    out += _hub_models(scan_hub)
    seen: set[str] = set()
    unique = []
    for entry in out:
        key = os.path.realpath(entry.spec) if os.path.sep in entry.spec and os.path.exists(entry.spec) else entry.spec
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return unique


def _gguf_files(root: Path) -> list[Path]:
    """.gguf model files under root (multimodal projector files, mmproj-*, are not models)."""
    found: list[Path] = []
    for path in _walk(root):
        if path.suffix.lower() == ".gguf" and not path.name.lower().startswith("mmproj"):
            found.append(path)
    return sorted(found)


def _model_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in _walk(root) if p.name == "config.json" and list(p.parent.glob("*.safetensors")))


def _walk(root: Path) -> list[Path]:
    files: list[Path] = []
    if not root.is_dir():
        return files
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
        depth = len(Path(dirpath).parts) - base
        dirnames[:] = [] if depth >= MAX_DEPTH else [d for d in dirnames if not d.startswith(".")]
        files += [Path(dirpath) / f for f in filenames]
        if len(files) >= MAX_FILES:
            break
    return files


def _folder_entry(folder: Path, kind: str, where: str) -> ModelEntry:
    return ModelEntry(str(folder), folder.name, kind, where, _folder_size(folder), _architecture_note(folder))


def _architecture_note(folder: Path) -> str:
    from mlx_kv.models import SUPPORTED_TYPES

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return "cannot load: no readable config.json"
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in SUPPORTED_TYPES:
        return f"cannot load: architecture {model_type!r} is not supported"
    if not list(folder.glob("*.safetensors")):
        return "cannot load: no .safetensors weights"
    return ""


def _hub_models(scan_hub: Callable[[], object] | None) -> list[ModelEntry]:
    """The hub cache's model repositories; a missing cache (or huggingface_hub) is no models."""
    try:
        if scan_hub is None:
            from huggingface_hub import scan_cache_dir as scan_hub
        info = scan_hub()
    except Exception:  # noqa: BLE001 - CacheNotFound, ImportError, a corrupted cache: nothing to list
        return []
    out = []
    for repo in sorted(getattr(info, "repos", ()), key=lambda r: r.repo_id):
        if getattr(repo, "repo_type", "model") != "model":
            continue
        revisions = sorted(getattr(repo, "revisions", ()), key=lambda r: getattr(r, "last_modified", 0))
        note = "in the cache; loading reads it from there"
        if revisions:
            snapshot = Path(revisions[-1].snapshot_path)
            if (snapshot / "config.json").is_file():
                note = _architecture_note(snapshot) or note
        out.append(ModelEntry(repo.repo_id, repo.repo_id, "hub", "Hugging Face cache", getattr(repo, "size_on_disk", None),
                              note))
    return out


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _folder_size(folder: Path | None) -> int | None:
    if folder is None or not folder.is_dir():
        return None
    return sum(s for s in (_size(p) for p in folder.iterdir() if p.is_file()) if s)
