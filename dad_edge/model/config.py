"""Model configuration: typed dataclasses and named presets.

A `ModelConfig` fully describes the network and the inference recipe; it is stored as
JSON inside every artifact (checkpoint, ONNX, engine header) so that a model file is
self-describing. Every field is validated and every field is used.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from dad_edge.errors import ConfigError
from dad_edge.model.backbone_checks import dit_checks, unet_checks
from dad_edge.model.seg_config import SEG_STRIDES, SegConfig, seg_checks

# Bounds on what a model file may ask for: the fixed noise and the schedule are allocated from them at load,
# so a damaged or crafted file must not get terabytes (the paper runs at 256 px and 1,000 steps).
MAX_SIZE = 8192
MAX_TIMESTEPS = 100_000


@dataclass(frozen=True)
class UNetConfig:
    """The epsilon-predicting U-Net (guided-diffusion style)."""

    patch_size: int = 1  # pixel-unshuffle factor before the first conv (1 = paper); 2 or 4 cut FLOPs 4x or 16x
    base_channels: int = 128  # width of the first level; later levels multiply it
    channel_mult: Tuple[int, ...] = (1, 1, 2, 2, 4, 4)  # one entry per resolution level
    num_res_blocks: int = 2  # res-blocks per level on the way down (up: one more)
    attention_resolutions: Tuple[int, ...] = (32, 16, 8)  # feature-map sides with self-attention (after patching)
    num_heads: int = 4
    time_embed_dim: int = 512  # width of the MLP that embeds the sinusoidal timestep
    groups: int = 32  # GroupNorm groups (must divide every width)
    dropout: float = 0.0


@dataclass(frozen=True)
class DiTConfig:
    """The Diffusion Transformer eps-predictor (Peebles & Xie 2023), on pixels rather than latents."""

    patch_size: int = 8  # side of the square patches that become tokens: (image_size / p)**2 tokens
    hidden: int = 768  # token width (a multiple of 4: the 2-D sin-cos position embedding splits it in 4)
    depth: int = 12  # transformer blocks
    heads: int = 12  # attention heads (must divide hidden)
    mlp_ratio: float = 4.0  # width of each block's MLP, as a multiple of hidden


@dataclass(frozen=True)
class ReconConfig:
    """The reconstruction-error detector (method "recon", arXiv 2412.07539): a plain DDPM noises the
    image to t with the fixed noise and denoises it back in `steps` deterministic DDIM steps."""

    t: int = 250  # noise level: enough to wash a small defect out, little enough to keep the part (AnoDDPM's 250)
    steps: int = 1  # K network passes on an even sub-sequence from t to 0 (1: the one-step x0 estimate)
    error: str = "squared"  # per-pixel map: squared error, or "ssim": structural dissimilarity (1 - SSIM) / 2
    image_score: str = "topk"  # "topk": mean of the top_k map values (small defects count); "mean": whole map


DENOISERS = ("two_pass", "single_pass")
BACKBONES = ("unet", "dit")  # the eps-predictor's architecture: UNetConfig or DiTConfig
METHODS = ("diffusionad", "recon", "seg")  # DiffusionAD; ReconConfig's reconstruction error; the segmentation net alone
RECON_ERRORS = ("squared", "ssim")
IMAGE_SCORES = ("topk", "mean")
# The fields only DiffusionAD reads: a recon model leaves them at their defaults (seg None) and out of to_dict.
DIFFUSIONAD_FIELDS = ("seg", "t_small", "t_large", "guidance_w", "denoiser", "recon_weight", "recon_sigma",
                      "exposure_correction", "input_gain")
# Left out of to_dict while recon_weight is 0 / while off: such a config reads, and hashes, as before them.
RECON_TERM_FIELDS = ("recon_weight", "recon_sigma")
OFF_FIELDS = ("exposure_correction", "input_gain")
# The denoiser's fields: a "seg" model (the segmentation net alone on the image, no eps-predictor) leaves them
# at their defaults and out of to_dict, as it leaves out `backbone`, `unet` and `dit`.
DENOISER_FIELDS = ("t_small", "t_large", "guidance_w", "denoiser", "recon_weight", "recon_sigma")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model and run its inference recipe."""

    image_size: int = 256  # square input side the networks run at
    channels: int = 3  # 3 = RGB, 1 = grayscale
    # The eps-predictor: "unet" builds from `unet`, "dit" from `dit`; the other section is None
    # (and absent from to_dict), so no config carries a network it does not build.
    backbone: str = "unet"
    unet: Optional[UNetConfig] = field(default_factory=UNetConfig)
    dit: Optional[DiTConfig] = None
    seg: Optional[SegConfig] = field(default_factory=SegConfig)  # None for method "recon" (no segmentation net)
    # (method "seg" has the segmentation net only: backbone "unet" with unet and dit None)
    num_timesteps: int = 1000  # T of the linear beta schedule
    beta_start: float = 1e-4
    beta_end: float = 0.02
    t_small: int = 200  # t_s: keeps fine detail
    t_large: int = 400  # t_l: large enough to wash anomalies out
    guidance_w: float = 1.0  # w of the norm-guided correction
    top_k: int = 50  # image score = mean of the top_k map values (50 at 256x256 in the paper)
    smoothing_sigma: float = 0.0  # Gaussian smoothing of the map before scoring (0 = off)
    # The map's reconstruction-error term (model/recon_term.py): seg map + recon_weight x the smoothed
    # |x - x0_ng| standardised on held-out good images, in units of the seg map's spread there (0 = off).
    recon_weight: float = 0.0
    recon_sigma: float = 2.0  # Gaussian smoothing of |x - x0_ng|, pixels at image_size
    # The image score less its dependence on the frame's mean brightness, fitted on held-out good images
    # (model/exposure_term.py).
    exposure_correction: bool = False
    input_gain: float = 0.0  # frames scaled to this mean brightness (0..1) first; 0 = off (model/input_gain.py)
    noise_seed: int = 0  # seed of the fixed noise stored with the model
    # "two_pass": the paper's norm-guided recipe (U-Net at t_s and t_l, x0_ng from both);
    # "single_pass": one U-Net pass at t_s whose output is x0_ng itself (x0-parameterised),
    # a student distilled from a two-pass teacher (`dad-edge distill --single-pass`).
    denoiser: str = "two_pass"
    # "diffusionad": the paper's pipeline above; "recon": a plain DDPM's reconstruction error (the
    # `recon` section; no segmentation net), arXiv 2412.07539. The other method's section is None.
    # "seg": the segmentation net alone on the image (DRAEM's discriminative net without its
    # reconstruction), trained on the same synthetic anomalies; no eps-predictor.
    method: str = "diffusionad"
    recon: Optional[ReconConfig] = None

    def validate(self) -> "ModelConfig":
        """Raise ConfigError naming the first bad field; return self when all is well."""
        self._validate_method()
        if self.method != "seg":
            self._validate_backbone()
        s = self.seg or SegConfig(widths=(1, 1))  # a recon model: no segmentation net, so no constraint
        unit, name = self.backbone_size_unit()
        seg_unit = max((s.stride,) + s.map_strides) * 2 ** (len(s.widths) - 1)  # the input at the largest stride halves levels-1 times
        checks = [
            *seg_checks(s),
            (32 <= self.image_size <= MAX_SIZE and self.image_size % unit == 0
             and self.image_size % seg_unit == 0,
             f"image_size={self.image_size} must be in [32, {MAX_SIZE}] and divisible by {name} ({unit}) and by "
             f"the segmentation net's stride x 2**(levels-1) ({seg_unit})"),
            (self.channels in (1, 3), f"channels={self.channels} must be 1 (gray) or 3 (RGB)"),
            (2 <= self.num_timesteps <= MAX_TIMESTEPS, f"num_timesteps={self.num_timesteps} must be in [2, {MAX_TIMESTEPS}]"),
            (0 < self.beta_start < self.beta_end < 1, f"beta_start={self.beta_start}, beta_end={self.beta_end} need 0 < start < end < 1"),
            (0 <= self.t_small < self.t_large < self.num_timesteps,
             f"t_small={self.t_small}, t_large={self.t_large} need 0 <= t_small < t_large < num_timesteps"),
            (self.guidance_w >= 0, f"guidance_w={self.guidance_w} must be >= 0"),
            (1 <= self.top_k <= self.image_size ** 2, f"top_k={self.top_k} must be in [1, image_size**2]"),
            (0 <= self.smoothing_sigma < float("inf"), f"smoothing_sigma={self.smoothing_sigma} must be a number >= 0"),
            (0 <= self.recon_weight < float("inf"), f"recon_weight={self.recon_weight} must be a number >= 0 (0 = off)"),
            (0 < self.recon_sigma < float("inf"), f"recon_sigma={self.recon_sigma} must be a number > 0"),
            (isinstance(self.exposure_correction, bool),
             f"exposure_correction={self.exposure_correction!r} must be true or false"),
            (0 <= self.input_gain < 1,
             f"input_gain={self.input_gain!r} must be a mean brightness in (0, 1) of the pixel range, or 0 (off)"),
            (not (self.input_gain > 0 and self.exposure_correction),
             "input_gain scales every frame to one brightness, which leaves exposure_correction (a fit of the score "
             "on brightness) nothing to fit: turn one of them off"),
            (0 <= self.noise_seed < 2 ** 63, f"noise_seed={self.noise_seed} must be a non-negative 63-bit integer"),
            (self.denoiser in DENOISERS, f"denoiser={self.denoiser!r} must be one of {DENOISERS}"),
        ]
        _raise_first(checks)
        return self

    def _validate_backbone(self) -> None:
        """The backbone name, its section present and the other absent, then that section's fields."""
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone={self.backbone!r} is not a denoiser backbone; choose one of {BACKBONES}")
        other = "dit" if self.backbone == "unet" else "unet"
        if getattr(self, self.backbone) is None:
            raise ConfigError(f"backbone={self.backbone!r} needs the `{self.backbone}` config section; pick it with "
                              f"preset(NAME, backbone={self.backbone!r}) or give one")
        if getattr(self, other) is not None:
            raise ConfigError(f"backbone={self.backbone!r} builds no {other}: set `{other}` to None (or switch "
                              f"backbones with preset(NAME, backbone=...), which does)")
        if self.backbone == "unet":
            _raise_first(unet_checks(self.unet))
        else:
            _raise_first(dit_checks(self.dit))

    def _validate_method(self) -> None:
        """The method name, its sections (recon, seg) present or absent, then the recon settings."""
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} is not a detection method; choose one of {METHODS}")
        if self.method in ("diffusionad", "seg"):
            _raise_first([(self.recon is None, f"method={self.method!r} reads no `recon` section: set method='recon' "
                                               "to use it, or recon=None"),
                          (self.seg is not None, f"method={self.method!r} needs the `seg` config section (its "
                                                 "segmentation net)")])
            if self.method == "seg":
                self._validate_seg_only()
            return
        if self.recon is None:
            raise ConfigError("method='recon' needs the `recon` config section; pick it with preset(NAME, method='recon')")
        defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in DIFFUSIONAD_FIELDS}
        defaults["seg"] = None
        for name, default in defaults.items():
            if getattr(self, name) != default:
                raise ConfigError(f"{name}={getattr(self, name)!r} is a setting of method 'diffusionad'; a recon model "
                                  f"does not use it (its noise level is recon.t): leave it at {default!r}")
        r, last = self.recon, self.num_timesteps - 1
        if not (_is_int(r.t) and 1 <= r.t <= last):
            raise ConfigError(f"recon.t={r.t!r} must be an integer in [1, {last}] (num_timesteps - 1)")
        _raise_first([
            (_is_int(r.steps) and 1 <= r.steps <= r.t, f"recon.steps={r.steps!r} must be an integer in "
                                                       f"[1, recon.t={r.t}]: one network pass per step, each at its own timestep"),
            (r.error in RECON_ERRORS, f"recon.error={r.error!r} must be one of {RECON_ERRORS}"),
            (r.image_score in IMAGE_SCORES, f"recon.image_score={r.image_score!r} must be one of {IMAGE_SCORES}"),
        ])

    def _validate_seg_only(self) -> None:
        """Method "seg" has no eps-predictor: no backbone section, the denoiser's fields at their defaults."""
        if self.backbone != "unet" or self.unet is not None or self.dit is not None:
            raise ConfigError("method='seg' is the segmentation net alone: it has no eps-predictor, so unet and dit "
                              "must be None and backbone left at 'unet' (preset(NAME, method='seg') does this)")
        for f in dataclasses.fields(ModelConfig):
            if f.name in DENOISER_FIELDS and getattr(self, f.name) != f.default:
                raise ConfigError(f"{f.name}={getattr(self, f.name)!r} is a setting of the denoiser; a method 'seg' "
                                  f"model has none: leave it at {f.default!r}")

    def backbone_size_unit(self) -> Tuple[int, str]:
        """(what the backbone needs image_size to be a multiple of, how to name it in a message)."""
        if self.method == "seg":
            return 1, "1 (no eps-predictor)"
        if self.backbone == "dit":
            return self.dit.patch_size, "dit.patch_size"
        u = self.unet
        return u.patch_size * 2 ** (len(u.channel_mult) - 1), "patch_size * 2**(levels-1) of the U-Net"

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict. A U-Net config leaves out `backbone` and `dit`, so it reads exactly as before
        the DiT existed (same metadata, same config hashes); a DiT config leaves out `unet`. Likewise a
        DiffusionAD config leaves out `method` and `recon`, a recon config the DIFFUSIONAD_FIELDS, a seg config the
        eps-predictor's sections and the DENOISER_FIELDS."""
        d = dataclasses.asdict(self)
        if self.method == "seg":
            off = tuple(k for k in OFF_FIELDS if not getattr(self, k))
            return {k: v for k, v in d.items() if k not in ("backbone", "unet", "dit", "recon") + DENOISER_FIELDS + off}
        if self.backbone == "unet":
            del d["backbone"], d["dit"]
        else:
            del d["unet"]
        for key in (("method", "recon") if self.method == "diffusionad" else DIFFUSIONAD_FIELDS):
            del d[key]
        if self.method == "diffusionad":
            off = [k for k in OFF_FIELDS if not getattr(self, k)] + list(RECON_TERM_FIELDS * (self.recon_weight == 0))
            for key in off:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelConfig":
        """Rebuild from JSON; unknown keys are an error, never silently ignored."""
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        try:
            # A missing section is the backbone's default, or None for the backbone not chosen
            # (files written before the DiT have no `backbone` and no `dit`: U-Net models).
            backbone, method = data.get("backbone", "unet"), data.get("method", "diffusionad")
            unet_data = data.get("unet", {} if backbone == "unet" and method != "seg" else None)
            if isinstance(unet_data, dict):
                # Files of dad_edge 0.1.0 carry `resblock_updown`, a field that was never read (the
                # U-Net always samples in its res-blocks): accepted and dropped, so they still load.
                unet_data = {k: v for k, v in unet_data.items() if k != "resblock_updown"}
            dit_data = data.get("dit", {} if backbone == "dit" else None)
            unet = None if unet_data is None else _from_dict(UNetConfig, unet_data, "unet")
            dit = None if dit_data is None else _from_dict(DiTConfig, dit_data, "dit")
            # Likewise the method's sections (files written before the recon method: DiffusionAD models).
            seg_data = data.get("seg", {} if method in ("diffusionad", "seg") else None)
            recon_data = data.get("recon", {} if method == "recon" else None)
            seg = None if seg_data is None else _from_dict(SegConfig, seg_data, "seg")
            recon = None if recon_data is None else _from_dict(ReconConfig, recon_data, "recon")
            rest = {k: v for k, v in data.items() if k not in ("unet", "dit", "seg", "recon")}
            return _from_dict(cls, rest, "model", unet=unet, dit=dit, seg=seg, recon=recon).validate()
        except ConfigError:
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:  # e.g. a string or list where a number goes
            raise ConfigError(f"bad model config: {exc}") from None

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with top-level fields changed (e.g. image_size=128), validated."""
        return dataclasses.replace(self, **changes).validate()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _raise_first(checks) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _from_dict(cls, data: Dict[str, Any], where: str, **extra: Any):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} config must be a JSON object, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown {where} config key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        # JSON has no tuples: turn lists back into the tuple fields they came from.
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    kwargs.update(extra)
    return cls(**kwargs)


# Named presets. `paper` is the reference configuration (about 131.7 M + 28.4 M
# parameters); `compact` is the deployment default (<= 8 M parameters, <= 20 GFLOPs for
# the whole norm-guided pipeline at 256x256); `tiny` exists for fast tests. Each has a DiT
# variant, NAME-dit: the same segmentation net and recipe fields with a DiT eps-predictor.
PRESETS: Dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "compact": ModelConfig(
        # A 4x4 pixel-unshuffle puts the U-Net on a 64x64 grid at 256x256: about 4.8 M
        # parameters and 10 GFLOPs for both passes plus segmentation (paper: 1,200).
        unet=UNetConfig(patch_size=4, base_channels=32, channel_mult=(1, 2, 3, 4), num_res_blocks=1,
                        attention_resolutions=(16, 8), num_heads=4, time_embed_dim=128, groups=8),
        seg=SegConfig(widths=(16, 32, 48, 64, 64, 64)),
    ),
    "tiny": ModelConfig(
        image_size=32,
        unet=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                        attention_resolutions=(8,), num_heads=2, time_embed_dim=16, groups=4),
        seg=SegConfig(widths=(8, 16, 16)),
        top_k=4,
    ),
}
# The DiT of each preset. paper: DiT-B/8 (hidden 768, 12 blocks, 12 heads), as many parameters as the
# paper's U-Net (130 M) at 0.36x its FLOPs; 8x8 patches give 1,024 tokens at 256x256. compact: a
# narrow, shallow DiT/8 (hidden 192 = the p*p*C values of an RGB patch, heads of 64 as DiT-S):
# about 3.5 M parameters and 18 GFLOPs for the whole pipeline at 256x256, inside the compact budget.
# tiny: 8x8 tokens at 32x32, for tests.
DIT_SIZES: Dict[str, DiTConfig] = {
    "paper": DiTConfig(),
    "compact": DiTConfig(patch_size=8, hidden=192, depth=4, heads=3),
    "tiny": DiTConfig(patch_size=4, hidden=32, depth=2, heads=2),
}
PRESETS.update({f"{name}-dit": dataclasses.replace(PRESETS[name], backbone="dit", unet=None, dit=dit)
                for name, dit in DIT_SIZES.items()})


def preset(name: str, **changes: Any) -> ModelConfig:
    """The named preset with top-level fields replaced; unknown names are a ConfigError.

    `backbone` picks the preset's variant with that eps-predictor: preset("compact", backbone="dit")
    is preset("compact-dit"), and preset("compact-dit", backbone="unet") is preset("compact").
    `method="recon"` makes it a reconstruction-error model of the same eps-predictor (no segmentation
    net); `recon`, a ReconConfig or a dict of its fields, sets that method's settings. `method="seg"`
    keeps the preset's segmentation net alone (no eps-predictor)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    if "backbone" in changes:
        name = backbone_variant(name, changes.pop("backbone"))
    cfg = PRESETS[name]
    if "method" in changes or "recon" in changes:
        cfg = method_variant(cfg, changes.pop("method", cfg.method), changes.pop("recon", None))
    if "seg_stride" in changes:  # the preset's segmentation net reading a pooled input
        stride = changes.pop("seg_stride")
        if cfg.seg is None:
            raise ConfigError(f"seg_stride={stride}: a {cfg.method!r} model has no segmentation net")
        changes["seg"] = dataclasses.replace(cfg.seg, stride=stride)
    if "image_size" in changes and "top_k" not in changes:
        # Keep the paper's top-k density (50 of 256*256 pixels) at other sizes.
        changes["top_k"] = scaled_top_k(cfg.top_k, cfg.image_size, changes["image_size"])
    return cfg.replace(**changes) if changes else cfg.validate()


def scaled_top_k(top_k: int, from_size: int, to_size: int) -> int:
    return max(1, round(top_k * (to_size / from_size) ** 2))


def method_variant(cfg: ModelConfig, method: str, recon: Any = None) -> ModelConfig:
    """A preset's config for `method` (unvalidated): "recon" drops the segmentation net and takes
    `recon` (a ReconConfig, a dict of some of its fields, or None for the defaults); "seg" drops the
    eps-predictor."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not a detection method; choose one of {METHODS}")
    if method != "recon" and recon is not None:
        raise ConfigError(f"recon settings {recon} apply to method='recon' (dad-edge train --method recon)")
    if method == "diffusionad":
        return cfg
    if method == "seg":  # the preset's segmentation net, without its eps-predictor
        return dataclasses.replace(cfg, method="seg", backbone="unet", unet=None, dit=None, recon=None)
    if not isinstance(recon, ReconConfig):
        recon = _from_dict(ReconConfig, recon or {}, "recon")
    return dataclasses.replace(cfg, method="recon", recon=recon, seg=None)


def backbone_variant(name: str, backbone: str) -> str:
    """The name of preset `name`'s variant with `backbone` ("compact", "dit" -> "compact-dit")."""
    if backbone not in BACKBONES:
        raise ConfigError(f"backbone={backbone!r} is not a denoiser backbone; choose one of {BACKBONES}")
    base = name[:-len("-dit")] if name.endswith("-dit") else name
    return base if backbone == "unet" else f"{base}-{backbone}"
