"""Artifact metadata: one JSON layout for checkpoints, ONNX files and engine headers.

Everything a runtime needs to use a model file travels inside it: the model config
(image size, channels, timesteps, top-k, noise seed), the pre-processing, thresholds
and, for engines, the TensorRT version and GPU it was built on. Parsed from JSON and
validated field by field; never pickle, never eval.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from dad_edge.model.config import ModelConfig
from dad_edge.errors import CheckpointError
from dad_edge.data.preprocess import OFFSET, SCALE
from dad_edge.version import FORMAT_VERSION, __version__

FORMAT_NAME = "dad_edge"
META_KEY = "dad_edge"  # where the JSON sits: safetensors header, ONNX metadata_props
KINDS = ("checkpoint", "onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds on the raw scores; None until calibrated."""

    image: Optional[float] = None  # score >= image -> anomalous image
    pixel: Optional[float] = None  # map >= pixel -> anomalous pixel
    source: str = "uncalibrated"  # how they were chosen, for the record

    def to_dict(self) -> Dict[str, Any]:
        return {"image": self.image, "pixel": self.pixel, "source": self.source}

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str) -> "Thresholds":
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: 'thresholds' must be an object")
        for key in ("image", "pixel"):
            v = d.get(key)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1):
                raise CheckpointError(f"{where}: threshold {key}={v!r} must be null or a number in [0, 1]")
        return cls(d.get("image"), d.get("pixel"), str(d.get("source", "uncalibrated")))


def build_metadata(cfg: ModelConfig, kind: str = "checkpoint", thresholds: Thresholds = Thresholds(),
                   **extra: Any) -> Dict[str, Any]:
    """The metadata dict of a new artifact; `extra` adds sections such as training or tensorrt."""
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "kind": kind,
        "model": cfg.to_dict(),
        "preprocessing": {
            "model_color_order": "RGB" if cfg.channels == 3 else "GRAY",
            "resize": "bilinear, half-pixel centres, edge clamp",
            "scale": SCALE,
            "offset": OFFSET,
        },
        "thresholds": thresholds.to_dict(),
    }
    meta.update(extra)
    return validate_metadata(meta, "new metadata")


def validate_metadata(meta: Any, where: str) -> Dict[str, Any]:
    """Check a parsed metadata dict; raise CheckpointError naming `where` and what to do."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{where} is not a dad_edge model (no dad_edge metadata); "
                              "use a file written by `dad-edge train` or `dad-edge export`")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} was written by dad_edge {meta.get('library_version', '?')} (format {version}); this is "
            f"dad_edge {__version__} (format {FORMAT_VERSION}): upgrade dad_edge to load it")
    if meta.get("kind") == "baseline":  # dad_edge/baselines/artifact.py: image scores only, no maps
        raise CheckpointError(f"{where} is a classical baseline (`dad-edge baseline`), not a model a Detector "
                              "runs: score it with `dad-edge eval`, or load it with dad_edge.baselines.artifact.load_baseline")
    if meta.get("kind") not in KINDS:
        raise CheckpointError(f"{where}: unknown artifact kind {meta.get('kind')!r}; expected one of {KINDS}")
    try:
        ModelConfig.from_dict(meta.get("model"))
    except Exception as exc:  # ConfigError or a malformed structure
        raise CheckpointError(f"{where}: bad model config: {exc}") from None
    pre = meta.get("preprocessing")
    if not isinstance(pre, dict) or not all(isinstance(pre.get(k), (int, float)) for k in ("scale", "offset")):
        raise CheckpointError(f"{where}: 'preprocessing' must hold numeric 'scale' and 'offset'")
    Thresholds.from_dict(meta.get("thresholds", {}), where)
    if meta["kind"] in ("onnx", "tensorrt"):
        _check_export(meta.get("export"), where)
    if meta["kind"] == "tensorrt":
        _check_tensorrt(meta.get("tensorrt"), where)
    return meta


def _check_export(section: Any, where: str) -> None:
    """An exported graph records its interface (export/onnx_export.py export_section): the engine
    builder reads it, and a hand-edited or truncated section must fail here, not deep inside a build."""
    batch = section.get("batch") if isinstance(section, dict) else None
    ok = (isinstance(section, dict) and isinstance(section.get("opset"), int) and section["opset"] > 0
          and (batch == "dynamic" or (isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1))
          and section.get("precision") in PRECISIONS and isinstance(section.get("input"), dict)
          and isinstance(section.get("outputs"), list))
    if not ok:
        raise CheckpointError(f"{where}: exported-model metadata needs an 'export' section with an int 'opset', "
                              "'batch' ('dynamic' or >= 1), a 'precision' in "
                              f"{PRECISIONS}, 'input' and 'outputs' (found {section!r}); re-export it with "
                              "`dad-edge export`")


def _check_tensorrt(section: Any, where: str) -> None:
    """An engine is only usable with the TensorRT version and GPU it was built for: both must be recorded."""
    ok = (isinstance(section, dict) and isinstance(section.get("version"), str)
          and isinstance(section.get("compute_capability"), str) and section.get("precision") in PRECISIONS)
    if not ok:
        raise CheckpointError(f"{where}: engine metadata needs a 'tensorrt' section with the TensorRT 'version', "
                              f"the GPU 'compute_capability' and a 'precision' in {PRECISIONS}; re-export the "
                              "engine with `dad-edge export ... --format engine`")


def derive_metadata(meta: Dict[str, Any], kind: str, **sections: Any) -> Dict[str, Any]:
    """Metadata of an artifact made from another (checkpoint -> ONNX -> engine).

    The model, thresholds and training record carry over; kind, library and format
    version are this library's; `sections` add or replace top-level sections.
    """
    new = {**meta, "kind": kind, "library_version": __version__, "format_version": FORMAT_VERSION, **sections}
    return validate_metadata(new, f"new {kind} metadata")


def model_config(meta: Dict[str, Any]) -> ModelConfig:
    return ModelConfig.from_dict(meta["model"])


def thresholds(meta: Dict[str, Any]) -> Thresholds:
    return Thresholds.from_dict(meta.get("thresholds", {}), "metadata")


def dumps(meta: Dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True)


def loads(text: str, where: str) -> Dict[str, Any]:
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{where}: metadata is not valid JSON ({exc}); the file is damaged") from None
    except RecursionError:  # thousands of nested brackets: no metadata of ours, a damaged or crafted file
        raise CheckpointError(f"{where}: metadata JSON is nested too deeply to be ours; the file is damaged") from None
    return validate_metadata(meta, where)


# Recorded in artifacts beside the thresholds, so that a reader knows what "normalised" means.
SCORE_NORMALIZATION = "piecewise linear: [0, image threshold] -> [0, 0.5], [image threshold, 1] -> [0.5, 1]"


def normalize_score(score, threshold: Optional[float]):
    """Map a raw score in [0, 1] piecewise-linearly so that the threshold lands on 0.5."""
    s = np.asarray(score, dtype=np.float64)
    if threshold is None:
        return s
    t = min(max(threshold, 1e-12), 1 - 1e-12)
    return np.where(s < t, 0.5 * s / t, 0.5 + 0.5 * (s - t) / (1 - t))
