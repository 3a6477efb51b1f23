"""Distillation: a compact student that reproduces a large teacher's reconstructions.

    dad-edge distill --teacher runs/teacher/model.safetensors --preset compact --data DATA --out runs/student
    dad-edge distill ... --single-pass      # one U-Net pass instead of two

The teacher (any two-pass checkpoint, e.g. the paper preset trained on a GPU) is loaded
once, kept in eval mode and run without gradients (mixed precision on CUDA). On the same
synthetic-anomaly batches as training (training/train.py), the student learns:

  two-pass student (denoiser "two_pass", the paper's recipe at inference):
    L_unet = MSE(eps_student, eps_teacher) at t_s ~ U[0,300), t_l ~ U[300,T) and at the
             fixed eval timesteps (t_s, t_l), both scales
           + MSE(x0_ng_student, x0_ng_teacher) at the same timestep pairs
  single-pass student (denoiser "single_pass", beyond the paper):
    L_unet = MSE(U-Net(x noised to t_s) read as x0, x0_ng_teacher) with the same noise,
             so the deployed pipeline runs one U-Net pass and one segmentation pass.

At the eval timesteps half of the samples use the model's fixed noise (exactly what the
deployed model sees) and half fresh noise (so the student learns to denoise rather than
one noise pattern). The segmentation net is trained on the student's own (detached)
reconstructions with the paper's 5 * Focal + SmoothL1 loss against the synthetic masks;
with segmentation="distill" it also matches the teacher's anomaly map (BCE to the
teacher's probabilities). When the student's segmentation config equals the teacher's,
it starts from the teacher's weights.

Teacher and student share channels and the diffusion recipe (schedule, t_s, t_l, w,
noise seed, smoothing); the image size may differ: the teacher then sees the batch
resized (bilinear) and its outputs are resized back. Noise tensors cannot be resized
without changing their statistics, so across sizes the two draw their own noise and
only the image-space targets (x0_ng) are matched.

The student is an ordinary checkpoint (eval, export and Detector take it unchanged);
its metadata records the teacher in a "distillation" section. Progress, resume,
atomic checkpoints, selection on held-out good images and threshold calibration are
those of training: `Distiller` is a `Trainer` with another loss.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

import torch
import torch.nn.functional as F

from dad_edge.artifacts import checkpoint as ckpt
from dad_edge.model.config import ModelConfig, scaled_top_k
from dad_edge.errors import CheckpointError, ConfigError
from dad_edge.model.losses import FOCAL_WEIGHT, focal_loss
from dad_edge.model.info import count_params
from dad_edge.training.resume import STATE_FILE
from dad_edge.training.train import Trainer, TrainOptions, resolve_device, run_and_leave

SEGMENTATION_MODES = ("train", "distill")
# Share of samples that see the model's fixed noise at the eval timesteps (the rest: fresh noise).
FIXED_NOISE_FRACTION = 0.5
# The diffusion recipe a student inherits from its teacher: its eps / x0_ng targets only mean
# something at the teacher's schedule, timesteps and noise.
INHERITED_FIELDS = ("num_timesteps", "beta_start", "beta_end", "t_small", "t_large", "guidance_w",
                    "noise_seed", "smoothing_sigma", "input_gain")


@dataclass
class DistillOptions(TrainOptions):
    """The student run's TrainOptions plus the teacher and the student's recipe.

    `preset` and `image_size` are the student's (image_size None: the teacher's); the
    channels and the schedule fields come from the teacher, never from these options.
    """

    teacher: str = ""  # a two-pass model.safetensors (required)
    single_pass: bool = False  # one U-Net pass (x0-parameterised) instead of two
    segmentation: str = "train"  # "train": synthetic masks; "distill": also the teacher's map

    def validate(self) -> "DistillOptions":
        if not self.teacher:
            raise ConfigError("--teacher is required: the model.safetensors of a trained two-pass teacher")
        if self.channels is not None or self.model_overrides:
            raise ConfigError("a student's channels and schedule come from its teacher: leave channels and "
                              "model_overrides unset in DistillOptions")
        if self.segmentation not in SEGMENTATION_MODES:
            raise ConfigError(f"segmentation={self.segmentation!r} must be one of {SEGMENTATION_MODES}")
        if not Path(self.teacher).is_file():
            raise ConfigError(f"--teacher {self.teacher}: no such file; train a teacher first (e.g. `dad-edge "
                              "train --preset paper --data DATA --out runs/teacher`) and pass its model.safetensors")
        self.train_options().validate()
        return self

    def train_options(self, channels: Optional[int] = None,
                      model_overrides: Optional[Dict[str, Any]] = None) -> TrainOptions:
        """The training options of the student run (data, loop, optimiser, files)."""
        shared = {f.name: getattr(self, f.name) for f in fields(TrainOptions)}
        # The student is a DiffusionAD model whatever the device's default method (recipe.default_method).
        shared.update(channels=channels, model_overrides={"method": "diffusionad", **(model_overrides or {})})
        return TrainOptions(**shared)


class DistillTerms(NamedTuple):
    total: torch.Tensor
    noise: torch.Tensor  # the U-Net's distillation loss (named as training's, for the progress bar)
    focal: torch.Tensor
    smooth_l1: torch.Tensor
    seg_distill: torch.Tensor  # 0 unless segmentation == "distill"


class EvalInputs(NamedTuple):
    """A batch's eval timesteps and noises: the student's, and the teacher's (the same at the same size)."""
    t_small: torch.Tensor  # (B,) long, cfg.t_small
    t_large: torch.Tensor  # (B,) long, cfg.t_large
    noise_small: torch.Tensor  # (B, C, S, S)
    noise_large: torch.Tensor
    teacher_noise_small: torch.Tensor  # at the teacher's size
    teacher_noise_large: torch.Tensor


def config_hash(cfg: ModelConfig) -> str:
    """A short stable id of a model config (sha256 of its sorted JSON)."""
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def load_teacher(path, device: torch.device):
    """-> (teacher in eval mode without gradients, metadata); refuses single-pass models."""
    try:
        teacher, meta = ckpt.load_model(path, device=str(device))
    except CheckpointError as exc:
        raise CheckpointError(f"teacher: {exc}") from None
    if teacher.cfg.method != "diffusionad":  # the targets are its norm-guided reconstructions and maps
        raise ConfigError(f"teacher {path} is a method={teacher.cfg.method!r} model; distillation learns "
                          "DiffusionAD's reconstructions and maps: distil from a method='diffusionad' model")
    if teacher.cfg.denoiser != "two_pass":
        raise ConfigError(f"teacher {path} is a {teacher.cfg.denoiser} model; distil from a two-pass model "
                          "(one trained with `dad-edge train` or a two-pass student)")
    return teacher.requires_grad_(False), meta


def student_overrides(teacher_cfg: ModelConfig, image_size: int, single_pass: bool) -> Dict[str, Any]:
    """Top-level config fields the student takes from its teacher (and its denoiser)."""
    changes = {name: getattr(teacher_cfg, name) for name in INHERITED_FIELDS}
    changes["top_k"] = scaled_top_k(teacher_cfg.top_k, teacher_cfg.image_size, image_size)
    changes["denoiser"] = "single_pass" if single_pass else "two_pass"
    changes["seg_stride"] = teacher_cfg.seg.stride  # the teacher's map resolution, not the device's recipe
    if teacher_cfg.input_gain > 0:  # frames at one brightness already: no exposure slope to fit
        changes["exposure_correction"] = False
    return changes


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), bilinear (antialiased when shrinking); no-op at size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1])


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a.float(), b.float())


class Distiller(Trainer):
    """A Trainer whose student learns from a teacher instead of from the noise targets."""

    def __init__(self, opts: DistillOptions):
        self.dopts = opts.validate()
        # The teacher first: a bad --teacher fails before any data is read.
        self.teacher, self.teacher_meta = load_teacher(opts.teacher, resolve_device(opts.device))
        tcfg = self.teacher.cfg
        size = opts.image_size or tcfg.image_size
        student = opts.train_options(tcfg.channels, student_overrides(tcfg, size, opts.single_pass))
        student.image_size = size  # the teacher's unless given, not the recipe's default for the device
        super().__init__(student)
        self.tcfg, self.teacher_hash = tcfg, config_hash(tcfg)
        self.same_size = self.cfg.image_size == tcfg.image_size
        if self.same_size:
            # Equal by construction (same seed and shape); copied so that "the same noise" is literal.
            self.model.noise.copy_(self.teacher.noise)
        tseg, sseg = self.teacher.segnet.state_dict(), self.model.segnet.state_dict()
        self.segnet_init = "random"
        if tseg.keys() == sseg.keys() and all(tseg[k].shape == sseg[k].shape for k in tseg):
            self.model.segnet.load_state_dict(tseg)
            self.segnet_init = "teacher"
        self.teacher_amp = opts.amp and self.device.type == "cuda"

    # -- one step --------------------------------------------------------------------------

    def _eval_noise(self, b: int, fixed: torch.Tensor, use_fixed: torch.Tensor, gen: torch.Generator):
        """(noise_s, noise_l), each (B, C, S, S): the model's fixed noise where use_fixed, else fresh."""
        pick = use_fixed.reshape(-1, 1, 1, 1)
        fresh = torch.randn((2, b) + tuple(fixed.shape[1:]), generator=gen)
        fixed = fixed.cpu()
        return (torch.where(pick, fixed[0], fresh[0]).to(self.device),
                torch.where(pick, fixed[1], fresh[1]).to(self.device))

    def _teacher_noise(self, student_noise: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The same noise at the same size; fresh teacher-size noise otherwise."""
        if self.same_size:
            return student_noise
        s = self.tcfg.image_size
        return torch.randn((student_noise.shape[0], self.tcfg.channels, s, s), generator=gen).to(self.device)

    def _student_autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def _teacher_autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.teacher_amp)

    def _eval_inputs(self, b: int, gen: torch.Generator) -> EvalInputs:
        """The eval timesteps and noises of a batch of `b` (fixed noise for FIXED_NOISE_FRACTION)."""
        t_s = torch.full((b,), self.cfg.t_small, dtype=torch.long, device=self.device)
        t_l = torch.full((b,), self.cfg.t_large, dtype=torch.long, device=self.device)
        use_fixed = torch.rand(b, generator=gen) < FIXED_NOISE_FRACTION
        n_s, n_l = self._eval_noise(b, self.model.noise, use_fixed, gen)
        if self.same_size:
            tn_s, tn_l = n_s, n_l
        else:
            tn_s, tn_l = self._eval_noise(b, self.teacher.noise, use_fixed, gen)
        return EvalInputs(t_s, t_l, n_s, n_l, tn_s, tn_l)

    def _single_pass_unet(self, x, xt, ev: EvalInputs):
        """-> (U-Net loss, student x0 at the eval recipe, teacher x0_ng there): one student pass at t_s."""
        with torch.no_grad(), self._teacher_autocast():
            _, _, tx0 = self.teacher.denoise(xt, ev.t_small, ev.t_large, ev.teacher_noise_small, ev.teacher_noise_large)
        with self._student_autocast():
            x0_raw = self.model.single_pass_x0(x, ev.t_small, ev.noise_small)
        return mse(x0_raw, resize(tx0, self.cfg.image_size)), x0_raw.float().clamp(-1, 1), tx0

    def _two_pass_unet(self, x, xt, ev: EvalInputs, gen: torch.Generator):
        """-> (U-Net loss, student x0_ng at the eval recipe, teacher x0_ng there).

        Random training timesteps (first half) and the eval timesteps (second half): one batch of 4B."""
        b = x.shape[0]
        t_s, t_l = self._timesteps(b, gen)
        r_s = torch.randn(x.shape, generator=gen).to(self.device)
        r_l = torch.randn(x.shape, generator=gen).to(self.device)
        t_s2, t_l2 = torch.cat([t_s, ev.t_small]), torch.cat([t_l, ev.t_large])
        with torch.no_grad(), self._teacher_autocast():
            te_s, te_l, tx0 = self.teacher.denoise(
                torch.cat([xt, xt]), t_s2, t_l2, torch.cat([self._teacher_noise(r_s, gen), ev.teacher_noise_small]),
                torch.cat([self._teacher_noise(r_l, gen), ev.teacher_noise_large]))
        with self._student_autocast():
            e_s, e_l, x0 = self.model.denoise(torch.cat([x, x]), t_s2, t_l2, torch.cat([r_s, ev.noise_small]),
                                              torch.cat([r_l, ev.noise_large]))
        l_unet = mse(x0, resize(tx0, self.cfg.image_size))
        if self.same_size:  # eps are only comparable for the same noise
            l_unet = l_unet + mse(e_s, te_s) + mse(e_l, te_l)
        return l_unet, x0[b:].float(), tx0[b:]

    def _segmentation_losses(self, x, xt, mask, x0_eval, tx0_eval):
        """-> (focal, smooth L1, teacher-map BCE or 0): the segmentation net on the student's own
        (detached) reconstruction at the eval recipe."""
        with self._student_autocast():
            logits = self.model.segnet(torch.cat([x, x0_eval.detach()], dim=1))
        l_focal = focal_loss(logits, mask)
        l_smooth = F.smooth_l1_loss(torch.sigmoid(logits.float()), mask.float())
        l_seg_distill = x.new_zeros(())
        if self.dopts.segmentation == "distill":
            with torch.no_grad(), self._teacher_autocast():
                t_map = self.teacher.segnet.probabilities(torch.cat([xt, tx0_eval.to(xt.dtype)], dim=1)).float()
            target = resize(t_map, self.cfg.image_size).clamp(0, 1)
            l_seg_distill = F.binary_cross_entropy_with_logits(logits.float(), target)
        return l_focal, l_smooth, l_seg_distill

    def _loss(self, batch, gen: torch.Generator) -> DistillTerms:
        x, mask = batch.image.to(self.device), batch.mask.to(self.device)
        x = self.model.normalise_input(x)  # the teacher's input gain too (inherited): both see these frames
        ev = self._eval_inputs(x.shape[0], gen)
        xt = resize(x, self.tcfg.image_size)
        if self.cfg.denoiser == "single_pass":
            l_unet, x0_eval, tx0_eval = self._single_pass_unet(x, xt, ev)
        else:
            l_unet, x0_eval, tx0_eval = self._two_pass_unet(x, xt, ev, gen)
        l_focal, l_smooth, l_seg_distill = self._segmentation_losses(x, xt, mask, x0_eval, tx0_eval)
        total = l_unet + FOCAL_WEIGHT * l_focal + l_smooth + l_seg_distill
        return DistillTerms(total, l_unet, l_focal, l_smooth, l_seg_distill)

    # -- files ------------------------------------------------------------------------------

    def distillation_record(self) -> Dict[str, Any]:
        topts = self.teacher_meta.get("training", {}).get("options", {})
        return {
            "teacher": {
                "path": str(Path(self.dopts.teacher).resolve()),
                "config_hash": self.teacher_hash,
                "preset": topts.get("preset") if isinstance(topts, dict) else None,
                "image_size": self.tcfg.image_size,
                "params": count_params(self.teacher),
            },
            "denoiser": self.cfg.denoiser,
            "segmentation": self.dopts.segmentation,
            "segnet_init": self.segnet_init,
            "targets": self._targets(),
        }

    def _targets(self) -> str:
        if self.cfg.denoiser == "single_pass":
            return "teacher x0_ng at the eval timesteps, learnt by one U-Net pass at t_s"
        if self.same_size:
            return "teacher eps and x0_ng at random training timesteps and at the eval timesteps"
        return "teacher x0_ng at random training timesteps and at the eval timesteps (image sizes differ: no eps)"

    def training_record(self) -> Dict[str, Any]:
        record = super().training_record()
        record["options"] = {k: v for k, v in asdict(self.dopts).items() if k not in ("resume", "progress")}
        record["teacher_config_hash"] = self.teacher_hash
        return record

    def extra_metadata(self) -> Dict[str, Any]:
        return {"distillation": self.distillation_record()}

    def load_state(self) -> None:
        path = self.out / STATE_FILE
        if path.is_file():
            _, meta = ckpt.read_tensors(path)
            stored = meta.get("training", {}).get("teacher_config_hash")
            if stored != self.teacher_hash:
                raise ConfigError(f"--resume: {path} was not distilled from this teacher (config {stored} there, "
                                  f"{self.teacher_hash} for {self.dopts.teacher}); use the same --teacher or a "
                                  "new --out")
        super().load_state()


def distill(opts: DistillOptions) -> Path:
    """Distil a student and return the path of its selected model.safetensors."""
    return run_and_leave(Distiller(opts))
