"""Load an optimized BLAS before `mlx.core` on Linux, where the wheel ships the reference one.

MLX's Linux CPU wheel links a bundled reference BLAS (~3-6 GFLOP/s). Loading an
optimized libblas with RTLD_GLOBAL before libmlx is loaded makes the dynamic
linker resolve `sgemm_`/`cblas_sgemm` to it instead (~200 GFLOP/s on 2 cores).
This module imports nothing heavy; `mlxft/__init__.py` calls `ensure_fast_blas()`.
Set MLXFT_BLAS=off to keep the reference BLAS, or MLXFT_BLAS=/path/libblas.so to pick one.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
from dataclasses import dataclass

# Where Debian/Ubuntu and Fedora put OpenBLAS (the multi-threaded flavour first).
CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


@dataclass
class BlasState:
    """What happened: which BLAS MLX will call and why."""

    bundled_reference: str | None = None  # the wheel's own reference libblas, if any
    loaded: str | None = None  # the optimized library we loaded, if any
    reason: str = "not checked"


STATE = BlasState()


def _bundled_reference_blas() -> str | None:
    """Path of the reference libblas the mlx[cpu] wheel bundles, or None (macOS, CUDA, source builds)."""
    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        return None
    # `mlx` is a namespace package: MLX's own kernel cache (/tmp/mlx) can be a portion of it when the
    # current folder is /tmp, so look beside every portion, not only the first.
    for portion in spec.submodule_search_locations:
        site = os.path.dirname(portion)
        found = sorted(glob.glob(os.path.join(site, "mlx_cpu.libs", "libblas*.so*")))
        if found:
            return found[0]
    return None


def _find_optimized() -> str | None:
    for path in CANDIDATES:
        if os.path.exists(path):
            return path
    return None


def ensure_fast_blas() -> BlasState:
    """Preload an optimized BLAS when MLX would otherwise use the bundled reference one."""
    if STATE.reason != "not checked":
        return STATE
    if not sys.platform.startswith("linux"):
        STATE.reason = "not Linux: MLX uses Accelerate/Metal"
        return STATE
    choice = os.environ.get("MLXFT_BLAS", "").strip()
    if choice.lower() in ("off", "0", "reference"):
        STATE.reason = "MLXFT_BLAS=off"
        return STATE
    STATE.bundled_reference = _bundled_reference_blas()
    if STATE.bundled_reference is None and not choice:
        STATE.reason = "MLX does not bundle the reference BLAS here"
        return STATE
    if "mlx.core" in sys.modules:
        STATE.reason = "mlx.core was imported before mlxft: too late to preload a BLAS"
        return STATE
    path = choice or _find_optimized()
    if path is None:
        STATE.reason = "no optimized BLAS found: install libopenblas0-pthread (apt) for ~30x faster matmuls"
        return STATE
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        STATE.reason = f"could not load {path}: {exc}"
        return STATE
    STATE.loaded = path
    STATE.reason = "preloaded before mlx.core"
    # Children started with spawn import mlxft first and preload again; LD_PRELOAD also covers
    # subprocesses that are not Python-mlxft (e.g. `python -m mlx_lm` in benchmarks).
    os.environ.setdefault("MLXFT_BLAS_LOADED", path)
    return STATE
