"""Distributed set-up from the torchrun environment (NCCL on GPU, gloo on CPU) and small collectives."""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _attempt_store() -> dist.Store:
    """The rendezvous store of this launch (``env://``, as a plain ``init_process_group``), its keys prefixed
    with torchrun's restart count: a restarted worker group meets in the old group's store, where a restarted
    rank 0 could read a dead rank's address (docs/running.md#elastic-restarts)."""
    store, _, _ = next(dist.rendezvous("env://"))
    return dist.PrefixStore(f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[DistInfo]:
    """The process's distributed session: the process group joined when launched by torchrun (a single
    process otherwise), and left on exit, whatever happens inside.

    Leave the run's objects in a function called inside the block (not in the block's own frame): on an
    error their frames are cleared here, before the teardown. A gloo process group whose last owner is DDP's
    reducer is destroyed with the GIL held and deadlocks against its own worker threads (the end of a failed
    CPU DDP run hung about every second time while the traceback kept the trainer alive).
    """
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if use_cuda else "gloo", store=_attempt_store(), rank=rank, world_size=world
        )
    try:
        yield DistInfo(rank, world, local, dev)
    except BaseException as err:
        traceback.clear_frames(err.__traceback__)  # frames still executing are skipped
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (no-op in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def all_gather_object(obj: object) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not dist.is_initialized():
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
