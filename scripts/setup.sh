#!/usr/bin/env bash
# Sets up mlx-kv on a fresh machine: OpenBLAS on Debian/Ubuntu (MLX's Linux
# CPU wheel is ~10x faster with it; skipped where apt is unavailable), then
# the package itself. `--dev` adds the test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "$(uname -s)" == "Linux" ]] && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
  if ! ldconfig -p 2>/dev/null | grep -q 'libopenblas.so.0 '; then
    (apt-get update -qq && apt-get install -y -qq libopenblas0-pthread >/dev/null) \
      || echo "setup: could not install OpenBLAS; continuing with MLX's bundled BLAS" >&2
  fi
fi
extra=""
if [[ "${1:-}" == "--dev" ]]; then extra="[dev]"; fi
python3 -m pip install --quiet --disable-pip-version-check -e ".${extra}"
