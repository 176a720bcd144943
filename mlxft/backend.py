"""Facts about this machine for `mlxft doctor`: OS, chip, MLX device, which BLAS and how fast, memory, Hub token, caches."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlxft._blas import STATE as BLAS_STATE


@dataclass
class DoctorReport:
    os: str
    cpu: str
    cores: int
    python: str
    mlx_version: str
    mlx_lm_version: str
    device: str
    blas: str
    blas_note: str
    matmul_gflops: float
    reference_blas_gflops: float | None
    total_memory_gb: float  # GB = 10**9 bytes, as everywhere in mlxft
    available_memory_gb: float
    judged_memory_gb: float  # what memory plans and `mlxft models` judge against: available, or $MLXFT_MEMORY_GB
    hub_token: str
    caches: dict = field(default_factory=dict)
    advice: list = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def cpu_name() -> str:
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """float32 n x n matmul throughput on MLX's default device."""
    import mlx.core as mx

    a = mx.random.normal((n, n))
    b = mx.random.normal((n, n))
    mx.eval(a @ b)  # warm up (kernel build, thread pool)
    t0 = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def measure_reference_gflops(timeout: float = 120) -> float | None:
    """The same measurement in a child process with the BLAS preload off, to show the speed-up."""
    code = "import mlxft.backend as b; print(b.measure_matmul_gflops(512, 3))"
    env = {**os.environ, "MLXFT_BLAS": "off"}
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
        return float(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def hub_token_state() -> str:
    """Whether a Hugging Face token is configured: never the token itself."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "set (environment variable)"
    try:
        from huggingface_hub import get_token

        return "set (saved by `hf auth login`)" if get_token() else "not set (public models only; `hf auth login` for gated ones)"
    except Exception:  # an unreadable token file must not break the doctor
        return "unknown"


def cache_folders() -> dict:
    from mlxft.llm.loading import cache_root

    hf = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    out = {"mlxft": str(cache_root()), "huggingface": hf}
    if sys.platform.startswith("linux"):
        out["mlx kernels"] = "/tmp/mlx (CPU kernels compiled on first use)"
    return out


def doctor(compare_reference: bool = True) -> DoctorReport:
    import mlx.core as mx

    from mlxft.llm.loading import device_name
    from mlxft.train.memory import GB, machine_memory, memory_to_judge

    try:
        from importlib.metadata import version

        mlx_lm_version = version("mlx-lm")
    except Exception:
        mlx_lm_version = "not installed"
    total, available = machine_memory()
    gflops = measure_matmul_gflops()
    ref = None
    advice = []
    if BLAS_STATE.loaded:
        blas = BLAS_STATE.loaded
        if compare_reference:
            ref = measure_reference_gflops()
    elif BLAS_STATE.bundled_reference:
        blas = f"reference BLAS bundled with mlx ({BLAS_STATE.bundled_reference})"
        advice.append("install OpenBLAS for ~30x faster CPU training: `sudo apt-get install libopenblas0-pthread` (Debian/Ubuntu) or `sudo dnf install openblas` (Fedora)")
    elif sys.platform == "darwin":
        blas = "Accelerate (macOS)"
    else:
        blas = "MLX's own build"
    dev = device_name()
    if dev == "cpu" and sys.platform == "darwin":
        advice.append("MLX is on the CPU: on Apple Silicon install the `mlx` wheel with Metal support")
    return DoctorReport(
        os=f"{platform.system()} {platform.release()} ({platform.machine()})", cpu=cpu_name(), cores=os.cpu_count() or 1,
        python=platform.python_version(), mlx_version=mx.__version__, mlx_lm_version=mlx_lm_version, device=dev,
        blas=blas, blas_note=BLAS_STATE.reason, matmul_gflops=round(gflops, 1), reference_blas_gflops=round(ref, 1) if ref else None,
        total_memory_gb=round(total / GB, 1), available_memory_gb=round(available / GB, 1),
        judged_memory_gb=round(memory_to_judge()[1] / GB, 1), hub_token=hub_token_state(),
        caches=cache_folders(), advice=advice,
    )


def format_doctor(r: DoctorReport) -> str:
    from mlxft.train.memory import MEMORY_ENV

    speed = f"{r.matmul_gflops:.0f} GFLOP/s (float32 1024x1024 matmul)"
    if r.reference_blas_gflops:
        speed += f"; reference BLAS: {r.reference_blas_gflops:.1f} GFLOP/s -> {r.matmul_gflops / r.reference_blas_gflops:.0f}x faster"
    rows = [
        ("OS", r.os), ("CPU", f"{r.cpu} ({r.cores} cores)"), ("Python", r.python),
        ("MLX", f"{r.mlx_version} on {r.device}"), ("mlx-lm", r.mlx_lm_version),
        ("BLAS", f"{r.blas}  [{r.blas_note}]"), ("matmul", speed),
        ("memory", f"{r.total_memory_gb:.1f} GB total, {r.available_memory_gb:.1f} GB available"
         + (f"; plans judge against {r.judged_memory_gb:.1f} GB ({MEMORY_ENV})" if os.environ.get(MEMORY_ENV) else "")),
        ("HF token", r.hub_token),
    ] + [(f"cache ({k})", v) for k, v in r.caches.items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"advice: {a}" for a in r.advice]
    return "\n".join(lines)
