"""baseline.safetensors: a fitted baseline as named arrays plus validated JSON metadata, no pickle.

    arrays    features.mean, features.std           (D,) the standardisation
              <method>.<name>                       the detector's state (see its module)
    metadata  under "dad_edge" (as every artifact), kind "baseline":
              {"format", "format_version", "library_version", "kind": "baseline",
               "baseline": {"method", "params"}, "features": {"image_size", "channels", "resize", "dim"},
               "training": {...the record of the fit...}}

The metadata is checked before any array is used, and each array against it, so that a foreign,
truncated or hand-edited file fails at load with a message that says what to do. Written
atomically. Reading needs numpy and safetensors only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np

from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.artifacts.metadata import FORMAT_NAME, META_KEY
from dad_edge.baselines.base import BaselineDetector, need_array
from dad_edge.baselines.features import RESIZE, PixelFeatures, check_shape
from dad_edge.baselines.methods import METHODS
from dad_edge.errors import CheckpointError, ConfigError
from dad_edge.version import FORMAT_VERSION, __version__

KIND = "baseline"
FILE_NAME = "baseline.safetensors"


@dataclass
class Baseline:
    """A loaded baseline: frames -> image scores, with numpy alone."""

    features: PixelFeatures
    detector: BaselineDetector
    meta: Dict[str, Any]

    @property
    def method(self) -> str:
        return self.detector.name

    def score(self, frames: Sequence[np.ndarray], color_order: str = "RGB") -> np.ndarray:
        """uint8 frames (H, W, C) of any sizes -> (N,) float64 scores, higher = more anomalous."""
        if len(frames) == 0:
            return np.empty(0, np.float64)
        return self.detector.score(self.features(frames, color_order))


def build_metadata(features: PixelFeatures, detector: BaselineDetector, training: Dict[str, Any]) -> Dict[str, Any]:
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "library_version": __version__,
            "kind": KIND, "baseline": {"method": detector.name, "params": detector.params()},
            "features": {"image_size": features.image_size, "channels": features.channels, "resize": RESIZE,
                         "dim": features.dim},
            "training": training}


def save_baseline(path, features: PixelFeatures, detector: BaselineDetector, training: Dict[str, Any]) -> Path:
    """Atomically write `path`; returns it."""
    from safetensors.numpy import save

    meta = build_metadata(features, detector, training)
    arrays = {"features.mean": features.mean, "features.std": features.std}
    arrays.update({f"{detector.name}.{k}": v for k, v in detector.arrays().items()})
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    # Not save_file: see artifacts/checkpoint.py::save_tensors.
    write_bytes_atomic(path, save(arrays, metadata={META_KEY: json.dumps(meta, sort_keys=True)}))
    return Path(path)


def _header(path: Path) -> Dict[str, Any]:
    """The parsed dad_edge metadata of a safetensors file; CheckpointError if there is none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own types for a bad header or a short file
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it may be cut short: "
                              "fit it again with `dad-edge baseline`") from None
    if META_KEY not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a dad_edge artifact (no dad_edge metadata); "
                              "use a file written by `dad-edge baseline`")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({exc}); the file is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a dad_edge artifact; use a file written by `dad-edge baseline`")
    return meta


def is_baseline_file(path) -> bool:
    """True for a readable .safetensors file whose metadata says kind "baseline"; False for anything else
    (a model, an ONNX file, a missing file), which its own loader then reports."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return False
    try:
        return _header(path).get("kind") == KIND
    except CheckpointError:
        return False


def validate_metadata(meta: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Check a baseline's metadata; CheckpointError naming `where` and what to do."""
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: bad format_version {version!r}; the file is damaged")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where} was written by dad_edge {meta.get('library_version', '?')} (format "
                              f"{version}); this is dad_edge {__version__} (format {FORMAT_VERSION}): upgrade "
                              "dad_edge to load it")
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{where} holds a {meta.get('kind')!r} artifact, not a baseline: open a model with "
                              "dad_edge.Detector, or fit a baseline with `dad-edge baseline`")
    section, feats = meta.get("baseline"), meta.get("features")
    if not isinstance(section, dict) or section.get("method") not in METHODS \
            or not isinstance(section.get("params"), dict):
        raise CheckpointError(f"{where}: 'baseline' must name a method in {sorted(METHODS)} and hold 'params' "
                              f"(found {section!r}); fit it again with `dad-edge baseline`")
    if not isinstance(feats, dict) or feats.get("resize") != RESIZE:
        raise CheckpointError(f"{where}: 'features' must describe {RESIZE!r}-downsampled pixels (found {feats!r}); "
                              "fit it again with `dad-edge baseline`")
    try:
        check_shape(feats.get("image_size"), feats.get("channels"))
    except ConfigError as exc:
        raise CheckpointError(f"{where}: bad 'features': {exc}") from None
    return meta


def load_baseline(path) -> Baseline:
    """Read and check a baseline file: its metadata first, then every array against it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; fit a baseline with `dad-edge baseline --data DIR --method "
                              f"{'|'.join(sorted(METHODS))} --out DIR`")
    where = str(path)
    meta = validate_metadata(_header(path), where)
    try:
        with safe_open(where, framework="np") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: arrays cannot be read ({exc}); the file is cut short or damaged: fit it "
                              "again") from None
    feats = meta["features"]
    size, channels = feats["image_size"], feats["channels"]
    dim = size * size * channels
    mean = need_array(arrays, "features.mean", "f", (dim,), where)
    std = need_array(arrays, "features.std", "f", (dim,), where)
    if (std <= 0).any():
        raise CheckpointError(f"{where}: feature standard deviations must be positive; the file is damaged")
    method = meta["baseline"]["method"]
    prefix = f"{method}."
    own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    detector = METHODS[method].from_arrays(own, meta["baseline"]["params"], dim, where)
    features = PixelFeatures(size, channels, mean.astype(np.float64), std.astype(np.float64))
    return Baseline(features, detector, meta)
