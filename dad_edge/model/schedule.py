"""The DDPM noise schedule: a parameter-free object, apart from the networks.

Ho et al. 2020 (DDPM), as used by DiffusionAD:
  (1) beta_t linear from beta_start to beta_end, t = 0..T-1
  (2) abar_t = prod_{s<=t} (1 - beta_s)
  (3) forward process  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
  (4) one-step inverse x0_hat = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps_theta
Values are float64 numpy so that every backend receives the same constants.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Coefficients:
    """The scalars one timestep needs (float64)."""

    t: int
    sqrt_abar: float  # multiplies x0 in (3)
    sqrt_one_minus_abar: float  # multiplies eps in (3)
    sqrt_recip_abar: float  # multiplies x_t in (4)
    sqrt_recip_abar_minus_one: float  # multiplies eps_theta in (4)


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

    def q_sample(self, x0: np.ndarray, t: int, eps: np.ndarray) -> np.ndarray:
        """(3) in numpy, for references and tests."""
        c = self.coefficients(t)
        return c.sqrt_abar * x0 + c.sqrt_one_minus_abar * eps

    def predict_x0(self, x_t: np.ndarray, t: int, eps: np.ndarray) -> np.ndarray:
        """(4) in numpy, unclamped."""
        c = self.coefficients(t)
        return c.sqrt_recip_abar * x_t - c.sqrt_recip_abar_minus_one * eps
