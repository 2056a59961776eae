"""Data-parallel training on one or several nodes.

Three ways in:
- ``--num-gpus N`` (one node): :func:`spawn` starts N processes with
  ``torch.multiprocessing``, a free port on localhost;
- under ``torchrun`` (one or many nodes, its ``--nnodes/--node-rank/--rdzv-*``
  flags): the ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` environment is detected;
- otherwise a single process.
The backend is NCCL on CUDA and gloo on CPU.

Ranks that may disagree about a user error (a missing checkpoint on one node, a
bad case on one rank's share of the validation) agree on it collectively
(:func:`on_main`, :func:`on_every_rank`), so every rank stops with the same one
line instead of the others waiting for the process-group timeout. File
contract: one results folder that every node sees (a shared file system);
only rank 0 writes logs and checkpoints, every rank writes its own validation
cases there.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from ..errors import SupremError

T = TypeVar("T")


@dataclass
class DistInfo:
    """This process's place: global ``rank`` of ``world_size``, ``local_rank`` of ``local_world_size`` on its node."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on global rank 0, the process that writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains (``world_size > 1``)."""
        return self.world_size > 1


def from_environment() -> DistInfo | None:
    """The torchrun-style environment if this process was started by torchrun (or like it), else None.

    ``LOCAL_RANK`` (the GPU on this node) and ``RANK`` (the global rank: data slice, rank-0 duties) differ on
    every node but the first; a launcher that sets no ``LOCAL_RANK`` gets ``RANK % LOCAL_WORLD_SIZE``.
    """
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    rank, world = _int_env("RANK"), _int_env("WORLD_SIZE")
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise SupremError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world}); launch with torchrun")
    local_world = _int_env("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world
    local = _int_env("LOCAL_RANK") if "LOCAL_RANK" in env else rank % local_world
    return DistInfo(rank, world, local, local_world)


def _int_env(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise SupremError(f"environment variable {name}={os.environ[name]!r} must be an integer (torchrun sets "
                          f"it)") from None


def is_elastic_restart() -> bool:
    """True in workers that torchrun restarted after a failure (``--max-restarts``): they must resume."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def init_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the default process group (NCCL on CUDA, gloo on the CPU); nothing for one process or when joined.

    On CUDA the current device is set to ``device`` first.

    Parameters
    ----------
    info : DistInfo
        This process's rank and world size.
    device : torch.device
        The device this process trains on.
    """
    if not info.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        # NCCL runs collectives on the current device; unset, every rank's barrier would land on GPU 0
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


# The final barrier's work of this process, held until the interpreter exits (see shutdown).
_FINAL_BARRIER: list = []


def shutdown(finished: bool = False) -> None:
    """Destroy the default process group if one is initialised.

    Parameters
    ----------
    finished : bool
        True when this rank completed its work normally: every rank then meets at a barrier first, so no rank
        tears its gloo connections down while a peer still uses them. After an error there is no barrier, which
        a failed peer would never reach.

    Notes
    -----
    The barrier's work is kept referenced here until exit. Gloo's worker thread otherwise drops the last
    reference just after ``wait()`` returns, and that frees the collectives queued before it with their tensors
    (``all_gather``'s), which needs the GIL. When the interpreter was already finalising, Python ended that
    thread inside a C++ destructor and the rank aborted with "terminate called without an active exception"
    after its work was done (18 of 150 runs of a two-rank script; seen in a core dump). Freed by the main
    thread at exit instead, the same release is harmless.
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            work = dist.barrier(async_op=True)
            work.wait()
            _FINAL_BARRIER.append(work)
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (a no-op without an initialised process group); returns None."""
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


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_gather_objects(obj: Any) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if not _active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 alone (it writes shared files), its result handed to every rank.

    A :class:`SupremError` on rank 0 is raised on every rank, so no rank waits for one that gave up.
    """
    if not _active():
        return fn()
    box: list = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = (True, fn())
        except SupremError as exc:
            box[0] = (False, str(exc))
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise SupremError(value)
    return value


def on_every_rank(fn: Callable[[], T]) -> T:
    """``fn()`` on every rank; if it raises :class:`SupremError` on any, every rank raises the first such error."""
    try:
        result, error = fn(), None
    except SupremError as exc:
        if not _active():
            raise
        result, error = None, str(exc)
    failed = [(r, e) for r, e in enumerate(all_gather_objects(error)) if e is not None]
    if failed:
        rank, text = failed[0]
        raise SupremError(text if dist.get_world_size() == 1 else f"rank {rank}: {text}")
    return result


def barrier() -> None:
    """Wait for every rank (a no-op without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when asked (the OS's choice; it may be taken again later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_entry(local_rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(local_rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(local_rank),
                       "LOCAL_WORLD_SIZE": str(world_size)})
    fn(*args)


def spawn(fn: Callable, world_size: int, args: tuple) -> None:
    """Run ``fn(*args)`` in ``world_size`` fresh processes on this node, as ranks 0..N-1.

    Each process gets ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT`` and ``RANK``/``LOCAL_RANK`` (equal),
    ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE`` in its environment; returns when all have finished.

    Parameters
    ----------
    fn : callable
        Picklable function run in each process.
    world_size : int
        Number of processes.
    args : tuple
        Arguments of ``fn``.
    """
    import torch.multiprocessing as mp
    mp.spawn(_spawn_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)
