"""The trainer's data: seeded crops, the batch order of every step, and what L_d weighs.

A resumed run must see exactly the batches an uninterrupted one would have seen, whatever
the number of DataLoader workers. So nothing here keeps random state between calls: a crop's
augmentation is a function of (seed, epoch, index), and each epoch's order is a seeded
permutation that every distributed rank cuts into its own share.
"""
from __future__ import annotations

import torch

from .data.ade20k import ADE20KNegatives
from .data.cityscapes import CityscapesSegmentation
from .data.transforms import train_transforms
from .losses import class_balance_weights

TRAINING_CACHE_BYTES = 2 ** 30  # decoded training scenes kept in memory by a run without workers


class SeededCrops(torch.utils.data.Dataset):
    """Training crops whose random augmentation is a function of (seed, epoch, index).

    That makes the data independent of worker processes and of where a run was resumed.
    An item is asked for as ``(epoch, index)`` (what :class:`StepBatches` yields, so that
    worker processes need no shared state) or as a plain index in ``self.epoch``.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + epoch * len(self.dataset) + index)
            return self.dataset[index]


def epoch_batches(n: int, batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1):
    """This rank's batches of one epoch: a seeded permutation, cut into full batches."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    per_rank = n // world
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    return [mine[k:k + batch].tolist() for k in range(0, len(mine) - batch + 1, batch)]


class StepBatches(torch.utils.data.Sampler):
    """The batch sampler of the trainer's DataLoader: from step ``start`` on, the batch of each
    step as ``[(epoch, index), ...]``, endlessly. It runs in the main process, so moving
    ``start`` (a resume) needs no new workers."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.rank, self.world, self.start = n, batch, seed, rank, world, 0
        self.per_epoch = len(epoch_batches(n, batch, seed, 0, rank, world))

    def __iter__(self):
        step = self.start
        while True:
            epoch, position = divmod(step, self.per_epoch)
            batches = epoch_batches(self.n, self.batch, self.seed, epoch, self.rank, self.world)
            for indices in batches[position:]:
                yield [(epoch, i) for i in indices]
            step = (epoch + 1) * self.per_epoch


def train_pixel_counts(dataset: CityscapesSegmentation, num_classes: int):
    """Pixels per train id over the label maps of a Cityscapes-format split (no images read)."""
    import numpy as np
    from .data.io import read_label
    from .data.labels import LABEL_TO_TRAIN, VALID_LABEL_IDS
    counts = np.zeros(num_classes, np.int64)
    for path in dataset.listing.targets:
        train_ids = LABEL_TO_TRAIN[read_label(path[0], VALID_LABEL_IDS, "Cityscapes label-id")].ravel()
        counts += np.bincount(train_ids[train_ids < num_classes], minlength=num_classes)
    return counts


def training_data(profile, closed_set: bool, device, rank: int, world: int, progress: bool):
    """The seeded training crops, the negatives (None in the closed-set stage) and L_d's class weights."""
    if rank == 0:
        from .data import synthcity
        synthcity.ensure(profile, progress)
    if world > 1:
        torch.distributed.barrier()
    # In one process, decoding competes with the step for the CPU: keep what was decoded (up to a
    # budget, so that full-size datasets still stream). Worker processes decode ahead instead.
    cache = TRAINING_CACHE_BYTES if profile.num_workers == 0 else 0
    crops = SeededCrops(CityscapesSegmentation(profile.path("cityscapes_root"), "train",
                                               train_transforms(profile.crop_size, profile.scale_range,
                                                                class_uniform=profile.class_uniform),
                                               cache_bytes=cache),
                        profile.seed)
    negatives = None if closed_set else ADE20KNegatives(profile.path("ade20k_root"), cache_bytes=cache // 4)
    class_weights = None
    if profile.class_balance > 0:
        class_weights = class_balance_weights(train_pixel_counts(crops.dataset, profile.num_classes),
                                              profile.class_balance).to(device)
    return crops, negatives, class_weights


def training_loader(crops: SeededCrops, profile, device, rank: int, world: int):
    """A DataLoader over the seeded crops in the trainer's batch order: ``num_workers``
    processes decode and augment ahead of the step (pinned memory and persistent workers on
    CUDA), and the batches are those of the single-process order, wherever a run resumes."""
    workers = profile.num_workers
    return torch.utils.data.DataLoader(crops, batch_sampler=StepBatches(len(crops), profile.batch_size, profile.seed,
                                                                        rank, world),
                                       num_workers=workers, pin_memory=device.type == "cuda",
                                       persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
