"""The DDPM noise schedule: a parameter-free object, apart from the networks.

Ho et al. 2020 (DDPM), as used by DiffusionAD:
  (1) beta_t linear from beta_start to beta_end, t = 0..T-1
  (2) abar_t = prod_{s<=t} (1 - beta_s)
  (3) forward process  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
  (4) one-step inverse x0_hat = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps_theta
  (5) DDIM step (Song et al. 2021, eq. 12 with sigma = 0: deterministic) from t to an earlier s:
      x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_theta, with x0_hat from (4)
Values are float64 numpy so that every backend receives the same constants.

`add_noise` is (3) for every caller (the model's training and inference steps, the kernels'
references), on numpy arrays and torch tensors alike; `eval_coefficients(cfg)` is the one
place the scalars of the norm-guided inference at t_s and t_l are derived (the model, the
fused path and every kernel take them from here). No torch import: the kernels' numpy
references and the ONNX Runtime path use this module.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple, Tuple, Union

import numpy as np


@dataclass(frozen=True)
class Coefficients:
    """The scalars one timestep needs (float64)."""

    t: int
    sqrt_abar: float  # multiplies x0 in (3)
    sqrt_one_minus_abar: float  # multiplies eps in (3)
    sqrt_recip_abar: float  # multiplies x_t in (4)
    sqrt_recip_abar_minus_one: float  # multiplies eps_theta in (4)


def add_noise(x, coefs, noise):
    """(3) with the coefficients given, coefs = (sqrt(abar_t), sqrt(1 - abar_t)): the formula itself,
    for callers that hold the coefficients only (the kernels' references); see NoiseSchedule.add_noise."""
    sqrt_abar, sqrt_one_minus_abar = coefs
    return sqrt_abar * x + sqrt_one_minus_abar * noise


class EvalCoefficients(NamedTuple):
    """(sqrt(abar_s), sqrt(1 - abar_s), sqrt(abar_l), sqrt(1 - abar_l)), float64, at the config's
    t_s and t_l: the 4-tuple every kernel takes as `coefs`."""

    sqrt_abar_s: float
    sqrt_one_minus_abar_s: float
    sqrt_abar_l: float
    sqrt_one_minus_abar_l: float

    @property
    def small(self) -> Tuple[float, float]:
        """(sqrt(abar_s), sqrt(1 - abar_s)): add_noise's coefficients at t_s."""
        return self[0], self[1]

    @property
    def large(self) -> Tuple[float, float]:
        """(sqrt(abar_l), sqrt(1 - abar_l)): add_noise's coefficients at t_l."""
        return self[2], self[3]


class NoiseSchedule:
    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_timesteps = num_timesteps
        self.betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)  # (1)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)  # (2)

    @classmethod
    def from_config(cls, cfg) -> "NoiseSchedule":
        return cls(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)

    def coefficients(self, t: int) -> Coefficients:
        if not 0 <= t < self.num_timesteps:
            raise ValueError(f"timestep {t} outside [0, {self.num_timesteps})")
        abar = float(self.alphas_cumprod[t])
        return Coefficients(
            t=t,
            sqrt_abar=float(np.sqrt(abar)),
            sqrt_one_minus_abar=float(np.sqrt(1.0 - abar)),
            sqrt_recip_abar=float(np.sqrt(1.0 / abar)),
            sqrt_recip_abar_minus_one=float(np.sqrt(1.0 / abar - 1.0)),
        )

    def add_noise(self, x, t_or_coefs: Union[int, Coefficients, Tuple], noise):
        """(3) x_t = sqrt(abar_t) x + sqrt(1 - abar_t) noise, on numpy arrays or torch tensors.

        t_or_coefs: an int timestep; its Coefficients; or the pair (sqrt(abar_t), sqrt(1 - abar_t)),
        Python floats (e.g. EvalCoefficients.small: constants of an exported graph) or arrays /
        tensors broadcastable to x (per-sample timesteps in training). The arithmetic is the
        same for all: sqrt_abar * x + sqrt_one_minus_abar * noise, in the inputs' precision.
        """
        if isinstance(t_or_coefs, (int, np.integer)):
            t_or_coefs = self.coefficients(int(t_or_coefs))
        if isinstance(t_or_coefs, Coefficients):
            t_or_coefs = (t_or_coefs.sqrt_abar, t_or_coefs.sqrt_one_minus_abar)
        return add_noise(x, t_or_coefs, noise)

    def q_sample(self, x0: np.ndarray, t: int, eps: np.ndarray) -> np.ndarray:
        """(3) in numpy, for references and tests (add_noise at an int timestep)."""
        return self.add_noise(x0, t, eps)

    def predict_x0(self, x_t: np.ndarray, t: int, eps: np.ndarray) -> np.ndarray:
        """(4) in numpy, unclamped."""
        c = self.coefficients(t)
        return c.sqrt_recip_abar * x_t - c.sqrt_recip_abar_minus_one * eps


class DDIMStep(NamedTuple):
    """One network pass of a deterministic DDIM reconstruction: at timestep t, (4) then (5) to the next
    timestep of the sequence (abar = 1 after the last one: x_next is x0_hat itself)."""

    t: int
    sqrt_abar: float  # (3) at t: the first step's noising of the image
    sqrt_one_minus_abar: float
    sqrt_recip_abar: float  # (4) at t
    sqrt_recip_abar_minus_one: float
    sqrt_abar_next: float  # (5) at the next timestep
    sqrt_one_minus_abar_next: float


def ddim_timesteps(t: int, steps: int) -> Tuple[int, ...]:
    """The `steps` timesteps of a DDIM pass from t towards 0: np.linspace(t, 0, steps + 1) without the
    final 0, rounded; distinct for 1 <= steps <= t. steps = 1 is (t,): the one-step estimate (4)."""
    if not 1 <= steps <= t:
        raise ValueError(f"steps={steps} must be in [1, t={t}]")
    return tuple(int(v) for v in np.rint(np.linspace(t, 0, steps + 1)[:-1]))


def ddim_steps(sched: "NoiseSchedule", t: int, steps: int) -> Tuple[DDIMStep, ...]:
    """The coefficients of each pass of ddim_timesteps(t, steps), Python floats (graph constants)."""
    ts = ddim_timesteps(t, steps)
    out = []
    for i, ti in enumerate(ts):
        c = sched.coefficients(ti)
        nxt = sched.coefficients(ts[i + 1]) if i + 1 < len(ts) else None
        out.append(DDIMStep(ti, c.sqrt_abar, c.sqrt_one_minus_abar, c.sqrt_recip_abar, c.sqrt_recip_abar_minus_one,
                            1.0 if nxt is None else nxt.sqrt_abar, 0.0 if nxt is None else nxt.sqrt_one_minus_abar))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _eval_coefficients(num_timesteps: int, beta_start: float, beta_end: float,
                       t_small: int, t_large: int) -> EvalCoefficients:
    sched = NoiseSchedule(num_timesteps, beta_start, beta_end)
    cs, cl = sched.coefficients(t_small), sched.coefficients(t_large)
    return EvalCoefficients(cs.sqrt_abar, cs.sqrt_one_minus_abar, cl.sqrt_abar, cl.sqrt_one_minus_abar)


def eval_coefficients(cfg) -> EvalCoefficients:
    """The scalars of the norm-guided inference at cfg.t_small and cfg.t_large: the one place they
    are derived (DiffusionAD's steps, the fused path and every kernel form use these)."""
    return _eval_coefficients(cfg.num_timesteps, cfg.beta_start, cfg.beta_end, cfg.t_small, cfg.t_large)
