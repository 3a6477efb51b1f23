"""What the map's reconstruction-error term and the score's exposure correction measure on held-out good images.

Run by training before every save, with the weights being saved (the EMA average when EMA is on)
and before the thresholds are set, so that the thresholds see the map the model file gives.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from dad_edge.data.preprocess import OFFSET, SCALE
from dad_edge.model.exposure_term import image_means


def model_inputs(images: np.ndarray, device: torch.device, batch_size: int) -> Iterator[torch.Tensor]:
    """`images` (N, S, S, C) float pixel values 0..255 (load_images) -> model inputs (B, C, S, S), batch by batch,
    by preprocess()'s arithmetic."""
    for i in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[i:i + batch_size].transpose(0, 3, 1, 2))
        yield torch.from_numpy(chunk).to(device) * SCALE + OFFSET


@contextmanager
def evaluating(model):
    """The model in eval mode (BatchNorm with its running statistics, as at inference), then back."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def calibrate_recon_term(model, images: np.ndarray, device: torch.device,
                         batch_size: int = 16) -> Optional[Tuple[float, float, float]]:
    """Set model.recon_term's statistics from `images` (N, S, S, C) float pixel values 0..255 (load_images)
    -> (seg_std, error_mean, error_std); None (nothing done) when the model has no such term."""
    term = getattr(model, "recon_term", None)
    if term is None:
        return None

    def pairs() -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for x in model_inputs(images, device, batch_size):
            seg_in = model.segmentation_input(x)
            yield model.segment(seg_in), seg_in

    with evaluating(model):
        return term.calibrate(pairs())


@torch.no_grad()
def calibrate_exposure_term(model, images: np.ndarray, device: torch.device,
                            batch_size: int = 16) -> Optional[Dict[str, float]]:
    """Fit model.exposure_term (model/exposure_term.py) on the top-k scores of good `images` (as
    calibrate_recon_term takes them) -> the fit (slope, reference, r, t, images, kept); None (nothing done)
    when the model has no such term. Run after calibrate_recon_term: the scores are those of the final map."""
    term = getattr(model, "exposure_term", None)
    if term is None:
        return None
    term.coef.zero_()  # the scores to fit are the uncorrected ones
    scores, means = [], []
    with evaluating(model):
        for x in model_inputs(images, device, batch_size):
            scores.append(model(x).score.float().cpu())
            means.append(image_means(x).cpu())
    return term.calibrate(torch.cat(scores).double().numpy(), torch.cat(means).double().numpy())
