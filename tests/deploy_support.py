"""Helpers shared by the export / Detector tests: small random models and test images."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np

from dad_edge.artifacts import metadata as md
from dad_edge.model.config import ModelConfig, preset
from dad_edge.data.imageio import write_image

MAGNETIC_TILE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "magnetic_tile"


def random_model(cfg: ModelConfig, seed: int = 0, std: float = 0.1):
    """The config's module (DiffusionAD, or another method's) with every parameter perturbed (seeded):
    untrained, the zero-initialised output convolutions would make the U-Net an identity and every map alike."""
    import torch

    from dad_edge.model.build import build_model

    with torch.random.fork_rng():  # seeded default initialisation, global RNG left alone
        torch.manual_seed(seed)
        model = build_model(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen))
    return model


def assert_onnx_matches_torch(model, onnx_dir: Path, atol: float = 1e-4) -> None:
    """Export `model` to ONNX in onnx_dir and check that onnxruntime's map and score match torch's on random pixels."""
    import onnxruntime as ort
    import torch

    from dad_edge.data.preprocess import OFFSET, SCALE
    from dad_edge.export.onnx_export import export_onnx

    cfg = model.cfg
    export_onnx(model, onnx_dir / "m.onnx", meta=md.build_metadata(cfg))
    shape = (2, cfg.channels, cfg.image_size, cfg.image_size)
    pixels = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(pixels * SCALE + OFFSET))
    amap, score = ort.InferenceSession(str(onnx_dir / "m.onnx")).run(["anomaly_map", "score"], {"image": pixels})
    assert np.abs(amap - ref.anomaly_map.numpy()).max() <= atol
    assert np.abs(score - ref.score.numpy()).max() <= atol


def write_checkpoint(path: Path, cfg: ModelConfig, seed: int = 0, std: float = 0.1,
                     thresholds: md.Thresholds = md.Thresholds()) -> Path:
    from dad_edge.artifacts.checkpoint import save_model

    save_model(path, random_model(cfg, seed, std), md.build_metadata(cfg, thresholds=thresholds))
    return path


def generated_image(rng: np.random.Generator, anomalous: bool, shape=(48, 40)) -> np.ndarray:
    """A gray texture (uint8 (H, W, 1)); anomalous ones carry a dark blotch."""
    img = rng.normal(128, 20, shape).clip(0, 255)
    if anomalous:
        y, x = rng.integers(5, shape[0] - 15), rng.integers(5, shape[1] - 15)
        img[y:y + 10, x:x + 10] = 20
    return img.astype(np.uint8)[:, :, None]


def sample_images(tmp: Path, n_good: int = 8, n_bad: int = 8) -> List[Tuple[Path, int]]:
    """(path, label) of real magnetic-tile test images where the shared data is there, else generated ones."""
    if (MAGNETIC_TILE / "test" / "good").is_dir():
        good = sorted((MAGNETIC_TILE / "test" / "good").glob("*.jpg"))[:n_good]
        bad = sorted((MAGNETIC_TILE / "test" / "crack").glob("*.jpg"))[:n_bad // 2]
        bad += sorted((MAGNETIC_TILE / "test" / "blowhole").glob("*.jpg"))[:n_bad - len(bad)]
        return [(p, 0) for p in good] + [(p, 1) for p in bad]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n_good + n_bad):
        label = int(i >= n_good)
        path = tmp / f"img{i:02d}.png"
        write_image(path, generated_image(rng, bool(label)))
        out.append((path, label))
    return out


def write_category(root: Path, n_train: int = 4, n_good: int = 6, n_bad: int = 6) -> Path:
    """A small MVTec-layout category: train/good, test/good, test/spot + ground_truth/spot masks."""
    rng = np.random.default_rng(1)
    for i in range(n_train):
        write_image(root / "train" / "good" / f"{i:03d}.png", generated_image(rng, False))
    for i in range(n_good):
        write_image(root / "test" / "good" / f"{i:03d}.png", generated_image(rng, False))
    for i in range(n_bad):
        img = generated_image(rng, True)
        write_image(root / "test" / "spot" / f"{i:03d}.png", img)
        write_image(root / "ground_truth" / "spot" / f"{i:03d}_mask.png", np.where(img == 20, 255, 0).astype(np.uint8))
    return root


def engine_meta(**tensorrt):
    """Metadata of a tiny engine as `dad-edge export --format engine` writes it (fp16, Orin)."""
    section = {"version": "10.3.0.26", "compute_capability": "8.7", "gpu_name": "Orin", "precision": "fp16",
               "source": "model.onnx", **tensorrt}
    export = {"opset": 17, "input": {"name": "image", "dtype": "float32", "layout": "NCHW", "range": [0, 255]},
              "outputs": ["anomaly_map", "score"], "batch": "dynamic", "precision": "fp16"}
    return md.build_metadata(preset("tiny"), kind="tensorrt", tensorrt=section, export=export)
