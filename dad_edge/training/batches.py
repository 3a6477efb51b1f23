"""Training batches: normal images with deterministic synthetic anomalies, in the model's range."""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
import torch

from dad_edge.data.augment import View, draw_view
from dad_edge.data.preprocess import OFFSET, SCALE
from dad_edge.data.synthetic import AnomalySynthesizer


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """(B, S, S, C) uint8 -> (B, C, S, S) float32 in [-1, 1], as preprocess() does."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() * SCALE + OFFSET


VIEW_STREAM = 1  # the last word of the seed of a sample's view draw


class TrainingBatch(NamedTuple):
    image: torch.Tensor  # (B, C, S, S) in [-1, 1]: the synthetic anomaly, or the normal image unchanged
    mask: torch.Tensor  # (B, 1, S, S) in {0, 1}
    normal: torch.Tensor  # (B,) bool
    clean: torch.Tensor  # (B, C, S, S) in [-1, 1]: the normal image the sample was made from


def sample_key(seed: int, epoch: int, index: int) -> List[int]:
    """The seed of image `index`'s draws in `epoch` (one process; the preview shows epoch 0's)."""
    return [seed, epoch, index]


def sample_view(augment: Sequence[str], key: List[int]) -> Optional[View]:
    """The view a sample with seed `key` is taken through; None without `augment`. Its own stream
    (key + VIEW_STREAM): without views, the anomalies are those of before."""
    return draw_view(augment, np.random.default_rng(key + [VIEW_STREAM])) if augment else None


class SyntheticBatches:
    """Deterministic TrainingBatch es (image, mask, normal, clean): a function of (seed, epoch).

    Each sample's anomaly depends only on (seed, epoch, index), so with `workers` > 0 the samples
    are made by a thread pool (OpenCV and numpy release the GIL) and the next batch is prepared
    while the current one trains, with results identical to workers=0.

    augment: the views of a normal image allowed (data/augment.py VIEWS); each sample is taken
    through a random one before its anomaly is made, and its clean target is that view too.
    """

    def __init__(self, images: np.ndarray, stems: List[str], synth: AnomalySynthesizer, batch_size: int,
                 seed: int, shuffle: bool, workers: int = 0, augment: Sequence[str] = ()):
        self.images, self.stems, self.synth = images, stems, synth
        self.batch_size, self.seed, self.shuffle, self.workers = batch_size, seed, shuffle, workers
        self.augment = tuple(augment)

    def __len__(self) -> int:
        # Drop a last batch of one: BatchNorm cannot train on it.
        n = len(self.images)
        return max(1, n // self.batch_size if n % self.batch_size == 1 else math.ceil(n / self.batch_size))

    def _sample_key(self, epoch: int, i: int) -> List[int]:
        """The seed of sample i's draws in `epoch`."""
        return sample_key(self.seed, epoch, i)

    def _sample(self, epoch: int, i: int):
        key = self._sample_key(epoch, i)
        rng = np.random.default_rng(key)
        image, view = self.images[i], sample_view(self.augment, key)
        if view is not None:
            image = view.apply(image)  # a copy, or the image itself for the identity
        return self.synth(image, rng, self.stems[i], view) + (image,)

    def _collate(self, samples) -> TrainingBatch:
        augs, masks, anomalous, clean = zip(*samples)
        return TrainingBatch(to_model_range(np.stack(augs)), torch.from_numpy(np.stack(masks))[:, None],
                             torch.tensor([not a for a in anomalous]), to_model_range(np.stack(clean).astype(np.float32)))

    def _batches(self, epoch: int):
        n = len(self.images)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return [[int(i) for i in order[b * self.batch_size:(b + 1) * self.batch_size]] for b in range(len(self))]

    def epoch(self, epoch: int):
        batches = self._batches(epoch)
        if self.workers == 0:
            for idx in batches:
                yield self._collate([self._sample(epoch, i) for i in idx])
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="dad-edge-synth") as pool:
            def submit(idx):
                return [pool.submit(self._sample, epoch, i) for i in idx]

            pending = submit(batches[0]) if batches else []
            for b in range(len(batches)):
                current = pending
                if b + 1 < len(batches):  # one batch ahead: made while this one trains
                    pending = submit(batches[b + 1])
                yield self._collate([f.result() for f in current])


def resolve_workers(workers: Optional[int], device: torch.device) -> int:
    """Threads for the synthetic-anomaly pipeline. On a GPU it, not the model, limits the step rate
    (about 10 ms per 256x256 image on one core); on a CPU the threads would only take cores from torch."""
    if workers is not None:
        return workers
    return 0 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))
