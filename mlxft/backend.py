"""Facts about this machine: OS, chip, MLX device, which BLAS and how fast, memory, Hub token, caches (`mlxft doctor`).

GB means 10**9 bytes, here and everywhere mlxft prints memory (peak_memory_gb, `mlxft doctor`, `mlxft models`,
memory plans, the TUI); `memory_to_judge()` is the one "available" number they all judge against.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from mlxft._blas import STATE as BLAS_STATE
from mlxft.errors import MlxftError

GB = 10**9  # one unit everywhere mlxft prints memory
MEMORY_ENV = "MLXFT_MEMORY_GB"  # judge against this many GB instead of this machine's available memory
RUNTIME_OVERHEAD_BYTES = 512 << 20  # the runtime itself: interpreter, MLX, tokenizer, allocator slack
TIGHT_FRACTION = 0.8  # above this share of available memory the run may swap or be killed

Verdict = Literal["fits", "tight", "will-not-fit"]
FIT_MARKS = {"fits": "yes", "tight": "tight", "will-not-fit": "no"}


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


# ---------------------------------------------------------------------------------------------------------
# Memory


def machine_memory() -> tuple[int, int]:
    """(total, available) bytes of memory; on Apple Silicon, available is capped at what Metal may wire."""
    total, available = _system_memory()
    limit = _metal_working_set()
    if limit:
        available = min(available, limit)
    return total, available


def _system_memory() -> tuple[int, int]:
    if sys.platform.startswith("linux"):
        try:
            info = {}
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    info[key] = int(rest.split()[0]) * 1024
            total = info["MemTotal"]
            available = info.get("MemAvailable", info.get("MemFree", total))
            return total, min(available, _cgroup_room(total))
        except (OSError, KeyError, ValueError, IndexError):
            pass
    if sys.platform == "darwin":
        try:
            total = int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5, check=True).stdout)
            return total, _vm_stat_available(total)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    page = os.sysconf("SC_PAGE_SIZE")
    total = page * os.sysconf("SC_PHYS_PAGES")
    try:
        available = page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        available = total
    return total, available


def _cgroup_room(total: int) -> int:
    # In a container the cgroup limit, not the host's free memory, decides when the kernel kills us.
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return total
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        with open("/sys/fs/cgroup/memory.stat", encoding="ascii") as f:
            stat = dict(line.split() for line in f if line.count(" ") == 1)
        # Inactive file cache counts as used but is given back on demand.
        return max(0, int(limit) - used + int(stat.get("inactive_file", 0)))
    except (OSError, ValueError):
        return total


def _vm_stat_available(total: int) -> int:
    out = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=5, check=True).stdout
    page = int(m.group(1)) if (m := re.search(r"page size of (\d+) bytes", out)) else 16384
    pages = {}
    for line in out.splitlines()[1:]:
        key, _, value = line.partition(":")
        if value.strip().rstrip(".").isdigit():
            pages[key.strip()] = int(value.strip().rstrip("."))
    # Free, inactive, speculative and purgeable pages can all be handed to a new allocation.
    reclaimable = sum(pages.get(k, 0) for k in ("Pages free", "Pages inactive", "Pages speculative", "Pages purgeable"))
    return min(total, reclaimable * page) if reclaimable else total


def memory_to_judge(memory_gb: float | None = None) -> tuple[int, int]:
    """(total, available) bytes every plan and verdict is judged against: `memory_gb` or $MLXFT_MEMORY_GB when given
    (to see what fits a machine you do not have, and for repeatable tests), else this machine's `machine_memory()`."""
    if memory_gb is None and os.environ.get(MEMORY_ENV):
        try:
            memory_gb = float(os.environ[MEMORY_ENV])
        except ValueError:
            raise MlxftError(f"{MEMORY_ENV}={os.environ[MEMORY_ENV]!r} is not a number of GB", hint=f"set it like {MEMORY_ENV}=16, or unset it") from None
    if memory_gb is None:
        return machine_memory()
    if not memory_gb > 0 or math.isinf(memory_gb):
        raise MlxftError(f"memory must be more than 0 GB, got {memory_gb:g}", hint="give the memory of the machine to judge against in GB, e.g. 16")
    size = int(memory_gb * GB)
    return size, size


def judge(total: int, available: int) -> Verdict:
    """'fits' below 80% of available memory, 'tight' up to 100%, else 'will-not-fit' (every memory table's verdict)."""
    if total <= TIGHT_FRACTION * available:
        return "fits"
    return "tight" if total <= available else "will-not-fit"


def _metal_working_set() -> int | None:
    if sys.platform != "darwin":
        return None
    try:
        # Asked whether or not mlx is loaded yet, so every command reports the same "available".
        import mlx.core as mx
    except ImportError:
        return None
    try:
        if not mx.metal.is_available():
            return None
        info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
        return int(info["max_recommended_working_set_size"]) or None
    except (AttributeError, KeyError, RuntimeError, TypeError, ValueError):
        return None


def default_device_is_gpu() -> bool:
    """Whether MLX's default device here is a GPU (Metal, CUDA); without mlx installed, whether this is Apple Silicon."""
    try:
        import mlx.core as mx  # mlxft is imported already (we are in it), so the fast BLAS is in place
    except ImportError:
        return sys.platform == "darwin" and platform.machine() == "arm64"
    return mx.default_device() != mx.cpu


def default_compute_dtype() -> str:
    """What a recipe's dtype 'auto' means here: float32 on MLX's CPU backend, bfloat16 on a GPU."""
    return "bfloat16" if default_device_is_gpu() else "float32"
