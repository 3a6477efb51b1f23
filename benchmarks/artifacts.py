"""The model files the latency benchmarks open, built once per session in a temporary folder.

compact, compact-seg and paper (harness.MODEL_PRESETS): the presets at 256x256 RGB with random weights (perturbed so that no
layer is all zeros; speed does not depend on the values), as checkpoint, ONNX file and
TensorRT engines; efficientad-s: the anchor (anchors.py) as ONNX file, engines and a torch
module. Each ONNX file also as INT8 QDQ for CPUs (export/quantize.py). An INT8 file is calibrated on CALIB_IMAGES good images of the magnetic-tile data
when it is there, else on random images (the ranges then mean nothing; speed is all we read).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

import dad_edge
import harness
from anchors import AnchorDetector, EfficientADS, export_anchor_onnx
from backends import Target

CALIB_IMAGES = 64
ONNX_INT8_CALIB_IMAGES = 16  # ONNX Runtime calibration is slow on a CPU, and speed does not depend on the ranges
ENGINE_MAX_BATCH = 32


class Artifacts:
    def __init__(self, root: Path, calib_dir: Optional[Path] = None):
        self.root = Path(root)
        self.calib_dir = calib_dir
        self._files: Dict[tuple, Path] = {}
        self._anchor: Optional[EfficientADS] = None

    def anchor_module(self) -> EfficientADS:
        if self._anchor is None:
            self._anchor = EfficientADS().eval()
        return self._anchor

    def checkpoint(self, model: str) -> Path:
        key = (model, "checkpoint")
        if key not in self._files:
            from dad_edge.artifacts import metadata as md
            from dad_edge.artifacts.checkpoint import save_model
            from dad_edge.model.build import build_model

            cfg = harness.model_config(model, image_size=256, channels=3)
            torch.manual_seed(0)
            net = build_model(cfg).eval()
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            path = self.root / f"{model}.safetensors"
            save_model(path, net, md.build_metadata(cfg))
            del net
            self._files[key] = path
        return self._files[key]

    def onnx(self, model: str) -> Path:
        key = (model, "onnx")
        if key not in self._files:
            path = self.root / f"{model}.onnx"
            if model == "efficientad-s":
                export_anchor_onnx(path, self.anchor_module())
            else:
                from dad_edge.export.onnx_export import export_onnx

                export_onnx(self.checkpoint(model), path)
            self._files[key] = path
        return self._files[key]

    def onnx_int8(self, model: str) -> Path:
        """The INT8 (QDQ) form of onnx(model), for ONNX Runtime and OpenVINO on the CPU."""
        key = (model, "onnx-int8")
        if key not in self._files:
            from dad_edge.export.quantize import quantize_onnx

            path = self.root / f"{model}-int8.onnx"
            quantize_onnx(self.onnx(model), path, self._calibration_folder(), max_images=ONNX_INT8_CALIB_IMAGES)
            self._files[key] = path
        return self._files[key]

    def _calibration_folder(self) -> Path:
        if self.calib_dir is not None and self.calib_dir.is_dir():
            return self.calib_dir
        import cv2

        folder = self.root / "calib"
        if not folder.is_dir():
            folder.mkdir()
            rng = np.random.default_rng(0)
            for i in range(CALIB_IMAGES):
                cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
        return folder

    def engine(self, model: str, precision: str, opt_batch: int) -> Path:
        """An engine for batches 1..ENGINE_MAX_BATCH, its kernels tuned for `opt_batch`."""
        key = (model, precision, opt_batch)
        if key not in self._files:
            from dad_edge.export.tensorrt_build import EngineOptions, build_engine

            int8 = precision == "int8"
            options = EngineOptions(half=precision == "fp16", int8=int8,
                                    calib=self._calibration_folder() if int8 else None,
                                    calib_max_images=CALIB_IMAGES, opt_batch=opt_batch,
                                    max_batch=max(ENGINE_MAX_BATCH, opt_batch),
                                    timing_cache=self.root / "timing.cache")
            path = self.root / f"{model}-{precision}-b{opt_batch}.plan"
            build_engine(self.onnx(model), path, options)
            self._files[key] = path
        return self._files[key]

    def detector(self, model: str, target: Target, batch: int) -> dad_edge.Detector:
        """The Detector that runs `model` on `target`, `batch` frames per backend call."""
        if target.artifact == "engine":
            return dad_edge.Detector(self.engine(model, target.precision, batch), batch_size=batch, **target.options)
        if target.artifact in ("onnx", "onnx-int8"):
            path = self.onnx(model) if target.artifact == "onnx" else self.onnx_int8(model)
            return dad_edge.Detector(path, batch_size=batch, **target.detector_kwargs())
        if model == "efficientad-s":
            return AnchorDetector(self.onnx(model), self.anchor_module(), device=target.device,
                                  half=target.precision == "fp16", batch_size=batch)
        return dad_edge.Detector(self.checkpoint(model), batch_size=batch, **target.detector_kwargs())
