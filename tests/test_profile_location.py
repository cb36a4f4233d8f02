"""Profiles of the shipped model go to the user's cache, never into the checkout or the install."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from mlx_kv.models import BUNDLED_MODEL
from mlx_kv.profile import PROFILE_NAME, find_profile, profile_path, save_profile

SHIPPED = BUNDLED_MODEL / PROFILE_NAME


def test_the_shipped_models_profile_path_is_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("MLX_KV_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = profile_path(BUNDLED_MODEL)
    assert target.parent == tmp_path / "mlx-kv" / "profiles" and target.name.startswith("mlx-kv-tiny-")
    assert find_profile(BUNDLED_MODEL) == SHIPPED  # nothing measured yet: the profile that ships with it
    save_profile({"layers": [{"entropy": 1.0}]}, target)
    assert find_profile(BUNDLED_MODEL) == target
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty means unset (XDG)
    assert str(profile_path(BUNDLED_MODEL)).startswith(str(os.path.expanduser("~/.cache/mlx-kv/profiles")))


def test_a_users_own_folder_keeps_its_profile_beside_it(tiny_model_dir):
    assert profile_path(tiny_model_dir) == tiny_model_dir / PROFILE_NAME
    assert find_profile(tiny_model_dir) is None


def test_mlx_kv_profile_on_the_bundled_model_leaves_the_checkout_alone(tmp_path):
    before = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    env.pop("MLX_KV_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-m", "mlx_kv.cli", "profile", "--model", "mlx-kv-tiny", "--prompts", "1",
                           "--tokens", "64", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    saved = list((tmp_path / "mlx-kv" / "profiles").glob("mlx-kv-tiny-*.json"))
    assert len(saved) == 1 and f"saved to {saved[0]}" in done.stderr
    assert json.loads(saved[0].read_text())["layers"] == json.loads(done.stdout)["layers"]
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == before
