"""Several detectors on one data set under one budget: what `dad-edge compare` runs.

    result = compare(CompareOptions(data="digits", out="runs/cmp", methods=["diffusionad", "iforest"],
                                    minutes=1.0))
    result.runs[0].image_auroc, result.runs[0].path     # one Run per (class, method)

The data is a one-class data set ("digits", CIFAR-10, MNIST, class folders: every class in turn is the
normal one, data/oneclass.py) or one industrial category (MVTec, VisA object, DAGM class). Each class
is written once as an MVTec-layout folder (--out/data/<class>/), so every method trains, fits and is
evaluated by the same code as `dad-edge train`, `baseline` and `eval` on exactly the same images.
Runs go to --out/runs/<class>/<method>/: the winner can be exported from there as it is.

What is measured per run (the figures the table shows):
- image AUROC (pixel AUROC and AU-PRO where the test set has masks): evaluate_model, the code of
  `dad-edge eval`, through the run's own Detector or BaselineScorer;
- train s: wall time of train() / fit_baseline(): reading, training or fitting, model selection and
  thresholds (a model's --minutes budget covers the training loop only);
- latency ms: median of `latency_images` single-image calls (batch 1) of the scorer's infer_batch,
  pre-processing + network + score, decoding excluded, after `WARMUP_CALLS` calls, on this machine;
- params: a model's parameters; a baseline's stored numbers (its fitted state and standardisation);
- GFLOPs: a model's per image (model/info.py); not counted for a baseline (None).
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from dad_edge.baselines.methods import METHODS as BASELINES
from dad_edge.data.imageio import read_image
from dad_edge.data.layouts import detect_layout, open_category
from dad_edge.errors import ConfigError, DataError

# The trained methods, as changes to the preset's ModelConfig (dad_edge/model/config.py preset()); each names its
# method, as a run without one takes the device's default (training/recipe.py default_method).
MODEL_METHODS: Dict[str, Dict[str, str]] = {
    "diffusionad": {"backbone": "unet", "method": "diffusionad"},  # norm-guided one-step denoising + segmentation net
    "recon": {"backbone": "unet", "method": "recon"},  # a plain DDPM's reconstruction error
    "dit": {"backbone": "dit", "method": "diffusionad"},  # DiffusionAD with a Diffusion Transformer eps-predictor
    "seg": {"method": "seg"},  # the segmentation net alone on the synthetic anomalies (no denoiser)
}
METHOD_NAMES: List[str] = list(MODEL_METHODS) + list(BASELINES)
WARMUP_CALLS = 3  # allocations and kernel selection happen in these, not in the timed calls


@dataclass
class CompareOptions:
    data: str  # "digits", a one-class data set folder or a category folder
    out: str
    methods: Sequence[str]
    classes: Optional[Sequence[str]] = None  # normal classes to run (one-class data); None: all
    minutes: Optional[float] = None  # training budget per method per class (models)
    epochs: Optional[int] = None  # or an epoch budget (tests); both: whichever ends first
    seed: int = 0
    max_test: Optional[int] = None  # at most this many anomalous test images per class (one-class data)
    preset: str = "compact"  # the trained methods' networks (dit: the preset's DiT variant)
    image_size: Optional[int] = None  # the models' input side; None: the training recipe's
    baseline_size: int = 32  # the baselines' downsampled side (`dad-edge baseline --size`)
    device: str = "auto"
    latency_images: int = 20


@dataclass
class Run:
    """One method trained and evaluated on one class."""

    normal_class: str
    method: str
    path: str  # the model or baseline file
    data: str  # the category folder it was trained and evaluated on
    image_auroc: float
    pixel_auroc: Optional[float]
    au_pro: Optional[float]
    train_s: float
    latency_ms: float
    params: int
    gflops: Optional[float]


@dataclass
class Comparison:
    options: CompareOptions
    classes: List[str]
    machine: str
    runs: List[Run] = field(default_factory=list)


@dataclass
class _Target:
    """A category folder to run every method on: one class of a one-class data set, or the category itself."""

    name: str  # the class, or the category's folder name
    folder: Path
    run_name: str  # its folder under --out/runs/


def parse_methods(text: str) -> List[str]:
    """'diffusionad,iforest' -> the names, each checked; ConfigError naming an unknown one and the choices."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ConfigError(f"--methods {text!r}: no method; give a comma list of {', '.join(METHOD_NAMES)}")
    for name in names:
        if name not in METHOD_NAMES:
            raise ConfigError(f"--methods: unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods {text!r} names a method twice; give each once")
    return names


def machine_name(device: str) -> str:
    """The machine the latencies were measured on, in words: the CPU and its cores, or the GPU."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return f"{torch.cuda.get_device_name(0)} (CUDA); baselines on {cpu_name()}"
    return f"{cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _folder_name(name: str) -> str:
    """A class name as a file-safe folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"


def _train_options(opts: CompareOptions, method: str, folder: Path, out: Path):
    from dad_edge.training.options import TrainOptions

    return TrainOptions(data=str(folder), out=str(out), preset=opts.preset, image_size=opts.image_size,
                        epochs=opts.epochs, minutes=opts.minutes, seed=opts.seed, device=opts.device,
                        progress=False, model_overrides=dict(MODEL_METHODS[method]))


def check_options(opts: CompareOptions) -> None:
    """Every option a user can get wrong, before any data is written or any training starts."""
    parse_methods(",".join(opts.methods))
    if opts.minutes is None and opts.epochs is None and any(m in MODEL_METHODS for m in opts.methods):
        raise ConfigError("set --minutes or --epochs: the training budget of each method on each class")
    if opts.max_test is not None and opts.max_test < 1:
        raise ConfigError(f"--max-test {opts.max_test} must be at least 1 (anomalous test images per class)")
    if opts.latency_images < 1:
        raise ConfigError(f"latency_images={opts.latency_images} must be at least 1")
    out = Path(opts.out)
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"--out {out}: {blocking} is a file; compare writes a folder (runs/, data/, compare.*): "
                          "give a folder")
    for method in opts.methods:  # preset, image size, budget, device: TrainOptions' own checks
        if method in MODEL_METHODS:
            _train_options(opts, method, Path(opts.data), out / "check").validate()


def _targets(opts: CompareOptions) -> List[_Target]:
    """The category folders to run on; a one-class data set's classes are written under --out/data/."""
    from dad_edge.data.oneclass_formats import DIGITS, open_oneclass_dataset

    if opts.data != DIGITS and not Path(opts.data).is_dir():
        raise DataError(f"--data {opts.data}: no such folder; give {DIGITS} (built in), a one-class data set "
                        "folder or a category folder")
    if detect_layout(opts.data):  # one industrial category
        for option, value in (("--classes", opts.classes), ("--max-test", opts.max_test)):
            if value is not None:
                raise ConfigError(f"{option} applies to one-class data sets; {opts.data} is one category "
                                  f"({detect_layout(opts.data)} layout), evaluated on its whole test split: "
                                  "leave it out")
        category = open_category(opts.data)
        category.train_samples()  # its reader's message if the category is incomplete
        labels = {s.label for s in category.test_samples()}
        if labels != {0, 1}:
            missing = "good" if 0 not in labels else "defective"
            raise DataError(f"{opts.data}: the test split has no {missing} images; AUROC needs both: test/good/ "
                            "and at least one test/<defect>/ folder")
        name = _folder_name(Path(opts.data).resolve().name)
        return [_Target(name, Path(opts.data), name)]
    dataset = open_oneclass_dataset(opts.data)
    names = list(dataset.class_names) if opts.classes is None else list(opts.classes)
    if not names:
        raise ConfigError(f"--classes: no class given; choose from {', '.join(dataset.class_names)}")
    for name in names:
        dataset.class_index(name)  # ConfigError naming the class and the data set's classes
    if len(set(names)) != len(names):
        raise ConfigError(f"--classes {','.join(names)} names a class twice; give each once")
    folders = [_folder_name(n) for n in names]
    if len(set(folders)) != len(folders):  # two names that differ only in characters a folder cannot hold
        folders = [f"{i:03d}_{f}" for i, f in enumerate(folders)]
    data_root = Path(opts.out) / "data"
    return [_Target(name, dataset.split(name, seed=opts.seed, max_test_anomalies=opts.max_test)
                    .write_category(data_root / folder), folder)
            for name, folder in zip(names, folders)]


def median_latency_ms(scorer, frames: Sequence) -> float:
    """Median milliseconds of scorer.infer_batch([frame]) over `frames`, after WARMUP_CALLS calls."""
    for frame in list(frames)[:WARMUP_CALLS]:
        scorer.infer_batch([frame], "RGB")
    times = []
    for frame in frames:
        t0 = time.perf_counter()
        scorer.infer_batch([frame], "RGB")
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _latency_frames(folder: Path, n: int) -> List:
    """n test images spread over the test split (good and defective), decoded once, as RGB."""
    samples = open_category(folder).test_samples()
    step = max(1, len(samples) // n)
    return [read_image(s.path) for s in samples[::step][:n]]


def _train_or_fit(opts: CompareOptions, method: str, target: _Target, out: Path) -> Path:
    if method in MODEL_METHODS:
        from dad_edge.training.train import train

        return train(_train_options(opts, method, target.folder, out))
    from dad_edge.baselines.fit import fit_baseline

    return fit_baseline(target.folder, method, out, image_size=opts.baseline_size, seed=opts.seed).path


def _cost(path: Path, method: str, opts: CompareOptions, frames: Sequence):
    """(latency ms, params, GFLOPs or None) of the file at `path`."""
    if method in MODEL_METHODS:
        from dad_edge.model.info import model_info
        from dad_edge.runtime.detector import Detector

        device = None if opts.device == "auto" else opts.device
        with Detector(path, device=device, color_order="RGB", batch_size=1) as det:
            info = model_info(det.config)
            return median_latency_ms(det, frames), int(info["params"]), float(info["gflops"])
    from dad_edge.baselines.scorer import BaselineScorer

    with BaselineScorer(path, batch_size=1) as scorer:
        b = scorer.baseline
        stored = b.features.mean.size + b.features.std.size + sum(a.size for a in b.detector.arrays().values())
        return median_latency_ms(scorer, frames), int(stored), None


def run_one(opts: CompareOptions, method: str, target: _Target) -> Run:
    """Train or fit `method` on `target`, evaluate it and measure its cost."""
    from dad_edge.training.evaluate import evaluate_model

    out = Path(opts.out) / "runs" / target.run_name / method
    t0 = time.perf_counter()
    path = _train_or_fit(opts, method, target, out)
    train_s = time.perf_counter() - t0
    device = None if opts.device == "auto" or method not in MODEL_METHODS else opts.device
    metrics = evaluate_model(path, target.folder, out_dir=out / "eval", device=device, overlays_per_type=2)
    latency, params, gflops = _cost(path, method, opts, _latency_frames(target.folder, opts.latency_images))
    return Run(target.name, method, str(path), str(target.folder), float(metrics["image_auroc"]),
               metrics.get("pixel_auroc"), metrics.get("au_pro"), train_s, latency, params, gflops)


def compare(opts: CompareOptions, log: Optional[Callable[[str], None]] = None) -> Comparison:
    """Every method on every class: train or fit, evaluate, time. `log` gets one line per run."""
    check_options(opts)
    targets = _targets(opts)
    result = Comparison(opts, [t.name for t in targets], machine_name(opts.device))
    total = len(targets) * len(opts.methods)
    for target in targets:
        for method in opts.methods:
            run = run_one(opts, method, target)
            result.runs.append(run)
            if log is not None:
                log(f"[{len(result.runs)}/{total}] class {target.name}, {method}: image AUROC {run.image_auroc:.3f}, "
                    f"train {run.train_s:.1f} s, {run.latency_ms:.2f} ms/img -> {run.path}")
    return result
