"""What an install ships: every package, the stylesheet and the bundled model
(scripts/check_install.sh builds a wheel and runs it from a throwaway venv)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_and_ships_models_as_package_data():
    tomllib = pytest.importorskip("tomllib")
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("mlx_kv", "app") for p in (ROOT / top).rglob("__init__.py")}
    assert set(settings["packages"]) == found | {"mlx_kv.bundled"}
    assert settings["package-dir"] == {"mlx_kv.bundled": "models"}
    assert settings["package-data"]["mlx_kv.bundled"] == ["mlx-kv-tiny/*"]
    assert [p.name for p in (ROOT / "models").iterdir() if p.is_dir()] == ["mlx-kv-tiny"]  # no deeper folders to miss


def test_the_bundled_model_is_package_data_when_installed_and_models_in_a_checkout(tmp_path):
    from mlx_kv.models import BUNDLED_MODEL, _bundled_model

    assert BUNDLED_MODEL == ROOT / "models" / "mlx-kv-tiny"
    package = tmp_path / "site-packages" / "mlx_kv"
    (package / "bundled" / "mlx-kv-tiny").mkdir(parents=True)
    assert _bundled_model(package) == package / "bundled" / "mlx-kv-tiny"
    checkout = tmp_path / "checkout" / "mlx_kv"
    checkout.mkdir(parents=True)
    assert _bundled_model(checkout) == tmp_path / "checkout" / "models" / "mlx-kv-tiny"
