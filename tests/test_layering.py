"""The library never imports the UI: no mlx_kv module loads app/ or Textual."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import mlx_kv
names = sorted(m.name for m in pkgutil.walk_packages(mlx_kv.__path__, "mlx_kv."))
for name in names:
    importlib.import_module(name)
ui = sorted(m for m in sys.modules if m.split(".")[0] in ("app", "textual"))
print(len(names), ui)
"""


def test_no_library_module_imports_the_app_or_textual():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    count, ui = out.stdout.split(" ", 1)
    assert int(count) > 40  # every module was imported, commands and benchmarks included
    assert ui.strip() == "[]"


def test_building_every_parser_loads_neither_mlx_nor_the_app():
    code = ("import sys; from mlx_kv.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('app', 'textual', 'mlx', 'mlx_lm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
