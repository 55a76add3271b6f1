"""Training data whose order and augmentations can be resumed at any batch: :class:`ResumableSampler` + :class:`SeededSamples`.

A resumed fit must see, from the batch after its checkpoint on, the same images with the same augmentations as an
uninterrupted one. Torch's ``RandomSampler`` draws its shuffle from the global generator when an epoch's iterator
starts, and the augmentations draw from it (or from a worker's copy) while batches are prefetched, so neither can be
replayed from the middle of an epoch. Here:

- the order of epoch ``e`` is a permutation drawn from ``seed + e`` (as ``DistributedSampler``, which this is: under
  DDP each process takes its share and Lightning does not wrap it);
- the sampler yields ``(index, sample_seed)`` with ``sample_seed`` a function of ``(seed, epoch, index)`` only, and
  :class:`SeededSamples` runs the dataset's ``__getitem__`` under that seed (torch's global generator, restored
  afterwards; NumPy's and Python's global generators are left seeded by the last image, as restoring them costs
  ~0.8 ms an image): an image's augmentation depends on which image and which epoch, never on what was drawn before
  it, in which process, or how far ahead the loader prefetched;
- :meth:`ResumableSampler.skip` makes the next epoch iterator start after the batches a checkpoint had trained on.

The training step's own randomness (dropout, mixup, a GAN's noise) stays on the global generators, which loading the
data no longer touches: ``vision_attn.callbacks.ResumeState`` saves them with each checkpoint.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["ResumableSampler", "SeededSamples", "sample_seed"]


_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation in ``epoch``: a 63-bit splitmix64 hash of the triple (about 1 us;
    numpy's SeedSequence takes ~80 us, a cost paid per image)."""
    return _splitmix64(_splitmix64(_splitmix64(seed & _M64) ^ epoch) ^ index) >> 1


class ResumableSampler(DistributedSampler):
    """Shuffled (or not) order of a map-style dataset, per epoch from ``seed``, that can start mid-epoch.

    Yields ``(index, sample_seed)`` pairs for :class:`SeededSamples`. Outside torch.distributed it is the whole
    dataset on one process; under it, process ``r`` of ``W`` takes positions ``r, r + W, ...`` (padded to equal
    shares, as ``DistributedSampler``).

    Args:
        dataset: the (unwrapped) dataset; only its length is used.
        shuffle: a new permutation each epoch (``set_epoch``); False keeps the dataset's order.
        seed: seed of the permutations and of every sample's augmentation; None draws one from torch's generator
            (seeded by ``seed_everything``); :class:`~vision_attn.callbacks.ResumeState` saves it with checkpoints.
    """

    def __init__(self, dataset: Any, shuffle: bool = True, seed: int | None = None) -> None:
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        super().__init__(
            dataset,
            num_replicas=None if dist else 1,
            rank=None if dist else 0,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self._skip = 0

    def skip(self, n: int) -> None:
        """Leave out this process's first ``n`` samples of the next epoch iterator (the batches already trained)."""
        if n < 0:
            raise ValueError(f"ResumableSampler.skip: n must be >= 0; got {n}")
        self._skip = int(n)

    def __iter__(self) -> Iterator[Tuple[int, int]]:  # type: ignore[override]
        skip, self._skip = self._skip, 0
        for i in list(super().__iter__())[skip:]:
            yield int(i), sample_seed(self.seed, self.epoch, int(i))

    def state_dict(self) -> Dict[str, int]:
        return {"seed": int(self.seed), "epoch": int(self.epoch)}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class SeededSamples(Dataset):
    """``dataset[index]`` computed under ``sample_seed`` for keys ``(index, sample_seed)`` (plain int keys: as is)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # attributes of the wrapped dataset (classes, targets, ...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        generator = torch.default_generator  # its own get/set: torch.manual_seed seeds every backend (~1 ms)
        state = generator.get_state()
        generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)  # the step's own draws (dropout, mixup, a GAN's noise) never see the data's
