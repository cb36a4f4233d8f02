#!/usr/bin/env bash
# A non-editable install runs on its own: builds the wheel, installs it into a
# throwaway venv and, from outside the checkout, loads the bundled model, answers
# a prompt, and profiles it into a throwaway cache (never into the install).
# Dependencies come from the current environment (PYTHON, default python3),
# made visible to the venv without its own (editable) mlx-kv, so nothing is
# downloaded but the build backend. Not part of the test suite (about 20 s):
#   PYTHON=.venv/bin/python ./scripts/check_install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" -m pip wheel --quiet --no-deps . -w "$work/dist"
"$python" -m venv "$work/venv"
venv_site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$venv_site/deps-from-the-dev-env.pth"
"$work/venv/bin/python" -m pip install --quiet --no-deps "$work"/dist/mlx_kv-*.whl

cd "$work"
export XDG_CACHE_HOME="$work/cache" HF_HUB_OFFLINE=1
"$work/venv/bin/python" - "$venv_site" <<'PY'
import sys
from importlib.resources import files
from pathlib import Path

import app, mlx_kv
from mlx_kv.models import BUNDLED_MODEL

site = Path(sys.argv[1]).resolve()
for module in (mlx_kv, app):
    assert Path(module.__file__).resolve().is_relative_to(site), f"{module.__name__} from {module.__file__}"
assert BUNDLED_MODEL.resolve().is_relative_to(site), BUNDLED_MODEL
assert (BUNDLED_MODEL / "model.safetensors").is_file() and (files("app") / "app.tcss").is_file()
print(f"installed: {mlx_kv.__file__}; bundled model: {BUNDLED_MODEL}")
PY
"$work/venv/bin/mlx-kv" generate "What is the special magic number for lemon ?" --max-tokens 8
"$work/venv/bin/mlx-kv" budget --budget 2M | tail -1
"$work/venv/bin/mlx-kv" profile --prompts 1 --tokens 64 > /dev/null
ls "$XDG_CACHE_HOME"/mlx-kv/profiles/mlx-kv-tiny-*.json
"$work/venv/bin/python" -c "
from mlx_kv.models import BUNDLED_MODEL; from mlx_kv.profile import find_profile
found = find_profile(BUNDLED_MODEL); assert '$work/cache' in str(found), found; print('profile read from', found)"
echo "check_install: ok"
