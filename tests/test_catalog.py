"""The model catalog (mlx_kv.catalog): what the model picker lists, found in
the usual places without loading anything."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from mlx_kv.catalog import find_models


def _hub(tmp_path: Path):
    snap = tmp_path / "hub" / "snap"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "gemma2"}')
    good = tmp_path / "hub" / "good"
    good.mkdir(parents=True)
    repos = [SimpleNamespace(repo_id="mlx-community/gemma-2-2b", repo_type="model", size_on_disk=5 << 30,
                             revisions=[SimpleNamespace(snapshot_path=str(snap), last_modified=1)]),
             SimpleNamespace(repo_id="mlx-community/Llama-3.2-1B-Instruct-4bit", repo_type="model",
                             size_on_disk=700 << 20, revisions=[SimpleNamespace(snapshot_path=str(good), last_modified=1)]),
             SimpleNamespace(repo_id="some/dataset", repo_type="dataset", size_on_disk=1, revisions=[])]
    return lambda: SimpleNamespace(repos=repos)


def _places(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    lm = home / ".lmstudio" / "models" / "lmstudio-community" / "Qwen2.5-0.5B"
    lm.mkdir(parents=True)
    (lm / "Qwen2.5-0.5B-Instruct-Q4_0.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    (lm / "mmproj-model-f16.gguf").write_bytes(b"GGUF")
    cpp = home / ".cache" / "llama.cpp"
    cpp.mkdir(parents=True)
    (cpp / "smollm2-360m-q8_0.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    return home


def test_the_catalog_finds_models_in_the_usual_places(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_KV_CACHE_DIR", str(tmp_path / "cache"))
    home = _places(tmp_path)
    added = tmp_path / "mine"
    folder = added / "tiny-mistral"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "mistral"}')
    (folder / "model.safetensors").write_bytes(b"x")
    entries = find_models([str(added)], home=home, scan_hub=_hub(tmp_path))
    by_name = {e.name: e for e in entries}
    assert [e.kind for e in entries[:2]] == ["bundled", "default"]
    assert not by_name["SmolLM2-135M-Instruct"].usable  # not converted in this cache
    assert by_name["Qwen2.5-0.5B-Instruct-Q4_0.gguf"].where == "LM Studio"
    assert by_name["smollm2-360m-q8_0.gguf"].where == "llama.cpp"
    assert "mmproj-model-f16.gguf" not in by_name
    assert by_name["tiny-mistral"].kind == "folder" and by_name["tiny-mistral"].usable
    assert "gemma2" in by_name["mlx-community/gemma-2-2b"].note and not by_name["mlx-community/gemma-2-2b"].usable
    assert by_name["mlx-community/Llama-3.2-1B-Instruct-4bit"].usable
    assert "some/dataset" not in by_name

    def missing():
        raise RuntimeError("Cache directory not found")

    assert [e.kind for e in find_models(home=tmp_path / "nobody", scan_hub=missing)] == ["bundled", "default"]


def test_a_bad_folder_is_skipped_and_depth_is_bounded(tmp_path):
    deep = tmp_path / "a" / "b" / "c" / "d" / "e" / "f" / "g"
    deep.mkdir(parents=True)
    (deep / "too-deep.gguf").write_bytes(b"GGUF")
    (tmp_path / "a" / "shallow.gguf").write_bytes(b"GGUF")
    names = [e.name for e in find_models([str(tmp_path), str(tmp_path / "missing")], home=tmp_path / "h",
                                         scan_hub=lambda: SimpleNamespace(repos=[]))]
    assert "shallow.gguf" in names and "too-deep.gguf" not in names
