"""The image score's exposure correction (ModelConfig.exposure_correction).

    score = clamp(topk_score - slope * (mean(x) - reference), 0, 1),  mean(x) over pixels and channels

Why: on magnetic tile the six lighting conditions are one exposure gain apart each (mean grey 66 to
151 in the training images, spread rising with it), and a trained model's image score rises with
the frame's brightness on good and defective parts alike: on the held-out good images of the
training split its correlation with the mean grey was 0.43-0.62, and within one lighting condition
image AUROC was 0.75-0.84 where the pooled figure was 0.77. A brighter good part then outranks a
darker defective one. The segmentation map alone shows it too, so it is the networks' response to
contrast, not the reconstruction term's. The fix measures the dependence where selection is allowed
(the held-out good images of the training split, `calibrate`, run by training before the thresholds)
and takes it out of the image score; the map is left as it is (an offset per image cost pixel AUROC).

A product whose score does not follow brightness must not be moved by noise: the slope is kept only
when the fit on the held-out good images is significant (|t| >= MIN_T for the correlation), else it
is 0 and the term changes nothing. Like the reconstruction term's statistics, (slope, reference) is a
persistent buffer: it travels in the checkpoint and is a constant of an exported graph, so every
backend computes the same score. benchmarks/README.md, session 13, has the measurements.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch
from torch import nn

# |t| of the correlation needed to keep a slope: two-sided p < 0.005 at 20 held-out images, below
# 0.001 from about 60; a slope fitted on fewer than MIN_IMAGES images is never kept.
MIN_T = 3.0
MIN_IMAGES = 12


def image_means(x: torch.Tensor) -> torch.Tensor:
    """The mean of each image (B, C, S, S) in the model's input range -> (B,) float32."""
    return x.float().mean(dim=(1, 2, 3))


def fit_exposure(scores: Sequence[float], means: Sequence[float]) -> Dict[str, float]:
    """Least-squares slope of the scores of good images on their mean input value, with the statistics that
    decide whether it is kept -> {"slope", "reference", "r", "t", "images", "kept"} (slope 0 when not kept)."""
    s, m = np.asarray(scores, np.float64), np.asarray(means, np.float64)
    n = int(s.size)
    if n != m.size:
        raise ValueError(f"{n} scores but {m.size} image means")
    reference = float(m.mean()) if n else 0.0
    fit = {"slope": 0.0, "reference": reference, "r": 0.0, "t": 0.0, "images": n, "kept": False}
    if n < MIN_IMAGES or m.std() == 0 or s.std() == 0:
        return fit
    r = float(np.corrcoef(s, m)[0, 1])
    t = r * math.sqrt((n - 2) / max(1.0 - r * r, 1e-12))
    fit.update(r=r, t=t)
    if abs(t) >= MIN_T:
        fit.update(slope=float(np.cov(s, m, bias=True)[0, 1] / m.var()), kept=True)
    return fit


class ExposureTerm(nn.Module):
    def __init__(self):
        super().__init__()
        # (slope, reference). Until `calibrate` runs the slope is 0: the score is the top-k score.
        self.register_buffer("coef", torch.tensor([0.0, 0.0]))

    @property
    def slope(self) -> float:
        return float(self.coef[0])

    def forward(self, score: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The top-k scores (B,) with the exposure dependence taken out, in [0, 1], float32."""
        coef = self.coef.float()
        return (score.float() - coef[0] * (image_means(x) - coef[1])).clamp(0.0, 1.0)

    @torch.no_grad()
    def calibrate(self, scores: Sequence[float], means: Sequence[float]) -> Dict[str, float]:
        """Fit on the top-k scores and image means of good images (fit_exposure) and keep the result."""
        fit = fit_exposure(scores, means)
        self.coef.copy_(torch.tensor([fit["slope"], fit["reference"]], dtype=self.coef.dtype))
        return fit
