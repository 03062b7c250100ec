"""Step-indexed, resumable training batches from a source and a target dataset.

Batch ``k`` of a dataset is a pure function of ``(seed, k, rank)``: the epoch permutation comes from
``DistributedSampler`` (seed + epoch), and each sample's random crop/flip from a generator seeded by
``(seed, epoch, index)``. Resuming at step k therefore needs no replay, and an interrupted run continues with
exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class Shard(Protocol):
    """Where this process sits among the ranks (``refign.engine.dist.DistInfo`` is one); the data layer
    reads it without importing the engine."""

    rank: int
    world_size: int
    device: torch.device


class SeededDataset(Dataset):
    """Receives ``(epoch, index)`` and seeds the dataset's transform for that draw before loading."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and hasattr(transform, "rng"):
            transform.rng = np.random.default_rng([self.seed, epoch, index])
        return self.dataset[index]


class StepBatchSampler(Sampler):
    """Yields this rank's batch for steps ``start_step, start_step + 1, …`` forever (drop-last epochs)."""

    def __init__(self, dataset: Dataset, batch_size: int, dist_info: Shard, seed: int, start_step: int = 0):
        self.sampler = DistributedSampler(
            dataset,
            num_replicas=dist_info.world_size,
            rank=dist_info.rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.batch_size = batch_size
        self.batches_per_epoch = self.sampler.num_samples // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"dataset of {len(dataset)} samples is too small for {batch_size} per rank × "
                f"{dist_info.world_size} ranks"
            )
        self.start_step = start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            epoch, j = divmod(step, self.batches_per_epoch)
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for b in range(j, self.batches_per_epoch):
                yield [(epoch, i) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]
            step = (epoch + 1) * self.batches_per_epoch


def step_loader(
    dataset: Dataset, global_batch: int, dist_info: Shard, seed: int, start_step: int, num_workers: int
) -> Iterator[dict]:
    """An endless iterator of collated batches starting at ``start_step``."""
    if global_batch % dist_info.world_size:
        raise ValueError(
            f"data.batch_size={global_batch} is not divisible by the world size "
            f"{dist_info.world_size}: every rank must get the same number of images"
        )
    per_rank = global_batch // dist_info.world_size
    sampler = StepBatchSampler(dataset, per_rank, dist_info, seed, start_step)
    # Its own generator: creating the iterator must not draw from the global RNG that dropout uses,
    # or a resumed run would see different dropout masks than an uninterrupted one.
    loader = DataLoader(
        SeededDataset(dataset, seed),
        batch_sampler=sampler,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=dist_info.device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    return iter(loader)


def merge_domains(
    source: dict, target: dict | None, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """The method's batch: ``image_src``/``semantic_src`` from the source, ``image_trg``/``image_ref`` from
    the target (docs/refign.md#batching); moved to ``device`` when given (the trainer moves it otherwise)."""
    batch = {"image_src": source["image"], "semantic_src": source["semantic"]}
    if target is not None:
        batch["image_trg"] = target["image"]
        # the reference and, for alignment=oracle, the ground-truth flow travel with the target images
        batch.update({k: target[k] for k in ("image_ref", "flow", "flow_valid") if k in target})
    if device is None:
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
