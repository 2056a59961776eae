"""Data-parallel training on one or several nodes.

Three ways in:
- ``--num-gpus N`` (one node): :func:`spawn` starts N processes with
  ``torch.multiprocessing``, a free port on localhost;
- under ``torchrun`` (one or many nodes, its ``--nnodes/--node-rank/--rdzv-*``
  flags): the ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` environment is detected;
- otherwise a single process.
The backend is NCCL on CUDA and gloo on CPU.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_environment() -> DistInfo | None:
    """The torchrun-style environment if this process was started by torchrun (or like it), else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                        int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    return None


def init_process_group(info: DistInfo, device: torch.device) -> None:
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_floats(values: list[float]) -> list[list[float]]:
    """Every rank's ``values`` (same length on all ranks), in rank order."""
    t = torch.tensor(values, dtype=torch.float64)
    if not (dist.is_available() and dist.is_initialized()):
        return [t.tolist()]
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [o.tolist() for o in out]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_entry(local_rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(local_rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(local_rank)})
    fn(*args)


def spawn(fn: Callable, world_size: int, args: tuple) -> None:
    """Run ``fn(*args)`` in ``world_size`` fresh processes on this node, as ranks 0..N-1."""
    import torch.multiprocessing as mp
    mp.spawn(_spawn_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)
