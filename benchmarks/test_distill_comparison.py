"""Teacher vs distilled students vs compact from scratch, side by side (issue #7).

On one MVTec-layout category (default ../shared/data/magnetic_tile), four models:
  teacher               trained with `dad-edge train` (or given with --teacher)
  two-pass student      `dad-edge distill` from the teacher, student minutes of budget
  single-pass student   `dad-edge distill --single-pass`, the same budget
  compact from scratch  `dad-edge train` with the student's preset and size, the same budget
and for each: image AUROC, pixel AUROC, AU-PRO (official MVTec, FPR to 0.3), parameters,
GFLOPs per image (model_info) and the latency per image of its ONNX export on ONNX
Runtime's CPU provider (batch 1, after warm-up; p50 and p90). The aim: students within
1 point of image AUROC of their teacher at >= 10x fewer FLOPs, and better than scratch.

    python -m pytest benchmarks/test_distill_comparison.py -s          # SHORT: a few minutes, proves the path
    python -m pytest benchmarks/test_distill_comparison.py -s --full   # FULL: GPU budget if CUDA, else CPU budget
    python benchmarks/test_distill_comparison.py --budget cpu --teacher runs/tile128/model.safetensors \\
        --out runs/distill_comparison --reuse                          # as a script, any budget, own teacher

The budgets are the BUDGETS below and are printed beside the figures. Without a GPU the
paper preset does not train in any useful time, so the CPU budget uses the largest
preset that does (compact at 128x128) as the teacher and compact students at 64x64:
the FLOP reduction then comes from the resolution and the single pass, and is reported
as measured. Results go to OUT/comparison.json and OUT/comparison.md.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "magnetic_tile"


@dataclass(frozen=True)
class Budget:
    name: str
    teacher_preset: str
    teacher_size: int
    teacher_minutes: float  # when the teacher is trained here
    student_preset: str
    student_size: int
    student_minutes: float  # each student's distillation, and compact from scratch
    batch_size: int
    lr_unet: float
    lr_seg: float
    teacher_lr_unet: float
    teacher_lr_seg: float
    device: str = "auto"
    max_epochs: int = 100000  # the minutes are the budget; this only bounds tiny data sets


BUDGETS: Dict[str, Budget] = {
    # Proves the whole path in a few minutes on a busy 2-core CPU; the figures mean nothing.
    "short": Budget("short", "compact", 64, 0.5, "compact", 32, 0.5, 8, 1e-3, 1e-3, 1e-3, 1e-3, "cpu", 3),
    # The largest preset that trains on a 2-core CPU in about an hour as teacher.
    "cpu": Budget("cpu", "compact", 128, 60.0, "compact", 64, 20.0, 8, 1e-3, 1e-3, 1e-3, 1e-3, "cpu"),
    # The setting: the paper's networks as teacher, compact students at full size.
    "gpu": Budget("gpu", "paper", 256, 240.0, "compact", 256, 60.0, 16, 1e-3, 1e-3, 1e-4, 1e-5, "cuda"),
    # What fits one 10-minute call on a lent GPU (the device tool): the paper's networks as teacher
    # for 3 minutes at 128x128, students and scratch at 128x128 for 0.8 minutes each.
    "gpu-lease": Budget("gpu-lease", "paper", 128, 3.0, "compact", 128, 0.8, 32, 1e-3, 1e-3, 1e-4, 1e-4, "cuda"),
}


def onnx_latency(model, out_dir: Path, threads: int, runs: int = 50, max_seconds: float = 30.0) -> Dict[str, float]:
    """Export `model` (eval) to ONNX and time batch-1 inference on ONNX Runtime's CPU provider."""
    import onnxruntime as ort
    import torch

    cfg = model.cfg
    path = out_dir / "model.onnx"
    x = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size)
    model = model.to("cpu").eval()
    # The network as the deployed ONNX file holds it (legacy exporter, opset 17: see export/onnx_export.py).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter notice and the schedule constants
        torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["anomaly_map", "score"],
                          dynamo=False, opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"image": np.random.default_rng(0).uniform(-1, 1, x.shape).astype(np.float32)}
    for _ in range(3):
        session.run(None, feed)
    times, start = [], time.perf_counter()
    while len(times) < runs and (len(times) < 3 or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return {"latency_ms_p50": 1e3 * float(np.percentile(times, 50)),
            "latency_ms_p90": 1e3 * float(np.percentile(times, 90)), "latency_runs": len(times),
            "ort_threads": opts.intra_op_num_threads}


def measure(name: str, path: Path, data: Path, device: str, threads: int,
            latency: bool = True) -> Dict[str, object]:
    from dad_edge.artifacts.checkpoint import load_model
    from dad_edge.training.evaluate import evaluate_model
    from dad_edge.model.info import model_info

    metrics = evaluate_model(path, data, backend="torch", device=None if device == "auto" else device)
    size = metrics["image_size"]
    model, meta = load_model(path)
    info = model_info(model.cfg)
    training = meta.get("training", {})
    timing = latency_of(model, threads) if latency else {"latency_ms_p50": None, "latency_ms_p90": None}
    return {
        "model": name, "path": str(path), "image_size": size, "denoiser": model.cfg.denoiser,
        "config": model.cfg.to_dict(),
        "image_auroc": metrics["image_auroc"], "pixel_auroc": metrics["pixel_auroc"], "au_pro": metrics["au_pro"],
        "params_m": info["params"] / 1e6, "gflops": info["gflops"], "unet_passes": info["unet_passes"],
        "train_minutes": training.get("train_seconds", 0) / 60, "epochs": training.get("epochs"), **timing,
    }


def latency_of(model, threads: int) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return onnx_latency(model, Path(tmp), threads)


def add_latency(result: Dict[str, object], threads: int) -> Dict[str, object]:
    """Fill in the ONNX Runtime CPU latency of each row on this machine, from the row's model config.

    Latency does not depend on the weights, so a comparison trained on a GPU machine (whose
    models stay there) is timed on the CPU that matters (an edge box, this one) with random weights.
    """
    import torch

    from dad_edge.model.config import ModelConfig
    from dad_edge.model.diffusion_ad import DiffusionAD

    torch.manual_seed(0)
    for row in result["rows"]:
        row.update(latency_of(DiffusionAD(ModelConfig.from_dict(row["config"])), threads))
    result["latency_machine"] = f"{os.cpu_count()} CPU cores, {threads} ONNX Runtime threads (random weights)"
    return result


def run_comparison(budget: Budget, data: Path, out: Path, teacher: Optional[Path] = None,
                   reuse: bool = False, progress: bool = True, threads: Optional[int] = None,
                   latency: bool = True, report: Optional[Path] = None, seed: int = 0) -> Dict[str, object]:
    """Train / distil what is missing, measure all four, write comparison.json and .md.

    threads: of torch and ONNX Runtime (default: every core). On a CPU shared with other
    jobs use 1: torch's thread pool oversubscribed by another process runs 10-40x slower.
    """
    import torch

    from dad_edge.training.distill import DistillOptions, distill
    from dad_edge.training.train import TrainOptions, train

    threads = threads or int(os.environ.get("DAD_EDGE_BENCH_THREADS", 0)) or os.cpu_count() or 1
    torch.set_num_threads(threads)

    out.mkdir(parents=True, exist_ok=True)
    b = budget
    common = dict(data=str(data), batch_size=b.batch_size, device=b.device, epochs=b.max_epochs, progress=progress,
                  seed=seed)

    def done(folder: str) -> Optional[Path]:
        p = out / folder / "model.safetensors"
        return p if reuse and p.is_file() else None

    if teacher is None:
        teacher = done("teacher") or train(TrainOptions(
            out=str(out / "teacher"), preset=b.teacher_preset, image_size=b.teacher_size, minutes=b.teacher_minutes,
            lr_unet=b.teacher_lr_unet, lr_seg=b.teacher_lr_seg, **common))
    runs = {"teacher": Path(teacher)}
    for folder, single in (("student_two_pass", False), ("student_single_pass", True)):
        runs[folder] = done(folder) or distill(DistillOptions(
            teacher=str(teacher), out=str(out / folder), preset=b.student_preset, image_size=b.student_size,
            single_pass=single, minutes=b.student_minutes, lr_unet=b.lr_unet, lr_seg=b.lr_seg, **common))
    runs["compact_scratch"] = done("compact_scratch") or train(TrainOptions(
        out=str(out / "compact_scratch"), preset=b.student_preset, image_size=b.student_size,
        minutes=b.student_minutes, lr_unet=b.lr_unet, lr_seg=b.lr_seg, **common))

    machine = (f"{os.cpu_count()} CPU cores ({threads} threads used), torch {torch.__version__}, "
               f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
    result = {"budget": asdict(b), "data": str(data), "teacher": str(teacher), "rows": [], "machine": machine,
              "seed": seed}
    for name, path in runs.items():  # written after each row: a cut-off run keeps what it measured
        result["rows"].append(measure(name, path, data, b.device, threads, latency=latency))
        for folder in {out, report or out}:
            write_result(result, folder)
    return result


def write_result(result: Dict[str, object], out: Path) -> None:
    rows = result["rows"]
    for r in rows:
        r["flops_reduction"] = rows[0]["gflops"] / r["gflops"]
        r["image_auroc_minus_teacher"] = (r["image_auroc"] - rows[0]["image_auroc"]
                                          if r["image_auroc"] is not None and rows[0]["image_auroc"] is not None
                                          else None)
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    (out / "comparison.md").write_text(markdown(result))


def _latency(row) -> str:
    return "-" if row["latency_ms_p50"] is None else f"{row['latency_ms_p50']:.2f} / {row['latency_ms_p90']:.2f}"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def markdown(result: Dict[str, object]) -> str:
    b = result["budget"]
    lines = [
        f"Budget `{b['name']}` on {result['data']} ({result['machine']}): teacher {b['teacher_preset']} "
        f"{b['teacher_size']}x{b['teacher_size']} ({result['teacher']}); students and scratch "
        f"{b['student_preset']} {b['student_size']}x{b['student_size']}, {b['student_minutes']:g} min each, "
        f"batch {b['batch_size']}, lr {b['lr_unet']:g}/{b['lr_seg']:g}, device {b['device']}, "
        f"seed {result.get('seed', 0)}.",
        "Latency: ONNX Runtime CPU provider, batch 1, fp32, per image (p50 / p90)"
        + (f", timed on {result['latency_machine']}" if "latency_machine" in result else "")
        + ". AU-PRO: official MVTec, FPR <= 0.3.",
        "",
        "| model | size | U-Net passes | params (M) | GFLOPs | FLOPs vs teacher | image AUROC | d vs teacher "
        "| pixel AUROC | AU-PRO | ORT CPU ms p50 / p90 | selected at (min, epoch) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        d = r["image_auroc_minus_teacher"]
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['unet_passes']} | {r['params_m']:.2f} | {r['gflops']:.3f} | "
            f"{r['flops_reduction']:.1f}x | {_pct(r['image_auroc'])} | {'-' if d is None else f'{100 * d:+.2f}'} | "
            f"{_pct(r['pixel_auroc'])} | {_pct(r['au_pro'])} | {_latency(r)} | "
            f"{r['train_minutes']:.1f}, {r['epochs']} |")
    return "\n".join(lines) + "\n"


def _data_or_skip() -> Path:
    if not (DEFAULT_DATA / "train" / "good").is_dir():
        pytest.skip(f"{DEFAULT_DATA} not found (see ../shared/data/README.md)")
    return DEFAULT_DATA


def _check(result) -> None:
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"teacher", "student_two_pass", "student_single_pass", "compact_scratch"}
    assert rows["student_single_pass"]["unet_passes"] == 1 and rows["student_two_pass"]["unet_passes"] == 2
    assert rows["student_single_pass"]["gflops"] < rows["student_two_pass"]["gflops"]
    assert all(r["image_auroc"] is not None and r["latency_ms_p50"] > 0 for r in rows.values())


def test_distill_comparison_short(tmp_path):
    data = _data_or_skip()
    # One thread: this short proof runs beside other jobs (CI, a training run) on small machines.
    result = run_comparison(BUDGETS["short"], data, tmp_path, progress=False, threads=1)
    print("\n" + markdown(result))
    _check(result)
    # The GPU-machine path: no timing there, then timed here from the rows' configs.
    untimed = json.loads(json.dumps(result))
    for row in untimed["rows"]:
        row["latency_ms_p50"] = row["latency_ms_p90"] = None
    assert "| - |" in markdown(untimed)
    timed = add_latency(untimed, threads=1)
    _check(timed)
    assert "timed on" in markdown(timed)


@pytest.mark.full
def test_distill_comparison_full():
    import torch

    data = _data_or_skip()
    budget = BUDGETS["gpu" if torch.cuda.is_available() else "cpu"]
    teacher = os.environ.get("DAD_EDGE_BENCH_TEACHER")  # reuse a trained teacher (e.g. a GPU paper run)
    out = Path(os.environ.get("DAD_EDGE_BENCH_OUT", REPO / "runs" / "distill_comparison" / budget.name))
    result = run_comparison(budget, data, out, teacher=Path(teacher) if teacher else None, reuse=True)
    print("\n" + markdown(result))
    _check(result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="short")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "distill_comparison")
    p.add_argument("--teacher", type=Path, help="use this trained teacher instead of training one")
    p.add_argument("--reuse", action="store_true", help="keep models already in --out (resume a long comparison)")
    p.add_argument("--student-minutes", type=float, help="override the budget's minutes per student / scratch")
    p.add_argument("--student-size", type=int, help="override the budget's student image size")
    p.add_argument("--teacher-minutes", type=float, help="override the budget's teacher minutes")
    p.add_argument("--no-latency", action="store_true",
                   help="skip ONNX Runtime timing (e.g. on a GPU machine; add it later with --latency-of)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every run (repeat with others for spread)")
    p.add_argument("--report", type=Path, help="also write comparison.json/.md here (e.g. a folder that is synced)")
    p.add_argument("--latency-of", type=Path, metavar="COMPARISON_JSON",
                   help="only time the rows of this comparison.json on this machine's CPU and rewrite it")
    p.add_argument("--device", help="override the budget's device")
    p.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: every core; 1 on a busy CPU)")
    args = p.parse_args()
    if args.latency_of:
        result = add_latency(json.loads(args.latency_of.read_text()), args.threads or os.cpu_count() or 1)
        write_result(result, args.latency_of.parent)
        print(markdown(result))
        return
    budget = BUDGETS[args.budget]
    changes = {k: v for k, v in (("student_minutes", args.student_minutes), ("student_size", args.student_size),
                                 ("teacher_minutes", args.teacher_minutes), ("device", args.device))
               if v is not None}
    result = run_comparison(replace(budget, **changes), args.data, args.out, teacher=args.teacher, reuse=args.reuse,
                            threads=args.threads, latency=not args.no_latency, report=args.report,
                            seed=args.seed)
    print(markdown(result))


if __name__ == "__main__":
    main()
