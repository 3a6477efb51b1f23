"""The Python API, as short as the CLI: `dad_edge.train`, `evaluate`, `export`, `benchmark`.

    import dad_edge
    model = dad_edge.train("my_part", "runs/my_part", minutes=30)
    metrics = dad_edge.evaluate(model, "my_part")
    onnx = dad_edge.export(model, format="onnx")
    report = dad_edge.benchmark(onnx, batch=[1, 8])

Each calls the code its command calls: train() TrainOptions + training.train.train, evaluate()
training.evaluate.evaluate_model, export() the `dad-edge export` command itself (options as its
flags), benchmark() runtime.benchmark.benchmark_model. Errors are the DadEdgeError subclasses the
CLI prints as one line. Nothing heavy is imported until a function is called: `import dad_edge`
stays free of torch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from dad_edge.errors import ConfigError

PathLike = Union[str, Path]

# The file `dad-edge export` writes when --out is not given (cli/deploy.py), per format.
_EXPORT_SUFFIX = {"onnx": ".onnx", "engine": ".plan", "openvino": ".xml"}


def train(data: PathLike, out: PathLike, preset: str = "compact", minutes: Optional[float] = None,
          epochs: Optional[int] = None, method: Optional[str] = None, **options: Any) -> Path:
    """Train a model on the good images of `data` (a category folder); returns its model.safetensors.

        model = dad_edge.train("my_part", "runs/my_part", minutes=30)
        model = dad_edge.train(data, "runs/t", preset="tiny", epochs=2, image_size=32, device="cpu")
        model = dad_edge.train("my_part", "runs/dad", minutes=30, method="diffusionad")

    As `dad-edge train`: `method` is --method (diffusionad, seg or recon; None: the default for the
    device and preset, training/recipe.py default_method); `options` are TrainOptions fields
    (dad_edge/training/options.py): image_size, channels, batch_size, lr_unet, lr_seg, seed, device,
    resume, progress, ... At least one of `minutes` / `epochs` says when to stop. Needs the `train`
    extra (torch)."""
    from dad_edge.training.options import TrainOptions
    from dad_edge.training.train import train as run_training

    known = {f.name for f in dataclasses.fields(TrainOptions)} - {"data", "out", "preset", "minutes", "epochs"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"train(): unknown option(s) {', '.join(unknown)}; the options are {', '.join(sorted(known))}")
    if method is not None:
        options["model_overrides"] = {**options.get("model_overrides", {}), "method": method}
    opts = TrainOptions(data=str(data), out=str(out), preset=preset, minutes=minutes, epochs=epochs, **options)
    return Path(run_training(opts.validate()))


def evaluate(model: PathLike, data: Optional[PathLike] = None, *, good: Optional[PathLike] = None,
             bad: Optional[PathLike] = None, out: Optional[PathLike] = None, backend: Optional[str] = None,
             device: Optional[str] = None, batch: int = 16, progress: bool = False) -> Dict[str, Any]:
    """Metrics of `model` (any model file) on the test split of `data`; the dict `dad-edge eval --json` prints.

        m = dad_edge.evaluate("runs/my_part/model.safetensors", "my_part")
        m["image_auroc"], m["pixel_auroc"], m["au_pro"], m["per_type"]["crack"]["image_auroc"]
        m = dad_edge.evaluate("model.onnx", good="shots/ok", bad="shots/reject")   # image-level only

    `out`: also write metrics.json, scores.csv, roc.png and overlays there."""
    from dad_edge.training.evaluate import evaluate_model

    pair = good is not None or bad is not None
    if (data is not None) == pair or (pair and (good is None or bad is None)):
        raise ConfigError("evaluate(): give data=DIR, or good=DIR and bad=DIR")
    if data is None:
        from dad_edge.data.good_bad import GoodBadFolders

        data = GoodBadFolders(good, bad)
    return evaluate_model(model, data, out_dir=out, backend=backend, device=device, batch_size=batch,
                          progress=progress)


def _flags(options: Dict[str, Any]) -> list:
    """Keyword arguments as command-line flags: lr_unet=1e-3 -> --lr-unet 1e-3, half=True -> --half."""
    argv = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def _run_command(argv: list) -> None:
    """Parse `argv` with the `dad-edge` parser and run the command; a usage error is a ConfigError."""
    from dad_edge.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit:
        message = err.getvalue().strip().splitlines()
        raise ConfigError(message[-1] if message else f"invalid arguments: {argv}") from None
    args.func(args)


def export(model: PathLike, format: str = "onnx", out: Optional[PathLike] = None, **options: Any) -> Path:
    """Export `model` as `dad-edge export` does; returns the file (or folder) written.

        onnx = dad_edge.export("runs/my_part/model.safetensors")                    # model.onnx beside it
        plan = dad_edge.export(onnx, format="engine", half=True)                    # on the target GPU
        dad_edge.export(onnx, format="engine", int8=True, calib="my_part/train/good", out="int8.plan")

    `options` are the command's flags as keywords (opset=17, fixed_batch=1, half=True, batch=8,
    workspace=4, ...; `dad-edge export --help`). Prints what it wrote, as the command does."""
    if out is None:
        if format not in _EXPORT_SUFFIX:
            raise ConfigError(f"export(format={format!r}): give out= (formats with a default file: "
                              f"{', '.join(_EXPORT_SUFFIX)})")
        out = Path(model).with_suffix(_EXPORT_SUFFIX[format])
    _run_command(["export", str(model), "--format", format, "--out", str(out), *_flags(options)])
    return Path(out)


def benchmark(model: PathLike, batch: Union[int, Sequence[int]] = 1, *, backend: Optional[str] = None,
              device: Optional[str] = None, frame_size: Optional[Sequence[int]] = None, seconds: float = 3.0,
              warmup: int = 3, **options: Any) -> Dict[str, Any]:
    """p50 / p99 latency and images/s of `model` on this machine, through the Detector: what
    `dad-edge benchmark` prints, as a dict (its --json).

        r = dad_edge.benchmark("engine.plan", batch=[1, 8, 32])
        for row in r["rows"]:
            print(row["batch"], row["p50_ms"], row["p99_ms"], row["images_per_s"])

    frame_size: (height, width) of the frames (default the model's input size). `options`: half,
    cuda_graphs (torch backend on CUDA), min_calls, seed."""
    from dad_edge.runtime.benchmark import benchmark_model

    return benchmark_model(model, batch, backend=backend, device=device,
                           frame_size=None if frame_size is None else tuple(frame_size), seconds=seconds,
                           warmup=warmup, **options)


__all__ = ["train", "evaluate", "export", "benchmark"]
