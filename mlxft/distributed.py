"""Data-parallel training over MLX's `mx.distributed`: the world a training process belongs to, and local launches.

A world of one (the default) sums nothing and costs nothing; the Trainer calls it the same way either way. Every rank
runs the same job on its shard of each global batch; gradients, losses and the stop decision are summed over the
world, so every rank takes the same step and makes the same choices, and rank 0 alone writes the run.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

RANK_ENV, HOSTFILE_ENV = "MLX_RANK", "MLX_HOSTFILE"  # the ring backend's launch environment (mlx.launch, --ranks)
JACCL_ENV, IBV_DEVICES_ENV = "MLX_JACCL_COORDINATOR", "MLX_IBV_DEVICES"  # JACCL's (RDMA over Thunderbolt 5, macOS)


def launch_backend() -> str | None:
    """The backend this process was launched into as one rank (`ring` or `jaccl`), or None when it was not."""
    if os.environ.get(RANK_ENV) is None:
        return None
    if os.environ.get(JACCL_ENV) and os.environ.get(IBV_DEVICES_ENV):
        return "jaccl"
    return "ring" if os.environ.get(HOSTFILE_ENV) else None


@dataclass
class World:
    """This process's place among the ranks of one training run."""

    rank: int = 0
    size: int = 1
    group: object | None = None  # mx.distributed.Group when size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: list[int]) -> list[int]:
        """This rank's part of a global batch: every size-th sample from its rank (the same split on every resume)."""
        return list(indices[self.rank :: self.size]) if self.size > 1 else list(indices)

    def sum(self, x):
        """The sum of `x` (an mx.array) over every rank; `x` itself in a world of one."""
        if self.size == 1:
            return x
        import mlx.core as mx

        return mx.distributed.all_sum(x, group=self.group)

    def sum_floats(self, values: list[float]) -> list[float]:
        """Plain numbers summed over the world (one small all_sum)."""
        if self.size == 1:
            return list(values)
        import mlx.core as mx

        out = self.sum(mx.array(values, dtype=mx.float32))
        return [float(v) for v in out.tolist()]

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says True (a collective: every rank must call it at the same point)."""
        return self.sum_floats([1.0 if flag else 0.0])[0] > 0 if self.size > 1 else flag


def current_world() -> World:
    """The world described by MLX's launch environment (what `mlx.launch` or `--ranks` set), else a world of one."""
    backend = launch_backend()
    if backend is None:
        return World()
    import mlx.core as mx

    group = mx.distributed.init(strict=True, backend=backend)
    return World(rank=group.rank(), size=group.size(), group=group)


def launched_rank() -> int | None:
    """This process's rank when it was started as one rank of a world (e.g. by `mlx.launch`), else None."""
    if launch_backend() is None:
        return None
    value = os.environ.get(RANK_ENV, "")
    return int(value) if value.isdigit() else None


def launched_size() -> int:
    """How many ranks the launch environment names (its hostfile, or JACCL's device list; 1 without one)."""
    try:
        with open(os.environ[IBV_DEVICES_ENV if launch_backend() == "jaccl" else HOSTFILE_ENV], encoding="utf-8") as f:
            hosts = json.load(f)
        return len(hosts) if isinstance(hosts, list) and hosts else 1
    except (KeyError, OSError, ValueError):
        return 1


def free_ports(n: int) -> list[int]:
    """n TCP ports on loopback that are free now (bound once, then released for the ranks to take)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def loopback_hostfile(path, ranks: int) -> list[list[str]]:
    """Write the ring backend's hostfile for `ranks` processes on this host: one loopback address per rank."""
    hosts = [[f"127.0.0.1:{p}"] for p in free_ports(ranks)]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(hosts, f)
    return hosts


def rank_environment(rank: int, ranks: int, hostfile: str, cpu_threads: int | None) -> dict[str, str]:
    """The environment variables of one local rank: its place in the ring and its share of the BLAS threads."""
    env = {RANK_ENV: str(rank), HOSTFILE_ENV: str(hostfile)}
    if cpu_threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            env[var] = str(cpu_threads)
    return env
