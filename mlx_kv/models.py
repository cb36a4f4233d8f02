"""Finding and loading a model: the bundled one, a local folder, or a hub id.

A model folder is untrusted input: only safetensors weights are read (never
pickle), remote code is never run, and the config's sizes are checked before
anything is allocated.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from mlx_kv.errors import UserError


def _bundled_model(package: Path = Path(__file__).resolve().parent) -> Path:
    """Package data in an install from a wheel (pyproject.toml ships models/ as
    mlx_kv/bundled); models/ itself in a checkout or an editable install."""
    installed = package / "bundled" / "mlx-kv-tiny"
    return installed if installed.is_dir() else package.parent / "models" / "mlx-kv-tiny"


BUNDLED_MODEL = _bundled_model()
SUPPORTED_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_LIMITS = {
    "hidden_size": (1, 65536),
    "num_hidden_layers": (1, 512),
    "num_attention_heads": (1, 1024),
    "vocab_size": (1, 2_000_000),
    "intermediate_size": (1, 1_000_000),
}


def default_model() -> str:
    return os.environ.get("MLX_KV_MODEL") or str(BUNDLED_MODEL)


def resolve_model_path(spec: str | None, progress: Callable[[str], None] | None = None) -> Path:
    """A local folder for `spec`, downloading from the hub when it is a hub id."""
    spec = spec or default_model()
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model: {spec} is a file; give the folder that holds config.json")
        return path
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise UserError(f"model: folder {spec} does not exist")
    return _download(spec, progress)


def _download(repo_id: str, progress: Callable[[str], None] | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError)
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency
        raise UserError("model: huggingface-hub is not installed; pass a local folder") from None
    if progress:
        progress(f"fetching {repo_id} from the Hugging Face hub")
    patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
    try:
        kwargs = {"tqdm_class": progress_tqdm(repo_id, progress)} if progress else {}
        return Path(snapshot_download(repo_id, allow_patterns=patterns, **kwargs))
    except (RepositoryNotFoundError, GatedRepoError):
        raise UserError(f"model: hub id {repo_id} was not found (or needs access rights)") from None
    except LocalEntryNotFoundError:
        raise UserError(f"model: {repo_id} is not in the local cache and the hub cannot be reached (offline?)") from None
    except Exception as exc:  # network errors come in many classes
        raise UserError(f"model: could not download {repo_id}: {type(exc).__name__}: {exc}") from None


def progress_tqdm(repo_id: str, progress: Callable[[str], None]):
    """A tqdm class that reports download progress as one-line messages
    (every 10%), so the CLI and the TUI can show it without a terminal bar."""
    from tqdm.auto import tqdm

    class Reporter(tqdm):
        def __init__(self, *args, **kwargs):
            self._unit = kwargs.get("unit", "it")
            kwargs["disable"] = True  # no terminal bar; we report instead
            super().__init__(*args, **kwargs)
            self._reported = -1

        def update(self, n=1):
            self.n += n or 0
            total = self.total or 0
            if total > 1:
                tenth = int(10 * self.n / total)
                if tenth != self._reported:
                    self._reported = tenth
                    size = f"{total / 2**20:.1f} MiB" if self._unit == "B" else f"{total} files"
                    progress(f"downloading {repo_id}: {min(100, 10 * tenth)}% of {size}")
            return True

    return Reporter


def check_model_folder(path: Path) -> dict[str, Any]:
    """Refuse folders mlx-kv cannot or must not load, before allocating anything."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"model: {path} has no config.json")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"model: {config_file} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise UserError(f"model: {config_file} does not hold a JSON object")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise UserError(
            f"model: architecture {model_type!r} is not supported; supported: {', '.join(sorted(SUPPORTED_TYPES))}"
        )
    for key, (lo, hi) in _LIMITS.items():
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise UserError(f"model: config.json {key}={value!r} is outside the sane range {lo}..{hi}")
    if config["hidden_size"] % config["num_attention_heads"] and not config.get("head_dim"):
        raise UserError("model: config.json hidden_size is not divisible by num_attention_heads")
    if not list(path.glob("*.safetensors")):
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found {', '.join(pickles)}; pickle weights are never loaded)" if pickles else ""
        raise UserError(f"model: {path} has no .safetensors weights{hint}")
    return config


def load_model(spec: str | None = None, progress: Callable[[str], None] | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, display name) for a hub id, a folder, or the bundled model."""
    path = resolve_model_path(spec, progress)
    check_model_folder(path)
    import mlx_lm

    try:
        model, tokenizer = mlx_lm.load(str(path), tokenizer_config={"trust_remote_code": False})
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"model: cannot load {path}: {_one_line(exc)}") from None
    return model, tokenizer, path.name


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
