"""Reference of the scoring stage: map -> Gaussian smoothing -> top-k mean -> normalised score, mask.

Equals DiffusionAD's score step (`smooth` + `topk(k).values.mean()`) in float32 up to rounding, and
`artifacts.metadata.normalize_score`. Fused forms: a row pass and a column pass of the separable
blur (edge replication), then one pass per map that selects the k-th largest value by
radix select on the float bits (no sort), sums the values above it, and writes the mask.
Bytes moved per map pixel: 4 read + 4 write per blur pass, 4 read per select pass
(from cache), 1 written for the mask.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from dad_edge.artifacts.metadata import normalize_score


class ScoreResult(NamedTuple):
    scores: np.ndarray  # (B,) float32 mean of the top-k map values
    normalized: np.ndarray  # (B,) float32, image threshold at 0.5 (raw scores if no threshold)
    masks: Optional[np.ndarray]  # bool, like maps: map >= float32(pixel threshold); None if no threshold
    maps: np.ndarray  # float32, like the input: the smoothed maps (the input itself if no smoothing)


def gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of radius ceil(4 sigma), float32: the taps of every form and of
    DiffusionAD's smoothing (model.diffusion_ad.gaussian_kernel is this as a tensor)."""
    radius = max(1, int(np.ceil(4 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def smooth_ref(maps: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """(B, H, W) float32 -> separable blur with edge replication, rows first, taps summed in order."""
    r = (len(taps) - 1) // 2
    h, w = maps.shape[1:]
    padded = np.pad(maps, ((0, 0), (0, 0), (r, r)), mode="edge")
    rows = np.zeros_like(maps)
    for j, t in enumerate(taps):
        rows += t * padded[:, :, j:j + w]
    padded = np.pad(rows, ((0, 0), (r, r), (0, 0)), mode="edge")
    out = np.zeros_like(maps)
    for j, t in enumerate(taps):
        out += t * padded[:, j:j + h, :]
    return out


def topk_mean_ref(maps: np.ndarray, k: int) -> np.ndarray:
    """(B, ...) -> (B,) float32 mean of the k largest values of each map, summed in float64."""
    flat = maps.reshape(len(maps), -1)
    top = np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k:]
    return (top.astype(np.float64).sum(axis=1) / k).astype(np.float32)


def score_ref(maps: np.ndarray, top_k: int, sigma: float = 0.0, image_threshold: Optional[float] = None,
              pixel_threshold: Optional[float] = None) -> ScoreResult:
    """maps (B, H, W) or (B, 1, H, W) float32 probabilities -> ScoreResult."""
    shape = maps.shape
    m = np.asarray(maps, dtype=np.float32).reshape(shape[0], shape[-2], shape[-1])
    if sigma > 0:
        m = smooth_ref(m, gaussian_taps(sigma))
    scores = topk_mean_ref(m, top_k)
    normalized = np.asarray(normalize_score(scores, image_threshold), dtype=np.float32)
    masks = None if pixel_threshold is None else (m >= np.float32(pixel_threshold)).reshape(shape)
    return ScoreResult(scores, normalized, masks, m.reshape(shape))
