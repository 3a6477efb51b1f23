"""The built-in demo dataset: real texture photographs with drawn defects, no download.

The photographs are the 512x512 gray textures shipped inside scikit-image. Training
crops come from the top of the photo and test crops from the bottom, so no test pixel
was seen in training. Test defects (scratches, spots, cracks) are drawn by generators
unlike the Perlin blobs used for training, so the demo measures generalisation rather
than recall of the training augmentation. Each mask is rendered from the same geometry
as its defect, and holds only pixels that visibly changed.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Dict, Tuple, Union

import cv2
import numpy as np

from dad_edge.errors import ConfigError, DataError
from dad_edge.data.imageio import write_image
from dad_edge.data.preprocess import resize_bilinear

DEMO_TEXTURES = ("brick", "grass", "gravel")
DEFECT_TYPES = ("scratch", "spot", "crack")
CROP = 128  # side of a crop in photo pixels
TRAIN_ROWS = (0, 352)  # photo rows train crops come from
TEST_ROWS = (368, 512)  # photo rows test crops come from; the gap keeps them apart
SUPERSAMPLE = 4  # geometry is drawn this much finer, then area-averaged into coverage
MIN_MASK_CHANGE = 10  # grey levels: a covered pixel that changed less is not labelled
MIN_MASK_PIXELS = 8
MAX_TRIES = 20
MARKER = ".dad_edge_demo"  # marks a folder this module made, and may therefore replace


def load_photo(texture: str) -> np.ndarray:
    """The scikit-image photograph `texture`, uint8 (512, 512)."""
    if texture not in DEMO_TEXTURES:
        raise DataError(f"unknown demo texture {texture!r}; choose one of {', '.join(DEMO_TEXTURES)}")
    try:
        from skimage import data as skdata  # only the demo needs scikit-image
    except ImportError as e:
        raise DataError("the demo dataset needs scikit-image: pip install scikit-image") from e
    return np.asarray(getattr(skdata, texture)(), dtype=np.uint8)


def _crop(photo: np.ndarray, rows: Tuple[int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    y = int(rng.integers(rows[0], rows[1] - CROP + 1))
    x = int(rng.integers(0, photo.shape[1] - CROP + 1))
    c = photo[y:y + CROP, x:x + CROP]
    if rng.random() < 0.5:
        c = c[:, ::-1]
    if rng.random() < 0.5:
        c = c[::-1]
    r = resize_bilinear(c[:, :, None].astype(np.float32), size)[:, :, 0]
    return np.clip(np.rint(r), 0, 255).astype(np.uint8)


# ---- geometry: float32 (size, size) coverage in [0, 1], anti-aliased ------------------------

def _coverage(size: int, draw: Callable[[np.ndarray, Callable[[np.ndarray], np.ndarray]], None]) -> np.ndarray:
    """Run `draw(canvas, to_canvas)` on a fine canvas and area-average it down to `size`."""
    canvas = np.zeros((size * SUPERSAMPLE, size * SUPERSAMPLE), np.uint8)

    def to_canvas(points: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(points) * SUPERSAMPLE).astype(np.int32).reshape(-1, 1, 2)

    draw(canvas, to_canvas)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _line_width(size: int, rng: np.random.Generator, lo: float, hi: float) -> int:
    # At least 1.5 output pixels wide, so that the line covers whole pixels along its length.
    return int(round(max(1.5, rng.uniform(lo, hi) * size / 128) * SUPERSAMPLE))


def _scratch_geometry(size: int, rng: np.random.Generator) -> np.ndarray:
    def draw(canvas, to_canvas):
        for _ in range(int(rng.integers(1, 3))):
            length = rng.uniform(0.3, 0.7) * size
            theta = rng.uniform(0, np.pi)
            centre = rng.uniform(0.25, 0.75, size=2) * size
            d = np.array([np.cos(theta), np.sin(theta)]) * length / 2
            bend = np.array([-d[1], d[0]]) * rng.uniform(-0.3, 0.3)  # a slight curve
            t = np.linspace(0, 1, 32)[:, None]
            p0, p1, p2 = centre - d, centre + bend, centre + d
            pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2  # quadratic Bezier
            cv2.polylines(canvas, [to_canvas(pts)], False, 255, _line_width(size, rng, 1.5, 2.5), cv2.LINE_AA)
    return _coverage(size, draw)


def _spot_geometry(size: int, rng: np.random.Generator) -> np.ndarray:
    def draw(canvas, to_canvas):
        centre = rng.uniform(0.2, 0.8, size=2) * size
        radius = max(3.0, rng.uniform(0.05, 0.11) * size)
        if rng.random() < 0.5:
            axes = (radius * rng.uniform(0.6, 1.4), radius * rng.uniform(0.6, 1.4))
            box = (tuple(centre * SUPERSAMPLE), tuple(2 * a * SUPERSAMPLE for a in axes), rng.uniform(0, 180))
            cv2.ellipse(canvas, box, 255, -1, cv2.LINE_AA)
        else:  # an irregular blob: radius wobbling smoothly around the circle
            n = 16
            wobble = np.convolve(np.tile(rng.normal(0, 1, n), 3), np.ones(3) / 3, mode="same")[n:2 * n]
            angles = np.arange(n) * 2 * np.pi / n
            r = radius * np.clip(1 + 0.3 * wobble, 0.5, 1.6)
            pts = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * r[:, None]
            cv2.fillPoly(canvas, [to_canvas(pts)], 255, cv2.LINE_AA)
    return _coverage(size, draw)


def _crack_geometry(size: int, rng: np.random.Generator) -> np.ndarray:
    step = max(1.5, size / 40)

    def walk(start: np.ndarray, angle: float, steps: int) -> list:
        pts = [start]
        for _ in range(steps):
            angle += rng.normal(0, 0.35)
            pts.append(pts[-1] + step * np.array([np.cos(angle), np.sin(angle)]))
        return pts

    def draw(canvas, to_canvas):
        angle = rng.uniform(0, 2 * np.pi)
        trunk = walk(rng.uniform(0.3, 0.7, size=2) * size, angle, int(rng.integers(15, 30)))
        width = _line_width(size, rng, 1.5, 2.5)
        cv2.polylines(canvas, [to_canvas(np.array(trunk))], False, 255, width, cv2.LINE_AA)
        for i in rng.choice(np.arange(3, len(trunk) - 1), size=int(rng.integers(1, 4)), replace=False):
            side = rng.choice([-1.0, 1.0])
            branch = walk(trunk[i], angle + side * rng.uniform(0.5, 1.2), int(rng.integers(4, 10)))
            cv2.polylines(canvas, [to_canvas(np.array(branch))], False, 255,
                          max(int(1.5 * SUPERSAMPLE), width - SUPERSAMPLE // 2), cv2.LINE_AA)
    return _coverage(size, draw)


_GEOMETRY: Dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "scratch": _scratch_geometry, "spot": _spot_geometry, "crack": _crack_geometry}


def _polarity(image: np.ndarray, cover: np.ndarray, rng: np.random.Generator) -> float:
    """+1 (brighter) or -1 (darker), favouring the side with more headroom under the defect."""
    mean = float((image * cover).sum() / max(cover.sum(), 1e-6))
    return 1.0 if rng.random() < (255.0 - mean) / 255.0 else -1.0


def add_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one defect of `kind` on a gray uint8 (S, S) image -> (defective image, bool mask)."""
    if kind not in _GEOMETRY:
        raise ConfigError(f"unknown defect kind {kind!r}; choose one of {', '.join(DEFECT_TYPES)}")
    size = image.shape[0]
    x = image.astype(np.float32)
    for _ in range(MAX_TRIES):
        cover = _GEOMETRY[kind](size, rng)
        if kind == "scratch":
            shift = _polarity(x, cover, rng) * rng.uniform(70, 110)
        elif kind == "spot":
            # A soft texture inside the spot: the shift varies smoothly between 75 and 100 %.
            grain = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
            grain = (grain - grain.min()) / max(float(grain.max() - grain.min()), 1e-6)
            shift = _polarity(x, cover, rng) * rng.uniform(60, 100) * (0.75 + 0.25 * grain)
        else:
            shift = -rng.uniform(80, 120)  # cracks are dark
        out = np.clip(np.rint(x + cover * shift), 0, 255).astype(np.uint8)
        mask = (cover >= 0.5) & (np.abs(out.astype(np.int16) - image) >= MIN_MASK_CHANGE)
        if mask.sum() >= MIN_MASK_PIXELS:
            return out, mask
    raise DataError(f"could not draw a visible {kind} on this image in {MAX_TRIES} tries "
                    "(is it saturated black or white?)")


def _prepare(root: Path) -> None:
    if root.exists():
        if (root / MARKER).is_file():
            shutil.rmtree(root)  # ours: rebuild from scratch so no stale files remain
        elif not root.is_dir() or any(root.iterdir()):
            raise DataError(f"{root}: exists and is not a demo dataset made by dad_edge; "
                            "choose another output folder or remove it")
    root.mkdir(parents=True, exist_ok=True)
    # Written first, so that a build cut short can still be replaced by the next one.
    (root / MARKER).write_text("dad_edge demo dataset\n")


def build_demo_dataset(out_dir: Union[str, Path], texture: str = "brick", size: int = 128, n_train: int = 60,
                       n_test_good: int = 20, n_test_per_defect: int = 12, seed: int = 0) -> Path:
    """Write an MVTec-layout category out_dir/<texture> and return its path."""
    photo = load_photo(texture)
    if size < 16:
        raise ConfigError(f"size={size} must be at least 16")
    for name, n in (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_per_defect", n_test_per_defect)):
        if n < 1:
            raise ConfigError(f"{name}={n} must be at least 1")
    root = Path(out_dir) / texture
    _prepare(root)
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        write_image(root / "train" / "good" / f"{i:03d}.png", _crop(photo, TRAIN_ROWS, size, rng))
    for i in range(n_test_good):
        write_image(root / "test" / "good" / f"{i:03d}.png", _crop(photo, TEST_ROWS, size, rng))
    for kind in DEFECT_TYPES:
        for i in range(n_test_per_defect):
            img, mask = add_defect(_crop(photo, TEST_ROWS, size, rng), kind, rng)
            write_image(root / "test" / kind / f"{i:03d}.png", img)
            write_image(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return root
