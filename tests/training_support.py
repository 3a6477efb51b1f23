"""Helpers for the tests of training runs and of the benchmark scripts that read them."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Tuple

from dad_edge.data.demo import build_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
# DiffusionAD named: on a CPU a compact / tiny run with no method trains seg (training/recipe.py default_method),
# and the tests of the denoiser's pipeline (recon term, export, distillation, resume) must still train it.
DIFFUSIONAD = {"method": "diffusionad"}


def good_only_demo(tmp_path_factory) -> Path:
    """A 32 px demo category of 12 good training images with its test split taken away: training
    must never read it."""
    root = build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=4,
                              n_test_per_defect=3)
    shutil.rmtree(root / "test")
    shutil.rmtree(root / "ground_truth")
    return root


def benchmark_module(name: str):
    """benchmarks/<name>.py imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def model_with_exposure_slope(tmp_path: Path, **options) -> Tuple[Path, Path]:
    """(data, model path): a 1-epoch tiny run whose score has a brightness slope, as a strongly lit product's fit
    would keep one (the 10 held-out images of a test run keep none, so it is set by hand)."""
    import torch

    from dad_edge.artifacts import checkpoint as ckpt
    from dad_edge.training.train import TrainOptions, train

    data = build_demo_dataset(tmp_path / "data", size=32, n_train=10, n_test_good=4, n_test_per_defect=3)
    path = train(TrainOptions(data=str(data), out=str(tmp_path / "run"), preset="tiny", epochs=1, batch_size=4,
                              progress=False, device="cpu", exposure_correction=True, input_gain="off",
                              model_overrides=dict(DIFFUSIONAD), **options))
    model, meta = ckpt.load_model(path)
    with torch.no_grad():
        model.exposure_term.coef.copy_(torch.tensor([0.8, -0.2]))
    ckpt.save_model(path, model, meta)
    return data, path
