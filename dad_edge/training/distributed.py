"""Multi-process training with torch DistributedDataParallel, under torchrun (issue #16 part 4).

    torchrun --nproc-per-node 4 -m dad_edge train --data my_part --out runs/p --minutes 30

torchrun starts one process per GPU (or per CPU share) and sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address; `setup` reads them. Without torchrun (WORLD_SIZE unset or 1) every call here is a
no-op and training runs exactly as before. What changes with N processes:

- the process group: NCCL on CUDA (each rank on cuda:LOCAL_RANK), gloo on CPUs;
- data: every rank draws the same shuffled order of the epoch (seed, epoch) and takes its own share of
  its batches (RankBatches), so the ranks see different images and each batch is the recipe's size
  (the effective batch is N times it); its synthetic anomalies are drawn with seed + rank, so two
  ranks never make the same anomaly even where the shares wrap around a small data set;
- gradients: the model's training calls go through DistributedDataParallel (StepModule), which
  averages the gradients over the ranks during backward; rank 0's initial weights are broadcast;
- stopping: a minutes budget is agreed on by all ranks each step (one all-reduce of a flag), so no
  rank waits forever for one that stopped; the schedule (rates, the full-resolution switch) follows
  rank 0's progress (one broadcast a step), so every rank takes the same rate and stride at each step;
- files: rank 0 alone validates, selects and writes model.safetensors / train_state.safetensors
  (atomically, as single-process training does); `--resume` is read by every rank from the same file.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dad_edge.errors import ConfigError
from dad_edge.training.batches import SyntheticBatches
from dad_edge.training.processes import launched_here


@dataclass
class Ranks:
    """This process's place in the job; world 1 is plain single-process training."""

    rank: int = 0
    world: int = 1
    device: Optional[torch.device] = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Rank 0 validates and writes the run's files."""
        return self.rank == 0

    def agree(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (a budget that ran out on one rank stops all)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def from_writer(self, value: float) -> float:
        """Rank 0's `value` on every rank. The schedule's progress on a minutes budget is read from each
        rank's clock, which differ by the ms a step's collectives leave between them: at the full-resolution
        switch (training/full_resolution.py) one rank could run a step at the other stride, and the learning
        rates (warm-up, cosine) differ a little, so DDP's equal averaged gradients would move the ranks'
        weights apart. Every rank follows rank 0's clock, as they stop on it (agree)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        dist.broadcast(t, src=0)
        return float(t.item())

    def _collective_device(self) -> torch.device:
        """Where a collective's tensor lives: NCCL takes CUDA tensors, gloo CPU ones."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def close(self, synchronize: bool = False) -> None:
        """Leave the job. synchronize (after a run that ended well): wait for every rank first. A rank
        that tears gloo down while another still works (rank 0 saving the model) can abort in gloo's
        threads ("terminate called without an active exception", exit -6), as CI saw twice, once after
        the barrier. So the ranks of our own launcher (processes.py) tear nothing down: they end with
        os._exit, which runs no C++ destructor; torchrun's ranks (NCCL asks for it) destroy the group."""
        if self.active and dist.is_initialized():
            if synchronize:
                dist.barrier()
            if not launched_here():
                dist.destroy_process_group()


def setup(device: torch.device) -> Ranks:
    """Join the torchrun job described by the environment; -> Ranks with the device this rank uses."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(0, 1, device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"torchrun rank {rank} has LOCAL_RANK {local} but this machine has "
                              f"{torch.cuda.device_count()} GPUs; use --nproc-per-node <= the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(rank, world, device)


class RankBatches(SyntheticBatches):
    """SyntheticBatches sharded over the ranks: the same global order, this rank's share of its batches.

    split=False (torchrun, one process per GPU): each rank takes whole batches of the recipe's size, so
    the effective batch is `world` times it. split=True (CPU processes started by training/processes.py):
    each rank takes its part of every batch, with the anomalies one process would draw, so the run is
    the one-process recipe computed in parallel."""

    def __init__(self, base: SyntheticBatches, ranks: Ranks, split: bool = False):
        super().__init__(base.images, base.stems, base.synth, base.batch_size, base.seed, base.shuffle, base.workers,
                         base.augment)
        self.ranks = ranks
        self.split = split

    def __len__(self) -> int:
        # Every rank takes the same number of steps (DDP's all-reduce needs all of them), at least one.
        return super().__len__() if self.split else max(1, super().__len__() // self.ranks.world)

    def _sample_key(self, epoch: int, i: int) -> List[int]:
        if self.split:  # one image, one rank: the anomaly one process would draw
            return super()._sample_key(epoch, i)
        return [self.seed + self.ranks.rank, epoch, i]  # seed + rank: anomalies of its own

    def _batches(self, epoch: int):
        if self.split:
            r, w = self.ranks.rank, self.ranks.world
            mine = []
            for batch in super()._batches(epoch):
                share = np.array_split(np.asarray(batch), w)[r]
                # A last batch smaller than the ranks leaves a rank without images: it repeats the first one.
                mine.append([int(i) for i in share] if len(share) else [int(batch[0])])
            return mine
        # The global batches, identical on every rank: SyntheticBatches._batches' order and cut, over
        # its own batch count (len(self) here is this rank's).
        n, size = len(self.images), self.batch_size
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        everything = [[int(i) for i in order[b * size:(b + 1) * size]] for b in range(SyntheticBatches.__len__(self))]
        r, w = self.ranks.rank, self.ranks.world
        # Batch r, r + w, ...; a data set with fewer batches than ranks wraps around.
        return [everything[(r + k * w) % len(everything)] for k in range(len(self))]


def shard(batches: SyntheticBatches, ranks: Ranks, split: bool = False) -> SyntheticBatches:
    return RankBatches(batches, ranks, split) if ranks.active else batches


class StepModule(nn.Module):
    """Routes the Trainer's training calls (model.reconstruct, model.noise_loss) through forward(), the one
    entry where DistributedDataParallel arms its gradient all-reduce for the next backward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, method: str, *args: Any):
        return getattr(self.model, method)(*args)


class _Direct:
    """Single process: the same call, straight to the model."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, method: str, *args: Any):
        return getattr(self.model, method)(*args)


def step_model(model: nn.Module, ranks: Ranks):
    """-> callable(method, *args): model.method(*args), under DDP when the job has several ranks."""
    if not ranks.active:
        return _Direct(model)
    ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    # No buffer broadcast: it is a collective inside forward(), and rank 0 alone runs the validation
    # forwards (a broadcast there would wait for ranks that are not validating). The buffers are the
    # fixed noise and schedule, equal on every rank, and BatchNorm statistics: rank 0's are saved.
    # Unused parameters (the segmentation net under method recon) are looked for only there.
    with warnings.catch_warnings():  # torch 2.13 calls broadcast_buffers deprecated; its replacement syncs at init
        warnings.simplefilter("ignore", FutureWarning)
        return nn.parallel.DistributedDataParallel(StepModule(model), device_ids=ids, broadcast_buffers=False,
                                                   find_unused_parameters=getattr(model.cfg, "method", "") == "recon")
