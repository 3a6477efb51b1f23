"""Training: the paper's joint objective on good images plus synthetic anomalies.

`DiffusionAD` is the pure module; this file wraps it with data, the loss, Adam, mixed
precision on CUDA, validation on held-out good images, checkpoint selection that never
looks at the test set, atomic checkpoints and resume.

Files written to `out/`:
  model.safetensors        the selected model (lowest validation loss, or the last)
  train_state.safetensors  last weights + optimizer state, for --resume
  preview/                 with --preview N: synthetic training samples as PNGs
"""
from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from dad_edge.artifacts import checkpoint as ckpt
from dad_edge.training.thresholds import quantile_thresholds
from dad_edge.model.config import ModelConfig, preset
from dad_edge.data.mvtec import MVTecCategory, detect_channels, load_images
from dad_edge.errors import CheckpointError, ConfigError, DataError, TrainingError
from dad_edge.model.losses import diffusion_ad_loss
from dad_edge.artifacts.metadata import build_metadata
from dad_edge.model.diffusion_ad import DiffusionAD
from dad_edge.data.preprocess import OFFSET, SCALE
from dad_edge.data.synthetic import AnomalySynthesizer

# Training timestep ranges of the paper: t_s ~ U[0, 300), t_l ~ U[300, T).
T_SMALL_RANGE = (0, 300)


@dataclass
class TrainOptions:
    data: str
    out: str
    preset: str = "compact"
    image_size: Optional[int] = None  # None: the preset's
    channels: Optional[int] = None  # None: detected from the data (1 if all gray)
    epochs: Optional[int] = None  # at least one of epochs / minutes must be set
    minutes: Optional[float] = None
    batch_size: int = 16
    lr_unet: float = 1e-4
    lr_seg: float = 1e-5
    seed: int = 0
    val_fraction: float = 0.1
    select: str = "val"  # "val": lowest validation loss; "last": the last epoch
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    texture_dir: Optional[str] = None
    foreground: Optional[str] = None
    anomaly_prob: float = 0.5
    threshold_quantile: float = 0.99
    resume: bool = False
    progress: bool = True
    workers: Optional[int] = None  # threads making synthetic anomalies; None: 0 on CPU, up to 8 on CUDA
    model_overrides: Dict[str, Any] = field(default_factory=dict)  # other top-level ModelConfig fields

    def validate(self) -> "TrainOptions":
        if self.epochs is None and self.minutes is None:
            raise ConfigError("set --epochs or --minutes (or both) to say when training stops")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs} must be >= 1")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"minutes={self.minutes} must be > 0")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 2 (the segmentation net has BatchNorm)")
        if self.lr_unet <= 0 or self.lr_seg <= 0:
            raise ConfigError(f"learning rates must be > 0 (lr_unet={self.lr_unet}, lr_seg={self.lr_seg})")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction={self.val_fraction} must be in (0, 1): selection needs held-out data")
        if self.select not in ("val", "last"):
            raise ConfigError(f"select={self.select!r} must be 'val' or 'last'")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device={self.device!r} must be auto, cpu, cuda or cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={self.device!r} asked for but torch sees no CUDA device")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers={self.workers} must be >= 0 (0: make batches in the training thread)")
        if not 0.5 <= self.threshold_quantile < 1:
            raise ConfigError(f"threshold_quantile={self.threshold_quantile} must be in [0.5, 1)")
        return self

    def model_config(self, channels: int) -> ModelConfig:
        changes = dict(self.model_overrides)
        changes["channels"] = channels
        if self.image_size is not None:
            changes["image_size"] = self.image_size
        return preset(self.preset, **changes)


def resolve_workers(workers: Optional[int], device: torch.device) -> int:
    """Threads for the synthetic-anomaly pipeline. On a GPU it, not the model, limits the step rate
    (about 10 ms per 256x256 image on one core); on a CPU the threads would only take cores from torch."""
    if workers is not None:
        return workers
    return 0 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """(B, S, S, C) uint8 -> (B, C, S, S) float32 in [-1, 1], as preprocess() does."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() * SCALE + OFFSET


class SyntheticBatches:
    """Deterministic batches of (image in [-1, 1], mask, is_normal): a function of (seed, epoch).

    Each sample's anomaly depends only on (seed, epoch, index), so with `workers` > 0 the samples
    are made by a thread pool (OpenCV and numpy release the GIL) and the next batch is prepared
    while the current one trains, with results identical to workers=0.
    """

    def __init__(self, images: np.ndarray, stems: List[str], synth: AnomalySynthesizer, batch_size: int,
                 seed: int, shuffle: bool, workers: int = 0):
        self.images, self.stems, self.synth = images, stems, synth
        self.batch_size, self.seed, self.shuffle, self.workers = batch_size, seed, shuffle, workers

    def __len__(self) -> int:
        # Drop a last batch of one: BatchNorm cannot train on it.
        n = len(self.images)
        return max(1, n // self.batch_size if n % self.batch_size == 1 else math.ceil(n / self.batch_size))

    def _sample(self, epoch: int, i: int):
        rng = np.random.default_rng([self.seed, epoch, i])
        return self.synth(self.images[i], rng, self.stems[i])

    def _collate(self, samples):
        augs, masks, anomalous = zip(*samples)
        return (to_model_range(np.stack(augs)), torch.from_numpy(np.stack(masks))[:, None],
                torch.tensor([not a for a in anomalous]))

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


class Trainer:
    def __init__(self, opts: TrainOptions):
        self.opts = opts.validate()
        self.out = Path(opts.out)
        self.device = resolve_device(opts.device)
        torch.manual_seed(opts.seed)
        category = MVTecCategory(opts.data)
        train_samples, val_samples = category.train_val_split(opts.val_fraction, opts.seed)
        if not val_samples:  # one image: nothing to hold out for selection and thresholds
            raise DataError(f"{Path(opts.data) / 'train' / 'good'}: holds {len(train_samples)} image; training "
                            "needs at least 2 good images (part is held out to select the model and set thresholds)")
        channels = opts.channels or detect_channels(train_samples)
        self.cfg = opts.model_config(channels)
        size = self.cfg.image_size
        self.synth = AnomalySynthesizer(size, channels, texture_dir=opts.texture_dir, foreground=opts.foreground,
                                        anomaly_prob=opts.anomaly_prob)
        # Decoded and resized once: the data set of one product fits in memory.
        self.train_images = load_images(train_samples, size, channels)
        self.val_images = load_images(val_samples, size, channels)
        workers = resolve_workers(opts.workers, self.device)
        self.train = SyntheticBatches(self.train_images, [s.path.stem for s in train_samples], self.synth,
                                      opts.batch_size, opts.seed, shuffle=True, workers=workers)
        # Validation sees the same synthetic anomalies every epoch (fixed seed).
        self.val = SyntheticBatches(self.val_images, [s.path.stem for s in val_samples], self.synth,
                                    opts.batch_size, opts.seed + 1, shuffle=False, workers=workers)
        self.model = DiffusionAD(self.cfg).to(self.device)
        self.optimizer = torch.optim.Adam([
            {"params": self.model.unet.parameters(), "lr": opts.lr_unet},
            {"params": self.model.segnet.parameters(), "lr": opts.lr_seg},
        ])
        self.use_amp = opts.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.epoch = 0  # finished epochs
        self.elapsed = 0.0  # training seconds, summed over resumed runs
        self.best_val = math.inf
        self.best_epoch = 0
        self.history: List[Dict[str, float]] = []
        self.data_info = {"data": str(Path(opts.data).resolve()), "train_images": len(train_samples),
                          "val_images": len(val_samples)}

    # -- one step --------------------------------------------------------------------------

    def _timesteps(self, b: int, gen: torch.Generator):
        t_s = torch.randint(T_SMALL_RANGE[0], T_SMALL_RANGE[1], (b,), generator=gen)
        t_l = torch.randint(T_SMALL_RANGE[1], self.cfg.num_timesteps, (b,), generator=gen)
        return t_s.to(self.device), t_l.to(self.device)

    def _loss(self, x, mask, normal, gen: torch.Generator):
        x, mask, normal = x.to(self.device), mask.to(self.device), normal.to(self.device)
        t_s, t_l = self._timesteps(x.shape[0], gen)
        noise_s = torch.randn(x.shape, generator=gen).to(self.device)
        noise_l = torch.randn(x.shape, generator=gen).to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            rec = self.model.reconstruct(x, t_s, t_l, noise_s, noise_l)
        return diffusion_ad_loss(rec.eps_small, rec.eps_large, noise_s, noise_l, rec.seg_logits, mask, normal)

    @torch.no_grad()
    def validate(self) -> float:
        self.model.eval()
        gen = torch.Generator().manual_seed(self.opts.seed + 2)
        total, count = 0.0, 0
        for x, mask, normal in self.val.epoch(0):
            total += float(self._loss(x, mask, normal, gen).total) * x.shape[0]
            count += x.shape[0]
        self.model.train()
        return total / max(count, 1)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Path:
        opts = self.opts
        if opts.resume:
            self.load_state()
        self.out.mkdir(parents=True, exist_ok=True)
        budget = None if opts.minutes is None else opts.minutes * 60.0
        max_epochs = opts.epochs if opts.epochs is not None else 10 ** 9
        if self.epoch >= max_epochs or (budget is not None and self.elapsed >= budget):
            return self.out / "model.safetensors"
        self.model.train()
        from tqdm import tqdm

        stop = False
        while self.epoch < max_epochs and not stop:
            gen = torch.Generator().manual_seed(opts.seed * 100003 + self.epoch)
            start, seen, losses = time.time(), 0, []
            # A live bar on a terminal; logs and CI get the one line per epoch below.
            bar = tqdm(total=len(self.train), desc=f"epoch {self.epoch + 1}", leave=False, dynamic_ncols=True,
                       disable=not (opts.progress and sys.stderr.isatty()))
            for x, mask, normal in self.train.epoch(self.epoch):
                terms = self._loss(x, mask, normal, gen)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(terms.total).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                loss = float(terms.total.detach())
                if not math.isfinite(loss):
                    raise TrainingError(f"loss became {loss} at epoch {self.epoch + 1}; lower the learning "
                                             "rates (--lr-unet/--lr-seg) or use --resume from the last good state")
                losses.append(loss)
                seen += x.shape[0]
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", noise=f"{float(terms.noise.detach()):.4f}",
                                img_s=f"{seen / max(time.time() - start, 1e-9):.1f}")
                if budget is not None and self.elapsed + time.time() - start >= budget:
                    stop = True
                    break
            bar.close()
            self.elapsed += time.time() - start
            self.epoch += 1
            self.end_epoch(float(np.mean(losses)), seen / max(time.time() - start, 1e-9))
        return self.out / "model.safetensors"

    def end_epoch(self, train_loss: float, images_per_s: float) -> None:
        val = self.validate()
        self.history.append({"epoch": self.epoch, "train_loss": train_loss, "val_loss": val,
                             "images_per_s": images_per_s, "elapsed_s": self.elapsed})
        if self.opts.progress:
            print(f"epoch {self.epoch}: train loss {train_loss:.4f}, val loss {val:.4f}, "
                  f"{images_per_s:.1f} img/s, {self.elapsed / 60:.1f} min", flush=True)
        improved = val < self.best_val
        if improved:
            self.best_val, self.best_epoch = val, self.epoch
        if improved or self.opts.select == "last":
            self.save_model()
        self.save_state()

    # -- files ------------------------------------------------------------------------------

    def training_record(self) -> Dict[str, Any]:
        return {
            **self.data_info,
            "epochs": self.epoch,
            "selected_epoch": self.epoch if self.opts.select == "last" else self.best_epoch,
            "selection": "last epoch" if self.opts.select == "last" else
            "lowest loss on held-out good images with fixed synthetic anomalies (never the test set)",
            "best_val_loss": self.best_val,
            "train_seconds": round(self.elapsed, 1),
            "device": str(self.device),
            "options": {k: v for k, v in asdict(self.opts).items() if k not in ("resume", "progress")},
        }

    @torch.no_grad()
    def save_model(self) -> None:
        """Write model.safetensors with thresholds from the held-out good images."""
        self.model.eval()
        maps, scores = [], []
        x_all = to_model_range(self.val_images)
        for i in range(0, len(x_all), self.opts.batch_size):
            out = self.model(x_all[i:i + self.opts.batch_size].to(self.device))
            maps.append(out.anomaly_map[:, 0].float().cpu().numpy())
            scores.append(out.score.float().cpu().numpy())
        self.model.train()
        thresholds = quantile_thresholds(np.concatenate(scores), np.concatenate(maps), self.opts.threshold_quantile)
        meta = build_metadata(self.cfg, thresholds=thresholds, training=self.training_record(),
                              **self.extra_metadata())
        ckpt.save_model(self.out / "model.safetensors", self.model, meta)

    def extra_metadata(self) -> Dict[str, Any]:
        """More sections for the model's metadata (a distilled student records its teacher)."""
        return {}

    def save_state(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_state = self.optimizer.state_dict()
        for idx, state in opt_state["state"].items():
            for name, value in state.items():
                tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value)
        meta = build_metadata(self.cfg, training=self.training_record(), train_state={
            "epoch": self.epoch, "elapsed": self.elapsed, "best_val": self.best_val, "best_epoch": self.best_epoch,
            "history": self.history, "param_groups": opt_state["param_groups"],
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        })
        ckpt.save_tensors(self.out / "train_state.safetensors", tensors, meta)

    def load_state(self) -> None:
        path = self.out / "train_state.safetensors"
        if not path.is_file():
            raise CheckpointError(f"--resume: no {path}; start without --resume, or point --out at the run folder")
        tensors, meta = ckpt.read_tensors(path)
        stored = ModelConfig.from_dict(meta["model"])
        if stored != self.cfg:
            old, new = stored.to_dict(), self.cfg.to_dict()
            diff = ", ".join(k for k in old if old[k] != new[k])
            raise ConfigError(f"--resume: {path} was trained with a different model config ({diff} differ); use the same "
                              "--preset/--image-size/--channels as the interrupted run, or a new --out")
        st = meta.get("train_state")
        if not isinstance(st, dict):
            raise CheckpointError(f"{path} has no train_state section; it is not a training state file")
        self.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        opt_state = {"param_groups": st["param_groups"], "state": {}}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                opt_state["state"].setdefault(int(idx), {})[name] = value
        self.optimizer.load_state_dict(opt_state)
        if st.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(st["scaler"])
        self.epoch, self.elapsed = int(st["epoch"]), float(st["elapsed"])
        self.best_val, self.best_epoch = float(st["best_val"]), int(st["best_epoch"])
        self.history = list(st["history"])
        if self.opts.progress:
            print(f"resumed {path} after epoch {self.epoch} ({self.elapsed / 60:.1f} min trained)", flush=True)


def train(opts: TrainOptions) -> Path:
    """Train and return the path of the selected model.safetensors."""
    return Trainer(opts).run()


def preview(opts: TrainOptions, n: int) -> List[Path]:
    """Write n synthetic training samples (image beside mask) to out/preview/."""
    category = MVTecCategory(opts.data)
    samples, _ = category.train_val_split(opts.val_fraction, opts.seed)
    channels = opts.channels or detect_channels(samples)
    cfg = opts.model_config(channels)
    synth = AnomalySynthesizer(cfg.image_size, channels, texture_dir=opts.texture_dir,
                               foreground=opts.foreground, anomaly_prob=opts.anomaly_prob)
    chosen = samples[:n]
    images = load_images(chosen, cfg.image_size, channels)
    return synth.preview(images, n, Path(opts.out) / "preview", seed=opts.seed, stems=[s.path.stem for s in chosen])
