"""Synthetic anomalies for training (DRAEM style), offline and deterministic for a seed.

A Perlin-noise mask M chooses where; an anomaly source chooses what: the image itself
after photometric augmentations and a stripe/grid shuffle, a texture file of the user's
(e.g. DTD), or a procedural texture when there is none (training must work without
downloads). Blend: aug = x(1-M) + (1-b) src M + b x M, b ~ U(0.2, 0.8). Optional shares of
the anomalies take other shapes: thin lines (line_prob), bands of another finish (band_prob),
patches of other good images (patch_prob).

Images are float32 pixel values 0..255 as the loader resizes them (no rounding: the model is
trained on the numbers the Detector's pre-processing gives it); uint8 images are accepted too.
Only the anomaly source is made from a rounded copy, since the photometric operations work on
uint8; everything outside the mask, and the image's share b inside it, stays exact.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from dad_edge.errors import ConfigError, DataError
from dad_edge.data.augment import View
from dad_edge.data.imageio import list_images, read_image, read_mask, resize_mask, write_image
from dad_edge.data.line_anomaly import line_anomaly
from dad_edge.data.perlin import band_mask, perlin_mask, perlin_noise
from dad_edge.data.photometric import finish_change, per_channel, random_photometric, to_uint8
from dad_edge.data.poisson_patch import poisson_patch
from dad_edge.data.preprocess import resize_bilinear, to_channels

PathLike = Union[str, Path]
MASK_TRIES = 5  # Perlin masks drawn before giving up on an empty foreground intersection
BLEND_RANGE = (0.2, 0.8)
DONOR_BLEND_RANGE = (0.0, 0.3)


def stripe_shuffle(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Permute equal horizontal stripes, vertical stripes or grid cells of the image."""
    size, channels = x.shape[0], x.shape[2]
    mode = int(rng.integers(3))
    n = int(rng.integers(2, 9))
    cell = size // n
    if cell < 1:
        return x.copy()
    k = n * cell  # a remainder strip at the end stays in place
    count = n * n if mode == 2 else n
    perm = rng.permutation(count)
    if np.array_equal(perm, np.arange(count)):
        perm = np.roll(perm, 1)  # the identity would be no anomaly at all
    out = x.copy()
    if mode == 0:
        out[:k] = x[:k].reshape(n, cell, size, channels)[perm].reshape(k, size, channels)
    elif mode == 1:
        out[:, :k] = x[:, :k].reshape(size, n, cell, channels)[:, perm].reshape(size, k, channels)
    else:
        blocks = x[:k, :k].reshape(n, cell, n, cell, channels).transpose(0, 2, 1, 3, 4)
        blocks = blocks.reshape(n * n, cell, cell, channels)[perm].reshape(n, n, cell, cell, channels)
        out[:k, :k] = blocks.transpose(0, 2, 1, 3, 4).reshape(k, k, channels)
    return out


# ---- procedural textures: (size, channels, rng) -> uint8 (size, size, channels) -------------

def _random_colours(channels: int, rng: np.random.Generator, n: int = 2) -> np.ndarray:
    return rng.uniform(0, 255, size=(n, channels)).astype(np.float32)


def _perlin_texture(size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    # Independent noise per channel gives coloured clouds; two octaves add fine detail.
    res = 2 ** int(rng.integers(1, 5))
    out = np.empty((size, size, channels), np.float32)
    for c in range(channels):
        n = perlin_noise((size, size), (res, res), rng) + 0.5 * perlin_noise((size, size), (2 * res, 2 * res), rng)
        out[:, :, c] = (n - n.min()) / max(float(n.max() - n.min()), 1e-6)
    lo, hi = _random_colours(channels, rng)
    return to_uint8(lo + out * (hi - lo))


def _stripe_texture(size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(4, max(size / 4, 5))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xx * np.cos(theta) + yy * np.sin(theta) + rng.uniform(0, period)
    wave = np.sin(2 * np.pi * u / period)
    if rng.random() < 0.5:  # checker: the product of two orthogonal waves
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        wave = wave * np.sin(2 * np.pi * v / period)
    t = (wave > rng.uniform(-0.5, 0.5)).astype(np.float32)
    if rng.random() < 0.5:  # soft edges
        t = cv2.GaussianBlur(t, (0, 0), rng.uniform(0.5, 2.0))
    c0, c1 = _random_colours(channels, rng)
    return to_uint8(c0 + t[:, :, None] * (c1 - c0))


def _blob_texture(size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(1.0, max(size / 16, 1.5))
    noise = rng.random((size, size, channels)).astype(np.float32)
    f = per_channel(noise, lambda c: cv2.GaussianBlur(c, (0, 0), sigma))
    f = (f - f.min(axis=(0, 1))) / np.maximum(f.max(axis=(0, 1)) - f.min(axis=(0, 1)), 1e-6)
    if rng.random() < 0.5:  # hard-edged blobs
        f = (f > 0.5).astype(np.float32)
    c0, c1 = _random_colours(channels, rng)
    return to_uint8(c0 + f * (c1 - c0))


def _gradient_texture(size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if rng.random() < 0.5:
        theta = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(theta) + yy * np.sin(theta)
    else:
        cy, cx = rng.uniform(0, size, size=2)
        t = np.hypot(yy - cy, xx - cx)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = _random_colours(channels, rng)
    grain = rng.normal(0, 6, size=(size, size, channels)).astype(np.float32)  # not a flat ramp
    return to_uint8(c0 + t[:, :, None] * (c1 - c0) + grain)


_TEXTURES = (_perlin_texture, _stripe_texture, _blob_texture, _gradient_texture)


def procedural_texture(size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """A random texture made from scratch: coloured Perlin noise, stripes/checker, blobs or gradients."""
    return _TEXTURES[int(rng.integers(len(_TEXTURES)))](size, channels, rng)


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """bool (H, W): the smaller of the two Otsu classes, taken to be the object.

    A uniform image has no second class; then everything counts as foreground, so that
    anomalies can still be placed.
    """
    gray = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    gray = cv2.GaussianBlur(np.ascontiguousarray(gray), (5, 5), 0)  # ignore pixel noise
    _, th = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = th.astype(bool)
    fg = bright if bright.sum() <= bright.size / 2 else ~bright
    return fg if fg.any() else np.ones_like(fg)


class AnomalySynthesizer:
    """Turns a normal training image into (augmented image, mask, is_anomalous)."""

    def __init__(self, image_size: int, channels: int, texture_dir: Optional[PathLike] = None,
                 foreground: Optional[PathLike] = None, anomaly_prob: float = 0.5,
                 self_source_prob: float = 0.5, band_prob: float = 0.0, patch_prob: float = 0.0,
                 line_prob: float = 0.0):
        if image_size < 8:
            raise ConfigError(f"image_size={image_size} must be at least 8")
        if channels not in (1, 3):
            raise ConfigError(f"channels={channels} must be 1 or 3")
        for name, p in (("anomaly_prob", anomaly_prob), ("self_source_prob", self_source_prob),
                        ("band_prob", band_prob), ("patch_prob", patch_prob), ("line_prob", line_prob)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name}={p} must be in [0, 1]")
        self.image_size = image_size
        self.channels = channels
        self.anomaly_prob = anomaly_prob
        self.self_source_prob = self_source_prob
        # Share of anomalies that are a large band with a changed finish (band_mask + finish_change)
        # instead of a Perlin blob of foreign content: large-area, low-contrast defects.
        self.band_prob = band_prob
        # Share of anomalies that are a patch of another normal image Poisson-blended elsewhere
        # (data/poisson_patch.py, NSA); needs use_donors, else they are Perlin anomalies.
        self.patch_prob = patch_prob
        # Share of anomalies that are a thin line, a crack or scratch (data/line_anomaly.py): defects
        # a pixel or two wide, which Perlin blobs never are.
        self.line_prob = line_prob
        # Other normal images of the product (use_donors): a band is then filled from one of them,
        # the same region of another part: two finishes of one product meeting at an edge, which is
        # what an uneven surface looks like. Without donors a band is the image's own finish changed.
        self._donors: Optional[np.ndarray] = None
        # Texture files are listed now (to fail early) but read only when drawn.
        self.texture_dir = Path(texture_dir) if texture_dir is not None else None
        self._textures: List[Path] = []
        if self.texture_dir is not None:
            if not self.texture_dir.is_dir():
                raise DataError(f"texture_dir {self.texture_dir}: not a folder; pass a folder of "
                                "texture images (e.g. DTD's images/), or leave it out to use procedural textures")
            self._textures = list_images(self.texture_dir, recursive=True)  # DTD nests one folder per class
            if not self._textures:
                raise DataError(f"texture_dir {self.texture_dir}: has no image files; pass a folder of "
                                "texture images, or leave it out to use procedural textures")
        self.foreground = foreground
        self._foreground_masks: Dict[str, Path] = {}
        if foreground is not None and not (isinstance(foreground, str) and foreground == "otsu"):
            folder = Path(foreground)
            if not folder.is_dir():
                raise DataError(f"foreground {foreground}: must be None, 'otsu' or a folder of "
                                "foreground masks named like the training images")
            for p in list_images(folder, recursive=True):
                self._foreground_masks[p.stem] = p
                if p.stem.endswith("_mask"):
                    self._foreground_masks.setdefault(p.stem[: -len("_mask")], p)
            if not self._foreground_masks:
                raise DataError(f"foreground {folder}: has no mask images; add one per training image "
                                "(same file stem), or use foreground='otsu'")

    def use_donors(self, images: np.ndarray) -> None:
        """Fill band and patch anomalies from these normal images ((N, S, S, C), as the training images are)."""
        images = np.asarray(images)
        s, c = self.image_size, self.channels
        if images.ndim != 4 or images.shape[1:] != (s, s, c) or len(images) < 2:
            raise DataError(f"AnomalySynthesizer.use_donors: expected at least 2 images of shape {(s, s, c)}, "
                            f"got an array of shape {images.shape}")
        self._donors = images

    def _band_source(self, image: np.ndarray, rounded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._donors is None:
            return finish_change(rounded, rng)
        for _ in range(MASK_TRIES):  # not the image itself (its own pixels would be no anomaly)
            donor = self._donors[int(rng.integers(len(self._donors)))]
            if not np.array_equal(donor, image):
                return donor.astype(np.float32)
        return finish_change(rounded, rng)

    def _patch(self, image: np.ndarray, rounded: np.ndarray, fg: Optional[np.ndarray],
               rng: np.random.Generator) -> Optional[Tuple[np.ndarray, np.ndarray, bool]]:
        for _ in range(MASK_TRIES):  # a paste of the same finish changes too little to be an anomaly
            donor = self._donors[int(rng.integers(len(self._donors)))]
            pasted = poisson_patch(rounded, donor if donor.dtype == np.uint8 else to_uint8(donor), rng)
            if pasted is None:
                continue
            cloned, mask = pasted
            if fg is not None:
                mask *= fg
            if mask.any():
                # Outside the pasted rectangle the image keeps its exact (unrounded) values.
                changed = (cloned != rounded).any(axis=2, keepdims=True)
                return np.where(changed, cloned, image.astype(np.float32)), mask, True
        return None

    def foreground_for(self, stem: Optional[str]) -> Optional[np.ndarray]:
        """bool (S, S) foreground mask for an image's file stem; None unless foreground is a folder."""
        if not self._foreground_masks:
            return None
        if stem is None:
            raise DataError(f"foreground {self.foreground}: masks are looked up by file stem; "
                            "pass stem= with each image")
        path = self._foreground_masks.get(stem)
        if path is None:
            raise DataError(f"foreground {self.foreground}: no mask for image {stem!r}; expected "
                            f"{Path(self.foreground) / (stem + '.png')} (or {stem}_mask.png)")
        return resize_mask(read_mask(path), self.image_size)

    def _foreground(self, image: np.ndarray, stem: Optional[str], view: Optional[View]) -> Optional[np.ndarray]:
        if isinstance(self.foreground, str) and self.foreground == "otsu":
            return otsu_foreground(image)  # found in the image as given, so already in the view's frame
        fg = self.foreground_for(stem)
        return fg if fg is None or view is None else view.apply(fg)

    def _check(self, image: np.ndarray) -> None:
        s, c = self.image_size, self.channels
        if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.float32) or image.shape != (s, s, c):
            raise DataError(f"AnomalySynthesizer: expected a uint8 or float32 image of shape {(s, s, c)}, got "
                            f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")

    def _file_texture(self, rng: np.random.Generator) -> np.ndarray:
        path = self._textures[int(rng.integers(len(self._textures)))]
        tex = to_channels(read_image(path), self.channels, color_order="RGB")
        h, w = tex.shape[:2]
        side = int(rng.integers(max(min(h, w) // 2, 1), min(h, w) + 1))  # random scale and place
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        return to_uint8(resize_bilinear(tex[y:y + side, x:x + side], self.image_size))

    def _source(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.self_source_prob:
            return stripe_shuffle(random_photometric(image, rng), rng)
        if self._textures:
            texture = self._file_texture(rng)
        else:
            texture = procedural_texture(self.image_size, self.channels, rng)
        return random_photometric(texture, rng)  # as DRAEM does for its texture sources

    def _normal(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, bool]:
        return image.astype(np.float32), np.zeros((self.image_size, self.image_size), np.float32), False

    def _anomalous(self, image: np.ndarray, rng: np.random.Generator, stem: Optional[str],
                   view: Optional[View] = None) -> Tuple[np.ndarray, np.ndarray, bool]:
        rounded = image if image.dtype == np.uint8 else to_uint8(image)
        fg = self._foreground(rounded, stem, view)
        if self.line_prob > 0 and rng.random() < self.line_prob:  # no draw when off: same stream as before
            lined = line_anomaly(image, rng, fg)
            if lined is not None:
                return lined[0], lined[1], True
        if self.patch_prob > 0 and self._donors is not None and rng.random() < self.patch_prob:
            patched = self._patch(image, rounded, fg, rng)  # no draw when off: same stream as before
            if patched is not None:
                return patched
        band = self.band_prob > 0 and rng.random() < self.band_prob  # no draw when off: same stream as before
        for _ in range(MASK_TRIES):
            mask = band_mask(self.image_size, rng) if band else perlin_mask(self.image_size, rng)
            if fg is not None:
                mask *= fg
            if mask.any():
                break
        else:
            return self._normal(image)
        src = (self._band_source(image, rounded, rng) if band else self._source(rounded, rng)).astype(np.float32)
        # Another part's surface replaces the band nearly whole; foreign content is blended in.
        b = np.float32(rng.uniform(*(DONOR_BLEND_RANGE if band and self._donors is not None else BLEND_RANGE)))
        x = image.astype(np.float32)
        m = mask[:, :, None]
        aug = x * (1 - m) + (1 - b) * src * m + b * x * m
        return aug, mask, True

    def __call__(self, image: np.ndarray, rng: np.random.Generator, stem: Optional[str] = None,
                 view: Optional[View] = None) -> Tuple[np.ndarray, np.ndarray, bool]:
        """(augmented float32 (S, S, C) pixel values 0..255, mask float32 (S, S) in {0, 1}, is_anomalous).

        view: the View (data/augment.py) `image` was taken through; a foreground mask read from a
        folder for `stem` is turned the same way."""
        self._check(image)
        if rng.random() >= self.anomaly_prob:
            return self._normal(image)
        return self._anomalous(image, rng, stem, view)

    def preview(self, images: Sequence[np.ndarray], n: int, out_dir: PathLike, seed: int = 0,
                stems: Optional[Sequence[str]] = None, views: Optional[Sequence[View]] = None) -> List[Path]:
        """Write `n` PNGs, each an anomalous sample beside its mask; return their paths.

        views: sample i's image is taken through views[i] first (training's --augment), named in its file."""
        if len(images) == 0:
            raise DataError("AnomalySynthesizer.preview: no images given")
        rng = np.random.default_rng(seed)
        out_dir = Path(out_dir)
        paths = []
        for i in range(n):
            image = images[i % len(images)]
            self._check(image)
            view = views[i] if views is not None else None
            if view is not None:
                image = view.apply(image)
            aug, mask, _ = self._anomalous(image, rng, stems[i % len(stems)] if stems else None, view)
            mask_img = np.repeat((mask * 255).astype(np.uint8)[:, :, None], self.channels, axis=2)
            path = out_dir / (f"synthetic_{i:03d}.png" if view is None else f"synthetic_{i:03d}_{view.name}.png")
            write_image(path, np.concatenate([to_uint8(aug), mask_img], axis=1))
            paths.append(path)
        return paths
