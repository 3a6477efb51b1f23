"""The deployment commands of `dad-edge`: export, calibrate, predict.

Registered by dad_edge/cli/__init__.py through add_commands(); each command takes the parsed arguments
and returns an exit code. Errors a user can fix are DadEdgeError (printed as one line).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict

from dad_edge.cli.args import (positive_int, add_batch_argument, add_data_arguments, add_runtime_arguments,
                               add_threshold_arguments, data_argument, runtime_kwargs, threshold_kwargs)
from dad_edge.errors import ConfigError




def _size_mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


# -- export -----------------------------------------------------------------------------

def add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX, or build a TensorRT engine (on the device)")
    p.add_argument("model", help="model.safetensors (onnx, engine) or model.onnx (engine)")
    p.add_argument("--format", required=True, choices=("onnx", "engine", "triton", "openvino"))
    p.add_argument("--out", help="output file (default: the model's name with .onnx / .plan); triton: the model "
                   "repository folder")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17: TensorRT 8.6 and 10 parse it)")
    p.add_argument("--fixed-batch", type=positive_int, metavar="N",
                   help="ONNX with a fixed batch of N instead of a dynamic one")
    g = p.add_argument_group("engine (--int8 --calib also for onnx: ONNX Runtime INT8 QDQ for CPUs)")
    g.add_argument("--half", action="store_true", help="fp16 kernels")
    g.add_argument("--int8", action="store_true", help="INT8 kernels, calibrated on --calib")
    g.add_argument("--calib", type=Path, help="folder of good images for INT8 calibration (300+ advised); onnx: "
                   "or a category folder (its train/good)")
    g.add_argument("--calib-images", "--calib-count", type=positive_int, default=1000,
                   help="use at most this many (default 1000)")
    g.add_argument("--workspace", type=float, default=4.0, help="TensorRT workspace limit in GB (default 4)")
    g.add_argument("--batch", type=positive_int, default=8, help="largest batch the engine accepts (default 8)")
    g.add_argument("--min-batch", type=positive_int, default=1)
    g.add_argument("--opt-batch", type=positive_int, default=1, help="batch the kernels are tuned for (default 1)")
    g.add_argument("--dla-core", type=int, help="run on this DLA core (Jetson), GPU fallback for the rest")
    g.add_argument("--timing-cache", type=Path, help="timing cache file: read if present, updated after the build")
    # Triton model repository (issue #16): export/triton_repository.py.
    t = p.add_argument_group("triton (a model repository from an .onnx or .plan)")
    t.add_argument("--name", default="dad_edge", help="model name in the repository (default dad_edge)")
    t.add_argument("--max-batch", type=positive_int, default=32, help="Triton's max_batch_size (default 32)")
    t.add_argument("--instances", type=positive_int, default=1, help="model instances (default 1)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from dad_edge.export.onnx_export import export_onnx

    model = Path(args.model)
    suffix = model.suffix.lower()
    t0 = time.perf_counter()
    if args.format == "triton":
        from dad_edge.export.triton_repository import write_triton_repository

        folder = write_triton_repository(model, Path(args.out or "model_repository"), name=args.name,
                                         max_batch=args.max_batch, instances=args.instances)
        print(f"wrote {folder}/config.pbtxt and {folder}/1/ in {time.perf_counter() - t0:.1f} s")
        return 0
    if args.format == "openvino":
        from dad_edge.export.openvino_export import export_openvino

        out = Path(args.out or model.with_suffix(".xml"))
        export_openvino(model, out, opset=args.opset)
        print(f"wrote {out} and {out.with_suffix('.bin').name} ({_size_mb(out.with_suffix('.bin'))}, OpenVINO IR) "
              f"in {time.perf_counter() - t0:.1f} s")
        return 0
    if args.format == "onnx" and (args.int8 or args.calib):
        from dad_edge.export.quantize import export_int8

        if not (args.int8 and args.calib):
            raise ConfigError("--int8 needs --calib DIR (a folder of good images, or a category folder), and --calib "
                              "is only used with --int8")
        out = Path(args.out or model.with_suffix(".int8.onnx"))
        meta = export_int8(model, out, args.calib, max_images=args.calib_images, opset=args.opset,
                           dynamic_batch=args.fixed_batch is None, batch=args.fixed_batch or 1)
        print(f"wrote {out} ({_size_mb(out)}, int8 QDQ, {meta['export']['calibration_images']} calibration "
              f"images) in {time.perf_counter() - t0:.1f} s")
        return 0
    if args.format == "onnx":
        if suffix != ".safetensors":
            raise ConfigError(f"{model}: --format onnx exports a checkpoint (.safetensors)")
        out = Path(args.out or model.with_suffix(".onnx"))
        export_onnx(model, out, opset=args.opset, dynamic_batch=args.fixed_batch is None,
                    batch=args.fixed_batch or 1)
        print(f"wrote {out} ({_size_mb(out)}, opset {args.opset}) in {time.perf_counter() - t0:.1f} s")
        return 0

    from dad_edge.runtime.backends.tensorrt_backend import import_tensorrt
    from dad_edge.export.tensorrt_build import EngineOptions, build_engine

    options = EngineOptions(half=args.half, int8=args.int8, calib=args.calib, calib_max_images=args.calib_images,
                            workspace_gb=args.workspace, min_batch=args.min_batch, opt_batch=args.opt_batch,
                            max_batch=args.batch, dla_core=args.dla_core, timing_cache=args.timing_cache).validate()
    if suffix not in (".safetensors", ".onnx"):
        raise ConfigError(f"{model}: --format engine builds from a checkpoint (.safetensors) or an ONNX file")
    out = Path(args.out or model.with_suffix(".plan"))
    import_tensorrt()  # fail before a long ONNX export on a machine without TensorRT
    onnx_path = model
    if suffix == ".safetensors":
        onnx_path = out.with_suffix(".onnx")
        export_onnx(model, onnx_path, opset=args.opset)
        print(f"wrote {onnx_path} ({_size_mb(onnx_path)})")
    meta = build_engine(onnx_path, out, options)
    trt = meta["tensorrt"]
    print(f"wrote {out} ({_size_mb(out)}, {trt['precision']}, TensorRT {trt['version']}, {trt['gpu_name']} "
          f"sm_{trt['compute_capability'].replace('.', '')}, batch {options.min_batch}-{options.max_batch}) "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


# -- calibrate ----------------------------------------------------------------------------

def add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="choose the image and pixel thresholds and store them in the model file")
    p.add_argument("model", help="model.safetensors, .onnx or .plan / .engine")
    add_data_arguments(p, "; F1-max when test/ has defects; or a folder of good images")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="with good images only: thresholds at this quantile of their scores")
    add_runtime_arguments(p, precision=False)
    add_batch_argument(p, 8, "images per inference call")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from dad_edge.export.calibrate import calibrate

    t0 = time.perf_counter()
    data = data_argument(args)
    t = calibrate(args.model, data, quantile=args.quantile, backend=args.backend, device=args.device,
                  batch_size=args.batch_size, progress=not args.quiet)
    if not isinstance(data, str):  # --good/--bad: no masks
        print("no masks (--good/--bad): the image threshold is the F1-max of the image scores; the pixel "
              f"threshold is the q={args.quantile} quantile of the good images' map maxima")
    print(f"{args.model}: image threshold {t.image:.6g}, pixel threshold {t.pixel:.6g} ({t.source}); "
          f"scores are also reported normalised, threshold = 0.5 [{time.perf_counter() - t0:.1f} s]")
    return 0


# -- predict --------------------------------------------------------------------------------

def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="score images with any model file; optionally save overlays")
    p.add_argument("model", help="model.safetensors, .onnx or .plan / .engine")
    p.add_argument("sources", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--save", type=Path, metavar="DIR", help="write overlays and results.jsonl here")
    p.add_argument("--save-maps", type=Path, metavar="DIR",
                   help="write each raw anomaly map (<stem>_map.tiff, float32: the values the thresholds "
                        "compare, lossless) and mask (<stem>_mask.png, 0/255) here")
    add_runtime_arguments(p)
    add_threshold_arguments(p)
    add_batch_argument(p, 8, "images per inference call")
    p.set_defaults(func=cmd_predict)


def _unique_name(stem: str, used: Dict[str, int]) -> str:
    """Overlay file names: the image's stem, numbered when two folders share one."""
    n = used.get(stem, 0)
    used[stem] = n + 1
    return f"{stem}.png" if n == 0 else f"{stem}_{n}.png"


def cmd_predict(args: argparse.Namespace) -> int:
    from dad_edge.artifacts.json_lines import JsonLinesWriter
    from dad_edge.runtime.detector import Detector
    from dad_edge.runtime.safe_paths import safe_filename

    det = Detector(args.model, batch_size=args.batch_size, **runtime_kwargs(args), **threshold_kwargs(args))
    print(f"{det}", flush=True)
    counts = {"ok": 0, "failed": 0, "anomalous": 0}
    totals = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    used: Dict[str, int] = {}
    jsonl = None
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        jsonl = JsonLinesWriter(args.save / "results.jsonl", mode="w")  # a flush per line: a kill cuts one at most
    try:
        with det:
            for r in det.stream(list(args.sources)):
                record = r.to_dict()
                if not r.ok:
                    counts["failed"] += 1
                    print(f"error: {r.error}", file=sys.stderr, flush=True)
                else:
                    counts["ok"] += 1
                    counts["anomalous"] += bool(r.label)
                    for k in totals:
                        totals[k] += r.speed[k]
                    verdict = {None: "uncalibrated", True: "ANOMALY", False: "good"}[r.label]
                    norm = "" if r.normalized_score is None else f" (normalised {r.normalized_score:.3f})"
                    print(f"{r.source}: score {r.score:.4f}{norm} {verdict}", flush=True)
                    name = _unique_name(safe_filename(Path(r.source).stem), used)  # never ../ or /abs
                    if args.save:
                        r.save(args.save / name)
                        record["overlay"] = name
                    if args.save_maps:
                        record["maps"] = [str(f) for f in r.save_maps(args.save_maps, Path(name).stem)]
                if jsonl:
                    jsonl.write(record)
    finally:
        if jsonl:
            jsonl.close()
    n = max(counts["ok"], 1)
    speed = ", ".join(f"{k} {v / n:.1f}" for k, v in totals.items())
    print(f"{counts['ok']} images scored ({counts['anomalous']} anomalous), {counts['failed']} failed; "
          f"ms per image: {speed}" + (f"; saved to {args.save}" if args.save else "")
          + (f"; maps in {args.save_maps}" if args.save_maps else ""))
    return 0 if counts["ok"] else 1


def add_commands(sub) -> None:
    """Register export, calibrate and predict on the `dad-edge` sub-command parser."""
    add_export(sub)
    add_calibrate(sub)
    add_predict(sub)
