"""Where a CPU training step's time goes, and what makes it faster (issue #12 part 2).

Builds the Trainer exactly as `dad-edge train --data DATA` does (the default recipe for this
device) and times, per optimizer step:

  synthesis    making one batch of synthetic anomalies (SyntheticBatches, in the training thread)
  unet fwd     the U-Net on the 2B batch (both noise scales), forward
  seg fwd      the segmentation net on cat(x, x0_ng), forward
  loss         the DiffusionAD loss terms
  backward     autograd through both networks
  optimizer    Adam (and the EMA update when the recipe has one)

Then the variants, side by side in one run in interleaved rounds of a few steps each (A, B, C, A, B, C, ...) so that
other load on the machine hits both alike: eager vs `torch.compile` of the model's training
forward, synthesis in the training thread (workers 0) vs one worker thread ahead of it, the
segmentation net on a 2x pooled input (--seg-stride 2), and float32 (--no-amp) beside the default
precision (bfloat16 autocast on a CPU with AMX: dad_edge/training/precision.py).

    python benchmarks/profile_train_step.py                       # magnetic tile, 12 steps each
    python benchmarks/profile_train_step.py --data DIR --steps 20 --no-compile

    python benchmarks/profile_train_step.py --method seg          # the segmentation net alone (no U-Net)

Numbers are wall-clock seconds on this machine; the ratios are what to read.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "magnetic_tile"


def build_trainer(data: str, workers: int, out: str, amp: bool = True, seg_stride=None, **model_overrides):
    from dad_edge.training.options import TrainOptions
    from dad_edge.training.train import Trainer

    return Trainer(TrainOptions(data=data, out=out, epochs=1, device="cpu", workers=workers, progress=False,
                                amp=amp, seg_stride=seg_stride, model_overrides=model_overrides))


class Stopwatch:
    """Seconds per named phase, summed over the steps timed."""

    def __init__(self):
        self.total = {}
        self._start = {}

    def start(self, name):
        self._start[name] = time.perf_counter()

    def stop(self, name):
        self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - self._start.pop(name)


def timed_method(obj, method: str, name: str, watch: Stopwatch):
    """Time calls of obj.method (an instance attribute shadows it), so the model's own code runs:
    the training path calls the U-Net's forward_embedded directly, which module hooks do not see."""
    inner = getattr(obj, method)

    def wrapper(*args, **kwargs):
        watch.start(name)
        try:
            return inner(*args, **kwargs)
        finally:
            watch.stop(name)

    setattr(obj, method, wrapper)
    return lambda: delattr(obj, method)


def training_forward(model) -> str:
    """The model method a training step calls: DiffusionAD's reconstruct, the seg method's seg_logits."""
    return "seg_logits" if model.cfg.method == "seg" else "reconstruct"


def one_step(trainer, batch, gen, forward=None):
    """The body of Trainer.run's loop (its _loss, backward and optimizer step), optionally with a
    compiled forward in place of the model's training forward (training_forward)."""
    model = trainer.model
    name = training_forward(model)
    if forward is not None:
        setattr(model, name, forward)  # an instance attribute shadows the method
    try:
        terms = trainer._loss(batch, gen)
    finally:
        if forward is not None:
            delattr(model, name)
    trainer.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    trainer.optimizer.step()
    if trainer.ema is not None:
        trainer.ema.update(model)
    return float(terms.total.detach())


def profile_phases(trainer, steps: int) -> dict:
    watch = Stopwatch()
    hooks = [timed_method(trainer.model.segnet, "forward", "seg fwd", watch)]
    if getattr(trainer.model, "unet", None) is not None:  # the seg method has no U-Net
        hooks.append(timed_method(trainer.model.unet, "forward_embedded", "unet fwd", watch))
    gen = torch.Generator().manual_seed(0)
    batches = trainer.train.epoch(0)
    wall = 0.0
    images = 0
    try:
        for i in range(steps + 1):  # the first step warms up allocators and oneDNN primitives
            t0 = time.perf_counter()
            watch.start("synthesis")
            batch = next(batches)
            watch.stop("synthesis")
            watch.start("forward+loss")
            terms = trainer._loss(batch, gen)
            watch.stop("forward+loss")
            watch.start("backward")
            trainer.optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            watch.stop("backward")
            watch.start("optimizer")
            trainer.optimizer.step()
            if trainer.ema is not None:
                trainer.ema.update(trainer.model)
            watch.stop("optimizer")
            if i == 0:
                watch.total.clear()
                continue
            wall += time.perf_counter() - t0
            images += batch.image.shape[0]
    finally:
        for undo in hooks:
            undo()
    t = watch.total
    unet = t.get("unet fwd", 0.0)
    phases = {
        "synthesis": t["synthesis"],
        **({"unet fwd": unet} if "unet fwd" in t else {}),
        "seg fwd": t["seg fwd"],
        "loss and the rest of forward": t["forward+loss"] - unet - t["seg fwd"],
        "backward": t["backward"],
        "optimizer": t["optimizer"],
    }
    return {"phases": phases, "wall": wall, "images": images, "steps": steps}


def interleaved(variants: dict, rounds: int, block: int = 4) -> dict:
    """images/s of each variant (trainer, forward or None), in rounds of `block` steps per variant.

    The first step of a block is not timed: a worker thread prepares the next batch ahead, and
    that batch was made while the other variants ran."""
    gens = {k: torch.Generator().manual_seed(0) for k in variants}
    iters = {k: tr.train.epoch(0) for k, (tr, _) in variants.items()}

    def step(k):
        tr, fwd = variants[k]
        t0 = time.perf_counter()
        try:
            batch = next(iters[k])
        except StopIteration:
            iters[k] = tr.train.epoch(1)
            batch = next(iters[k])
        one_step(tr, batch, gens[k], fwd)
        return batch.image.shape[0] / (time.perf_counter() - t0)

    for k in variants:  # warm-up (and, for a compiled forward, the compilation)
        t0 = time.perf_counter()
        step(k)
        step(k)
        print(f"  warm-up {k}: {time.perf_counter() - t0:.1f} s", flush=True)
    rates = {k: [] for k in variants}
    for _ in range(rounds):
        for k in variants:
            step(k)
            rates[k].extend(step(k) for _ in range(block - 1))
    return rates


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--method", choices=("diffusionad", "seg"), default="diffusionad",
                   help="seg: the segmentation net alone (dad-edge train --method seg)")
    p.add_argument("--out", default="/tmp/dad_edge_profile_train_step")
    args = p.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"--data {args.data}: not a folder (an MVTec-layout category)", file=sys.stderr)
        return 2
    from dad_edge.training import precision
    from dad_edge.training.compare import cpu_name

    method = {"method": args.method}
    base = build_trainer(args.data, 0, args.out, **method)
    r = base.recipe
    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"recipe: {r.image_size}x{r.image_size}, {base.cfg.channels} channel(s), batch {r.batch_size}, "
          f"channels_last {r.channels_last}, large target {r.large_target}, "
          f"precision {precision.describe(base.amp_dtype if base.use_amp else None)}", flush=True)

    prof = profile_phases(base, args.steps)
    total = sum(prof["phases"].values())
    print(f"\nPhases over {prof['steps']} steps ({prof['images']} images, {prof['images'] / prof['wall']:.2f} "
          f"train images/s):")
    print("| phase | ms per step | share |\n|---|---|---|")
    for name, sec in prof["phases"].items():
        print(f"| {name} | {1000 * sec / prof['steps']:.1f} | {100 * sec / total:.0f} % |")

    other_stride = 1 if r.seg_stride == 2 else 2
    variants = {"eager, workers 0": (base, None),
                "eager, workers 1": (build_trainer(args.data, 1, args.out, **method), None),
                f"eager, workers 0, seg stride {other_stride}":
                    (build_trainer(args.data, 0, args.out, seg_stride=other_stride, **method), None),
                "eager, workers 0, float32 (--no-amp)": (build_trainer(args.data, 0, args.out, amp=False, **method), None)}
    if not args.no_compile:
        compiled = build_trainer(args.data, 0, args.out, **method)
        forward = getattr(compiled.model, training_forward(compiled.model))
        variants["torch.compile, workers 0"] = (compiled, torch.compile(forward))
    rates = interleaved(variants, max(1, args.steps // 3))
    ref = statistics.median(rates["eager, workers 0"])
    print(f"\nSide by side, interleaved in rounds of 4 steps per variant (3 timed; median train images/s):")
    print("| variant | images/s (median) | min | max | x eager workers 0 |\n|---|---|---|---|---|")
    for k, v in rates.items():
        m = statistics.median(v)
        print(f"| {k} | {m:.2f} | {min(v):.2f} | {max(v):.2f} | {m / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
