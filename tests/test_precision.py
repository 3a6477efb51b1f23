"""Mixed precision of training runs (dad_edge/training/precision.py): bfloat16 on CPUs with AMX."""
from pathlib import Path

import pytest
import torch

from dad_edge.artifacts.checkpoint import load_model, read_tensors
from dad_edge.training.precision import autocast_dtype, cpu_has_amx, describe
from dad_edge.training.train import TrainOptions, Trainer, train
from training_support import DIFFUSIONAD, good_only_demo

CPU = torch.device("cpu")
COMMON = dict(preset="tiny", batch_size=4, progress=False, device="cpu", epochs=1, model_overrides=DIFFUSIONAD)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return good_only_demo(tmp_path_factory)


def test_amx_probe_agrees_with_the_kernels_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo (not Linux): nothing to compare the probe with")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    assert cpu_has_amx() == ("amx_tile" in flags and "amx_bf16" in flags)


def test_autocast_dtype_on_the_cpu():
    assert autocast_dtype(CPU, amp=False) is None
    assert autocast_dtype(CPU, amp=True) == (torch.bfloat16 if cpu_has_amx() else None)
    assert [describe(d) for d in (None, torch.bfloat16, torch.float16)] == ["float32", "bfloat16", "float16"]


@pytest.mark.parametrize("amp", [True, False])
def test_the_training_forward_runs_in_the_chosen_precision(data, tmp_path, amp):
    trainer = Trainer(TrainOptions(data=str(data), out=str(tmp_path), amp=amp, **COMMON))
    seen = []
    # The first convolution of each network (the U-Net's own forward is called past its hooks).
    convs = [next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
             for net in (trainer.model.unet, trainer.model.segnet)]
    hooks = [c.register_forward_hook(lambda m, i, out: seen.append(out.dtype)) for c in convs]
    try:
        trainer._loss(next(trainer.train.epoch(0)), torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
    expected = autocast_dtype(CPU, amp) or torch.float32
    assert seen and set(seen) == {expected}


def test_checkpoint_records_the_precision_and_keeps_float32_weights(data, tmp_path):
    path = train(TrainOptions(data=str(data), out=str(tmp_path), **COMMON))
    _, meta = load_model(path)
    assert meta["training"]["precision"] == describe(autocast_dtype(CPU, True))
    tensors, _ = read_tensors(path)
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float32}
    no_amp = train(TrainOptions(data=str(data), out=str(tmp_path / "fp32"), amp=False, **COMMON))
    assert load_model(no_amp)[1]["training"]["precision"] == "float32"
