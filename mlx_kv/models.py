"""Finding and loading a model: a GGUF file, a local folder, a hub id, or a name.

A model folder is untrusted input: only safetensors weights are read (never
pickle), remote code is never run, and the config's sizes are checked before
anything is allocated. A GGUF file is converted once into the user's cache
(mlx_kv.gguf) and loaded from there.

Names: `mlx-kv-tiny` is the bundled 2M-parameter test model; the default
model (no --model) is SmolLM2-135M-Instruct once `mlx-kv fetch` (run by
setup) has converted it, else mlx-kv-tiny with a one-line note.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from mlx_kv.errors import UserError
from mlx_kv.events import DownloadNote


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


def default_model(progress: Callable[[str], None] | None = None) -> str:
    """$MLX_KV_MODEL, else the converted default model, else mlx-kv-tiny (with a note)."""
    from mlx_kv.default_model import DEFAULT_NAME, installed_default

    if os.environ.get("MLX_KV_MODEL"):
        return os.environ["MLX_KV_MODEL"]
    found = installed_default()
    if found is not None:
        return str(found)
    if progress is not None:
        progress(f"model: {DEFAULT_NAME} is not set up here (run `mlx-kv fetch`); using the bundled mlx-kv-tiny")
    return str(BUNDLED_MODEL)


def named_model(spec: str) -> Path | None:
    """The folder a model name stands for, if `spec` is one."""
    from mlx_kv.default_model import DEFAULT_NAME, installed_default

    if spec == BUNDLED_MODEL.name:
        return BUNDLED_MODEL
    if spec.lower() in (DEFAULT_NAME.lower(), "smollm2"):
        found = installed_default()
        if found is None:
            raise UserError(f"model: {DEFAULT_NAME} is not set up here; run `mlx-kv fetch` first")
        return found
    return None


def resolve_model_path(spec: str | None, progress: Callable[[str], None] | None = None) -> Path:
    """A local folder for `spec`: a name, a folder, a GGUF file (converted
    once into the cache) or a hub id (downloaded once)."""
    spec = spec or default_model(progress)
    named = named_model(spec)
    if named is not None:
        return named
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            from mlx_kv.gguf import converted_folder

            return converted_folder(path, progress)
        if not path.is_dir():
            raise UserError(f"model: {spec} is a file; give a .gguf file or the folder that holds config.json")
        return path
    if path.suffix.lower() == ".gguf":
        raise UserError(f"model: file {spec} does not exist")
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
                    progress(DownloadNote(f"downloading {repo_id}: {min(100, 10 * tenth)}% of {size}", repo_id,
                                          min(1.0, self.n / total), int(total) if self._unit == "B" else None))
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


def load_model(spec: str | None = None, progress: Callable[[str], None] | None = None,
               weights: str = "auto") -> tuple[Any, Any, str]:
    """(model, tokenizer, display name) for a name, a GGUF file, a folder or a hub id.

    weights: "quantized" keeps quantized layers as stored, "float32"
    dequantizes them, "auto" picks per machine (see `choose_weights`).
    """
    if weights not in WEIGHTS:
        raise UserError(f"weights: must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    path = resolve_model_path(spec, progress)
    check_model_folder(path)
    import mlx_lm

    try:
        model, tokenizer = mlx_lm.load(str(path), tokenizer_config={"trust_remote_code": False})
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"model: cannot load {path}: {_one_line(exc)}") from None
    name = path.name
    if is_quantized(model) and choose_weights(weights, model) == "float32":
        dequantize(model)
        name += " (float32)"
    return model, tokenizer, name


WEIGHTS = ("auto", "quantized", "float32")
FLOAT32_SHARE = 0.25  # auto: dequantize only while float32 weights take at most this share of free memory


def is_quantized(model: Any) -> bool:
    import mlx.nn as nn

    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def choose_weights(setting: str, model: Any) -> str:
    """"auto": float32 on a CPU, where quantized matmuls are several times
    slower than float32 ones with OpenBLAS, if the float32 weights fit;
    quantized on a GPU (Metal, CUDA), where 4-bit is the fast path."""
    if setting != "auto":
        return setting
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return "quantized"
    from mlx_kv.budget import available_memory

    float32_bytes = 4 * parameter_count(model)
    return "float32" if float32_bytes <= FLOAT32_SHARE * available_memory() else "quantized"


def parameter_count(model: Any) -> int:
    """Weights, counting each quantized weight once (not its packed words)."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    total = 0
    for _, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            total += module.scales.size * module.group_size
            total += module.bias.size if "bias" in module else 0
        elif not module.children():
            total += sum(v.size for _, v in tree_flatten(module.parameters()))
    return total


def dequantize(model: Any) -> None:
    """Quantized layers to float32 in place (and every other float parameter with them)."""
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model

    model.set_dtype(mx.float32)  # scales and biases first: dequantizing with float16 ones rounds every weight
    dequantize_model(model)
    mx.eval(model.parameters())


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
