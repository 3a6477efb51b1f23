"""Training: the paper's joint objective on good images plus synthetic anomalies.

`DiffusionAD` is the pure module; this file wraps it with data, the loss, Adam, mixed
precision (training/precision.py), validation on held-out good images, checkpoint selection that never
looks at the test set, atomic checkpoints and resume.

Files written to `out/`:
  model.safetensors        the selected model (lowest validation loss, or the last)
  train_state.safetensors  last weights + optimizer state, for --resume
  preview/                 with --preview N: synthetic training samples as PNGs
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from dad_edge.artifacts import checkpoint as ckpt
from dad_edge.artifacts.atomic import remove_stale_temps
from dad_edge.data.augment import parse_augment
from dad_edge.data.imageio import read_image
from dad_edge.runtime.detector import Detector
from dad_edge.model.config import ModelConfig
from dad_edge.data.layouts import open_category
from dad_edge.data.mvtec import detect_channels, load_images
from dad_edge.errors import CheckpointError, ConfigError, DataError, TrainingError
from dad_edge.model.input_gain import apply_gain, image_gain
from dad_edge.model.losses import clean_noise_target, diffusion_ad_loss, segmentation_loss
from dad_edge.artifacts.metadata import build_metadata
from dad_edge.model.build import build_model
from dad_edge.training import distributed, full_resolution, precision, processes  # [#16]: DDP, no-op in 1 process
from dad_edge.training.batches import SyntheticBatches, TrainingBatch, resolve_workers
from dad_edge.training.ema import WeightAverage
from dad_edge.training.resume import STATE_FILE, resumed_options
from dad_edge.training.brightness import with_input_gain
from dad_edge.training.map_statistics import calibrate_exposure_term, calibrate_recon_term
from dad_edge.training.options import TrainOptions, resolve_device
from dad_edge.training.recipe import lr_factor, optimizer_groups
from dad_edge.training.synthesis import synthesizer
from dad_edge.training.thresholds import detector_thresholds

# Training timestep ranges of the paper: t_s ~ U[0, 300), t_l ~ U[300, T).
T_SMALL_RANGE = (0, 300)


def typical_side(samples, max_check: int = 16) -> int:
    """Median longer side of the first images: what the recipe's image size should not exceed."""
    return int(np.median([max(read_image(s.path).shape[:2]) for s in samples[:max_check]]))


class Trainer:
    def __init__(self, opts: TrainOptions):
        # A resumed run keeps the recipe and method it was started with (training/resume.py); a new one
        # names its method now: --method's, else the default for the device (recipe.default_method).
        self.device = resolve_device(opts.validate().device)  # validated first: a bad name is a ConfigError
        self.opts = opts = resumed_options(opts).with_method(self.device.type)
        self.out = Path(opts.out)
        self.ranks = distributed.setup(self.device)  # [#16 distributed]
        self.device = self.ranks.device  # under torchrun on CUDA: cuda:LOCAL_RANK
        if opts.progress and self.ranks.writes:
            print(opts.method_line(self.device.type), flush=True)
        torch.manual_seed(opts.seed)
        category = open_category(opts.data)
        train_samples, val_samples = category.train_val_split(opts.val_fraction, opts.seed)
        if not val_samples:  # one image: nothing to hold out for selection and thresholds
            raise DataError(f"{Path(opts.data) / 'train' / 'good'}: holds {len(train_samples)} image; training "
                            "needs at least 2 good images (part is held out to select the model and set thresholds)")
        channels = opts.channels or detect_channels(train_samples)
        self.recipe = opts.recipe(self.device.type, typical_side(train_samples), len(train_samples))
        # Ranks started by training/processes.py split every batch; torchrun's take batches of their own.
        self.split = self.ranks.active and processes.launched_here()
        self.recipe = replace(self.recipe, processes=self.ranks.world if self.split else 1)
        self.cfg = opts.model_config(channels, self.recipe.image_size, self.recipe.seg_stride, self.recipe.recon_weight,
                                    self.recipe.exposure_correction)
        size = self.cfg.image_size
        # Decoded and resized once: the data set of one product fits in memory.
        self.train_images = load_images(train_samples, size, channels)
        self.val_images = load_images(val_samples, size, channels)
        # Whether frames are scaled to one brightness depends on the good images (training/brightness.py).
        self.cfg, self.recipe, self.input_gain_choice = with_input_gain(self.cfg, self.recipe, opts, self.train_images)
        recon = self.cfg.method == "recon"  # a plain DDPM on the good images: no synthetic anomalies
        self.synth = synthesizer(opts, size, channels, self.train_images, not recon, self.recipe.line_prob)
        # At their own size: thresholds come from the Detector's own path (frame-size maps), as calibrate's.
        self.val_frames = [read_image(s.path) for s in val_samples]
        workers = resolve_workers(opts.workers, self.device)
        self.train = SyntheticBatches(self.train_images, [s.path.stem for s in train_samples], self.synth,
                                      self.recipe.batch_size, opts.seed, shuffle=True, workers=workers,
                                      augment=parse_augment(opts.augment))
        self.train = distributed.shard(self.train, self.ranks, self.split)  # [#16 distributed]
        # Validation sees the same synthetic anomalies every epoch (fixed seed).
        self.val = SyntheticBatches(self.val_images, [s.path.stem for s in val_samples], self.synth,
                                    self.recipe.batch_size, opts.seed + 1, shuffle=False, workers=workers)
        self.model = build_model(self.cfg).to(self.device)
        if self.recipe.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step = distributed.step_model(self.model, self.ranks)  # [#16 distributed]
        self.base_lrs, groups = optimizer_groups(self.model, self.recipe)
        self.optimizer = torch.optim.Adam(groups)
        self.ema = WeightAverage(self.model, self.recipe.ema_decay) if self.recipe.ema_decay > 0 else None
        self.steps = 0  # optimizer steps taken, summed over resumed runs
        self.snapshots_written = 0
        amp = precision.autocast_dtype(self.device, opts.amp)  # CUDA, or a CPU with AMX: bf16 / fp16
        self.use_amp, self.amp_dtype = amp is not None, amp or torch.bfloat16
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

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.recipe.channels_last else x

    def _recon_loss(self, batch: TrainingBatch, gen: torch.Generator):
        """Method "recon": the plain DDPM noise MSE on the good images at t ~ U[0, T), every timestep, so
        that the trained model serves any recon.t and steps (ReconAD.noise_loss)."""
        x = self._input(batch.image)
        t = torch.randint(0, self.cfg.num_timesteps, (x.shape[0],), generator=gen).to(self.device)
        noise = torch.randn(x.shape, generator=gen).to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            return self.step("noise_loss", x, t, noise)  # [#16 distributed]

    def _loss(self, batch: TrainingBatch, gen: torch.Generator):
        if self.cfg.method == "recon":
            return self._recon_loss(batch, gen)
        x, mask, normal = self._input(batch.image), batch.mask.to(self.device), batch.normal.to(self.device)
        gain = image_gain(x, self.cfg.input_gain)  # None when the model has no input gain
        x = apply_gain(x, gain)  # the model's normalise step, as at inference
        if self.cfg.method == "seg":  # the segmentation net alone on the image
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                return segmentation_loss(self.step("seg_logits", x), mask)
        t_s, t_l = self._timesteps(x.shape[0], gen)
        noise_s = torch.randn(x.shape, generator=gen).to(self.device)
        noise_l = torch.randn(x.shape, generator=gen).to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            rec = self.step("reconstruct", x, t_s, t_l, noise_s, noise_l)  # [#16 distributed]
        clean = self.recipe.large_target == "clean"
        # On an anomalous sample the clean image at the sample's own gain: the two differ only where the anomaly is.
        target_l = (clean_noise_target(noise_l, x, apply_gain(self._input(batch.clean), gain),
                                       self.model.alphas_cumprod[t_l]) if clean else noise_l)
        return diffusion_ad_loss(rec.eps_small, rec.eps_large, noise_s, target_l, rec.seg_logits, mask, normal,
                                 large_on_all=clean)

    def evaluation_weights(self):
        """The weights validation and the saved model use: the running average when EMA is on."""
        return self.ema.applied(self.model) if self.ema is not None else nullcontext(self.model)

    def progress(self, elapsed: float) -> float:
        """Fraction of the budget done: steps of the epoch budget or seconds of the minutes budget."""
        done = 0.0
        if self.opts.epochs is not None:
            done = self.steps / max(self.opts.epochs * len(self.train), 1)
        if self.opts.minutes is not None:
            done = max(done, elapsed / (self.opts.minutes * 60.0))
        return done

    def _follow_schedule(self, elapsed: float) -> None:  # the rates and the segmentation net's resolution
        full_resolution.follow(self, progress := self.ranks.from_writer(self.progress(elapsed)))  # [#16]
        f = lr_factor(progress, self.recipe.lr_schedule, self.recipe.warmup_fraction)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    @torch.no_grad()
    def validate(self) -> float:
        with self.evaluation_weights():
            return self._validate()

    def _validate(self) -> float:
        self.model.eval()
        gen = torch.Generator().manual_seed(self.opts.seed + 2)
        total, count = 0.0, 0
        for batch in self.val.epoch(0):
            total += float(self._loss(batch, gen).total) * batch.image.shape[0]
            count += batch.image.shape[0]
        self.model.train()
        return total / max(count, 1)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Path:
        opts = self.opts
        if opts.resume:
            self.load_state()
        self.out.mkdir(parents=True, exist_ok=True)
        for folder in (self.out, self.out / "snapshots"):  # what a killed run was writing
            remove_stale_temps(folder)
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
            for batch in self.train.epoch(self.epoch):
                self._follow_schedule(self.elapsed + time.time() - start)
                terms = self._loss(batch, gen)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(terms.total).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.steps += 1
                if self.ema is not None:
                    self.ema.update(self.model)
                loss = float(terms.total.detach())
                if not math.isfinite(loss):
                    raise TrainingError(f"loss became {loss} at epoch {self.epoch + 1}; lower the learning "
                                             "rates (--lr-unet/--lr-seg) or use --resume from the last good state")
                losses.append(loss)
                seen += batch.image.shape[0] * (self.ranks.world if self.split else 1)  # the whole batch's
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", noise=f"{float(terms.noise.detach()):.4f}",
                                img_s=f"{seen / max(time.time() - start, 1e-9):.1f}")
                start += self.maybe_snapshot(self.elapsed + time.time() - start)  # not training time
                out_of_time = budget is not None and self.elapsed + time.time() - start >= budget
                # [#16 distributed]: all ranks stop at one step, on rank 0's clock (others wait while it validates)
                if self.ranks.agree(out_of_time and self.ranks.writes):
                    stop = True
                    break
            bar.close()
            self.elapsed += time.time() - start
            self.epoch += 1
            self.end_epoch(float(np.mean(losses)), seen / max(time.time() - start, 1e-9))
        return self.out / "model.safetensors"

    def maybe_snapshot(self, elapsed: float) -> float:
        """Write the due snapshot (current weights, or their average) and return the seconds it took."""
        every = self.opts.snapshot_minutes
        if every is None or elapsed < (self.snapshots_written + 1) * every * 60.0:
            return 0.0
        t0 = time.time()
        self.snapshots_written = int(elapsed // (every * 60.0))
        name = f"model_{self.snapshots_written * every:g}min"
        self.save_model(self.out / "snapshots" / f"{name}.safetensors", snapshot_minutes=elapsed / 60, averaged=False)
        if self.ema is not None:  # both, so that one run shows what the average adds
            self.save_model(self.out / "snapshots" / f"{name}_ema.safetensors", snapshot_minutes=elapsed / 60)
        return time.time() - t0

    def end_epoch(self, train_loss: float, images_per_s: float) -> None:
        if not self.ranks.writes:  # [#16 distributed]: rank 0 validates and writes
            return
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
            "lowest noise loss on held-out good images (never the test set)" if self.cfg.method == "recon" else
            "lowest loss on held-out good images with fixed synthetic anomalies (never the test set)",
            "best_val_loss": self.best_val,
            "train_seconds": round(self.elapsed, 1),
            "device": str(self.device),
            "processes": self.ranks.world, "steps": self.steps,
            "precision": precision.describe(self.amp_dtype if self.use_amp else None),
            "recipe": self.recipe.record(self.cfg.method),
            **({"input_gain": self.input_gain_choice} if self.input_gain_choice else {}),
            "options": {k: v for k, v in asdict(self.opts).items() if k not in ("resume", "progress")},
        }

    @torch.no_grad()
    def save_model(self, path: Optional[Path] = None, snapshot_minutes: Optional[float] = None,
                   averaged: bool = True) -> None:
        """Write model.safetensors (or a snapshot) with thresholds from the held-out good images;
        `averaged`: with the EMA weights when EMA is on."""
        if not self.ranks.writes:  # [#16 distributed]
            return
        with self.evaluation_weights() if averaged else nullcontext(self.model):
            calibrate_recon_term(self.model, self.val_images, self.device, self.recipe.batch_size)  # before thresholds
            exposure = calibrate_exposure_term(self.model, self.val_images, self.device, self.recipe.batch_size)
            with Detector.from_module(self.model, color_order="RGB", batch_size=self.recipe.batch_size) as det:
                thresholds = detector_thresholds(det, self.val_frames, self.opts.threshold_quantile)
            record = self.training_record()
            record["weights"] = "average" if averaged and self.ema is not None else "last"
            if exposure is not None:  # the fit on the held-out good images, kept or not
                record["exposure_fit"] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in exposure.items()}
            if snapshot_minutes is not None:
                record["snapshot_minutes"] = round(snapshot_minutes, 3)
            meta = build_metadata(self.cfg, thresholds=thresholds, training=record, **self.extra_metadata())
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            ckpt.save_model(path or self.out / "model.safetensors", self.model, meta)

    def extra_metadata(self) -> Dict[str, Any]:
        """More sections for the model's metadata (a distilled student records its teacher)."""
        return {}

    def save_state(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_state = self.optimizer.state_dict()
        for idx, state in opt_state["state"].items():
            for name, value in state.items():
                tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value)
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state().items()})
        meta = build_metadata(self.cfg, training=self.training_record(), train_state={
            "epoch": self.epoch, "elapsed": self.elapsed, "best_val": self.best_val, "best_epoch": self.best_epoch,
            "steps": self.steps, "snapshots_written": self.snapshots_written,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "history": self.history, "param_groups": opt_state["param_groups"],
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        })
        ckpt.save_tensors(self.out / STATE_FILE, tensors, meta)

    def load_state(self) -> None:
        path = self.out / STATE_FILE
        if not path.is_file():
            raise CheckpointError(f"--resume: no {path}; start without --resume, or point --out at the run folder")
        tensors, meta = ckpt.read_tensors(path)
        stored = ModelConfig.from_dict(meta["model"])
        full_resolution.match_stored(self, stored)
        if stored != self.cfg:
            old, new = stored.to_dict(), self.cfg.to_dict()
            diff = ", ".join(k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k))  # off fields are left out
            raise ConfigError(f"--resume: {path} was trained with a different model config ({diff} differ); use the same "
                              "--preset/--image-size/--channels as the interrupted run, or a new --out")
        recorded = meta.get("training", {}).get("input_gain")  # how the interrupted run chose its gain ("auto")
        if isinstance(recorded, dict) and recorded.get("input_gain") == self.cfg.input_gain:
            self.input_gain_choice = recorded
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
        if self.ema is not None:
            ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
            if not ema:
                raise CheckpointError(f"--resume: {path} has no weight average; resume with the EMA setting "
                                      "of the interrupted run (--ema 0 if it had none)")
            self.ema.load(ema, int(st.get("ema_updates", 0)))
        self.steps, self.snapshots_written = int(st.get("steps", 0)), int(st.get("snapshots_written", 0))
        if st.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(st["scaler"])
        self.epoch, self.elapsed = int(st["epoch"]), float(st["elapsed"])
        self.best_val, self.best_epoch = float(st["best_val"]), int(st["best_epoch"])
        self.history = list(st["history"])
        if self.opts.progress:
            print(f"resumed {path} after epoch {self.epoch} ({self.elapsed / 60:.1f} min trained)", flush=True)


def train(opts: TrainOptions) -> Path:
    """Train and return the path of the selected model.safetensors."""
    opts.validate()
    n = processes.planned(opts)
    if n > 1:
        return processes.launch(opts, n)
    return run_and_leave(Trainer(opts))


def run_and_leave(trainer: Trainer) -> Path:
    """trainer.run(), then leave the torchrun job (train and distill alike) [#16 distributed]."""
    try:
        path = trainer.run()
        trainer.ranks.close(synchronize=True)  # every rank past the last save before any leaves
        return path
    finally:
        trainer.ranks.close()  # after an error: at once
