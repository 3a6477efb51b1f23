"""AUROC parity: one trained compact model through every backend, against torch fp32 on the CPU.

    python -m pytest benchmarks/test_parity.py -q -s

The model: $DAD_EDGE_BENCH_MODEL, else runs/bench/tile_compact/model.safetensors in the
repository, made (and cached there, outside git: runs/ is ignored) by TRAIN_COMMAND; the
test skips with that command when neither exists. The data: the magnetic-tile category
(../shared/data/magnetic_tile beside the repository, or $DAD_EDGE_BENCH_DATA), its whole
test split (582 images).

The checkpoint is exported to ONNX, and to INT8 ONNX for CPUs (export/quantize.py, QDQ,
calibrated on INT8_CALIB_IMAGES of the category's good training images; ONNX Runtime and
OpenVINO run it), and, where TensorRT is, built into fp16 and INT8 engines (INT8 calibrated
on the category's good training images), in a temporary folder;
each backend runs the test images through Detector.infer_batch (what `dad-edge eval` does,
plus the half / fused options of torch).
Per backend: image AUROC, pixel AUROC (maps at the model's resolution against the
masks, as dad-edge evaluate), their differences from torch fp32, and the largest absolute
difference of any map value and any score. Tolerances on both AUROC differences fail the
run: fp32 identical to the 4 decimals reported (|difference| <= 5e-5: float rounding may
reorder pixels whose values differ in the last bit), fp16 <= 0.002, INT8 <= 0.01.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import harness
from backends import discover, reference

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DAD_EDGE_BENCH_DATA", REPO.parent / "shared" / "data" / "magnetic_tile"))
MODEL_ENV = "DAD_EDGE_BENCH_MODEL"
DEFAULT_MODEL = REPO / "runs" / "bench" / "tile_compact" / "model.safetensors"
TRAIN_COMMAND = ("dad-edge train --data ../shared/data/magnetic_tile --preset compact --image-size 128 "
                 "--lr-unet 1e-3 --lr-seg 1e-3 --minutes 30 --out runs/bench/tile_compact")
TOLERANCE = {"fp32": 5e-5, "fp16": 0.002, "int8": 0.01}
BATCH = 16
INT8_CALIB_IMAGES = 300  # of train/good: MIN_CALIBRATION_IMAGES of the TensorRT builder, the usual advice
TARGETS = discover()


def model_path() -> Path:
    given = os.environ.get(MODEL_ENV)
    if given:
        if not Path(given).is_file():
            pytest.fail(f"${MODEL_ENV}={given}: no such file")
        return Path(given)
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    pytest.skip(f"no trained model: set ${MODEL_ENV}, or train one (about 30 min on a 2-core CPU) from the "
                f"repository root with: {TRAIN_COMMAND}")


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """The model's files, the test set at the model's resolution and the torch fp32 reference outputs."""
    from dad_edge.artifacts import metadata as md
    from dad_edge.artifacts.checkpoint import read_tensors
    from dad_edge.data.mvtec import MVTecCategory, load_masks
    from dad_edge.export.onnx_export import export_onnx
    from dad_edge.data.imageio import read_image

    path = model_path()
    if not (DATA / "test").is_dir():
        pytest.skip(f"{DATA}: no test split (set DAD_EDGE_BENCH_DATA to an MVTec-layout category)")
    cfg = md.model_config(read_tensors(path)[1])
    tmp = tmp_path_factory.mktemp("parity")
    files = {"checkpoint": path, "onnx": tmp / "model.onnx", "tmp": tmp}
    export_onnx(path, files["onnx"])
    samples = MVTecCategory(DATA).test_samples()
    frames = [read_image(s.path) for s in samples]
    data = {
        "files": files, "cfg": cfg, "frames": frames,
        "labels": np.array([s.label for s in samples], np.int64),
        "masks": load_masks(samples, cfg.image_size),
    }
    data["reference"] = run(reference(TARGETS), data)
    return data


def engine(data, precision: str) -> Path:
    from dad_edge.export.tensorrt_build import EngineOptions, build_engine

    out = data["files"]["tmp"] / f"model-{precision}.plan"
    if not out.is_file():
        int8 = precision == "int8"
        build_engine(data["files"]["onnx"], out, EngineOptions(
            half=not int8, int8=int8, calib=DATA / "train" / "good" if int8 else None, calib_max_images=500,
            opt_batch=BATCH, max_batch=BATCH))
    return out


def int8_onnx(data) -> Path:
    """The INT8 (QDQ) form of the parity ONNX file, built on first use."""
    from dad_edge.export.quantize import quantize_onnx

    out = data["files"]["tmp"] / "model-int8.onnx"
    if not out.is_file():
        quantize_onnx(data["files"]["onnx"], out, DATA, max_images=INT8_CALIB_IMAGES)
    return out


def run(target, data):
    """(maps (N, S, S), scores (N,), image AUROC, pixel AUROC) of the test set on `target`."""
    import dad_edge
    from dad_edge.training.metrics import roc_auc

    if target.artifact == "engine":
        path = engine(data, target.precision)
    else:
        path = int8_onnx(data) if target.artifact == "onnx-int8" else data["files"][target.artifact]
    kwargs = {} if target.artifact == "engine" else target.detector_kwargs()
    with dad_edge.Detector(path, batch_size=BATCH, **kwargs) as det:
        maps, scores = det.infer_batch(data["frames"], "RGB")  # files decode as RGB
    maps, scores = maps.astype(np.float32), scores.astype(np.float64)
    return {"maps": maps, "scores": scores, "image_auroc": roc_auc(data["labels"], scores),
            "pixel_auroc": roc_auc(data["masks"].reshape(-1), maps.reshape(-1)), "runs_on": det.backend.device}


@pytest.mark.parametrize("target", TARGETS, ids=[t.id for t in TARGETS])
def test_auroc_parity(parity, target):
    if target.skip:
        pytest.skip(target.skip)
    ref = parity["reference"]
    got = ref if target == reference(TARGETS) else run(target, parity)
    tol = TOLERANCE[target.precision]
    row = {
        "target": target.id, "precision": target.precision, "runs_on": got["runs_on"],
        "image_auroc": got["image_auroc"], "pixel_auroc": got["pixel_auroc"],
        "d_image": got["image_auroc"] - ref["image_auroc"], "d_pixel": got["pixel_auroc"] - ref["pixel_auroc"],
        "max_map_diff": float(np.abs(got["maps"] - ref["maps"]).max()),
        "max_score_diff": float(np.abs(got["scores"] - ref["scores"]).max()),
        "tolerance": tol,
    }
    row["ok"] = abs(row["d_image"]) <= tol and abs(row["d_pixel"]) <= tol
    cfg = parity["cfg"]
    row["about"] = (f"{len(parity['labels'])} test images of {DATA.name}, model {model_path()} "
                    f"({cfg.image_size}x{cfg.image_size}x{cfg.channels}); reference torch-cpu-fp32; "
                    "d = backend - reference; tolerance on |d image| and |d pixel|")
    harness.PARITY.append(row)
    print(f"\n{target.id} ({got['runs_on']}): image AUROC {row['image_auroc']:.4f} ({row['d_image']:+.5f}), "
          f"pixel AUROC {row['pixel_auroc']:.4f} ({row['d_pixel']:+.5f}), max |d map| {row['max_map_diff']:.2e}")
    assert row["ok"], (f"{target.id}: AUROC differs from torch fp32 by image {row['d_image']:+.5f}, "
                       f"pixel {row['d_pixel']:+.5f}; the tolerance for {target.precision} is {tol}")
