"""The default training recipe, the learning-rate schedule, the weight average and snapshots."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from dad_edge.artifacts.checkpoint import read_tensors
from dad_edge.data.demo import build_demo_dataset
from dad_edge.errors import CheckpointError, ConfigError
from dad_edge.training.ema import WeightAverage
from dad_edge.training.recipe import default_recipe, lr_factor, resolve_recipe
from dad_edge.training.train import Trainer, TrainOptions, train
from training_support import DIFFUSIONAD

TINY = dict(preset="tiny", batch_size=4, progress=False, device="cpu", model_overrides=DIFFUSIONAD)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=4,
                              n_test_per_defect=3)
    shutil.rmtree(root / "test")
    return root


# -- the recipe -------------------------------------------------------------------------------

def test_cpu_defaults_are_small_images_and_large_rates():
    r = default_recipe("compact", 256, "cpu")
    assert (r.image_size, r.lr_unet, r.lr_seg, r.lr_schedule) == (128, 1e-3, 1e-3, "constant")
    g = default_recipe("compact", 256, "cuda")
    assert g.image_size == 256 and not g.channels_last
    # The saved model is the weights' running average on a CPU (measured there); CUDA and the paper keep the last.
    assert r.ema_decay == 0.995 and g.ema_decay == 0.0 and default_recipe("paper", 256, "cpu").ema_decay == 0.0
    assert default_recipe("paper", 256, "cuda").lr_unet == 1e-4
    assert default_recipe("paper-dit", 256, "cuda").lr_unet == 1e-4  # the paper's width: its rates
    # The large scale learns to remove anomalies by default; the paper preset keeps the paper's objective.
    assert r.large_target == g.large_target == "clean"
    assert default_recipe("paper", 256, "cuda").large_target == "noise"


def test_the_data_sets_size_and_count_shape_the_recipe():
    # Never larger than the images: 128 px photos train at 128 on a GPU too; sizes stay multiples of 32.
    assert default_recipe("compact", 256, "cuda", data_side=128).image_size == 128
    assert default_recipe("compact", 256, "cuda", data_side=200).image_size == 192
    assert default_recipe("compact", 256, "cuda", data_side=40).image_size == 64
    assert default_recipe("compact", 256, "cpu", data_side=600).image_size == 128
    # A small set trains in batches of 8 (twice the steps), a large one in batches of 16.
    assert default_recipe("compact", 256, "cpu", num_images=60).batch_size == 8
    assert default_recipe("compact", 256, "cpu", num_images=686).batch_size == 16


def test_options_override_the_recipe_and_bad_values_are_named():
    r = resolve_recipe("compact", 256, "cpu", image_size=256, lr_seg=5e-4, lr_schedule="cosine")
    assert (r.image_size, r.lr_unet, r.lr_seg, r.lr_schedule) == (256, 1e-3, 5e-4, "cosine")
    with pytest.raises(ConfigError, match="lr_schedule='step'"):
        resolve_recipe("compact", 256, "cpu", lr_schedule="step")
    with pytest.raises(ConfigError, match="ema_decay=0.2"):
        resolve_recipe("compact", 256, "cpu", ema_decay=0.2)
    with pytest.raises(ConfigError, match="large_target='image'"):
        resolve_recipe("compact", 256, "cpu", large_target="image")
    assert default_recipe("compact", 256, "cpu").large_target in ("noise", "clean")
    with pytest.raises(ConfigError, match="'transformer'"):  # a bad backbone, before any data is read
        TrainOptions(data="no/such/folder", out="y", epochs=1, model_overrides={"backbone": "transformer"}).validate()
    with pytest.raises(ConfigError, match="batch_size=1"):
        TrainOptions(data="x", out="y", epochs=1, batch_size=1).validate()


def test_lr_factor_warms_up_then_decays_to_zero():
    assert lr_factor(0.0, "cosine", 0.1) == pytest.approx(1e-3)
    assert lr_factor(0.05, "cosine", 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, "cosine", 0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, "cosine", 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0.9, "constant", 0.1) == 1.0
    values = [lr_factor(p / 100, "cosine", 0.02) for p in range(2, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone after the warm-up


def test_the_recipe_is_recorded_and_the_cpu_run_uses_its_image_size(data, tmp_path):
    path = train(TrainOptions(data=str(data), out=str(tmp_path), epochs=1, **TINY))
    _, meta = read_tensors(path)
    recipe = meta["training"]["recipe"]
    assert recipe["lr_unet"] == 1e-3 and recipe["lr_schedule"] == "constant" and recipe["batch_size"] == 4
    assert recipe["ema_decay"] == 0.995 and meta["training"]["weights"] == "average"  # the CPU default
    assert meta["model"]["image_size"] == 32  # tiny's own size is under the CPU cap
    assert meta["training"]["steps"] == 3  # 11 training images in batches of 4 (one held out)


def test_the_schedule_reaches_the_optimizer(data, tmp_path):
    tr = Trainer(TrainOptions(data=str(data), out=str(tmp_path), epochs=2, lr_unet=2e-3, lr_schedule="cosine",
                              **TINY))
    tr.run()
    total = 2 * len(tr.train)
    assert tr.steps == total
    # The last step ran at the cosine's value one step before the end of the budget.
    expected = 2e-3 * lr_factor((total - 1) / total, "cosine", tr.recipe.warmup_fraction)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert expected < 2e-3 * 0.5


def test_clean_large_target_trains_the_large_scale_to_remove_the_anomalies(data, tmp_path):
    """With large_target="clean" the large-scale noise term is measured against the noise that
    denoises each anomalous sample into its clean image; with "noise" those samples are left out."""
    from dad_edge.model.losses import clean_noise_target

    terms = {}
    for target in ("noise", "clean"):
        tr = Trainer(TrainOptions(data=str(data), out=str(tmp_path / target), epochs=1, large_target=target, **TINY))
        assert tr.recipe.large_target == target
        batch = next(b for b in tr.train.epoch(0) if not b.normal.all())
        torch.manual_seed(0)
        with torch.no_grad():
            terms[target] = tr._loss(batch, torch.Generator().manual_seed(5))
            # The same noise and timesteps again, to compute the expected term by hand.
            gen = torch.Generator().manual_seed(5)
            t_s, t_l = tr._timesteps(batch.image.shape[0], gen)
            n_s, n_l = torch.randn(batch.image.shape, generator=gen), torch.randn(batch.image.shape, generator=gen)
            rec = tr.model.reconstruct(batch.image, t_s, t_l, n_s, n_l)
        small = ((rec.eps_small - n_s) ** 2).flatten(1).mean(1)[batch.normal].mean()
        if target == "clean":
            goal = clean_noise_target(n_l, batch.image, batch.clean, tr.model.alphas_cumprod[t_l])
            large = ((rec.eps_large - goal) ** 2).mean()
        else:
            large = ((rec.eps_large - n_l) ** 2).flatten(1).mean(1)[batch.normal].mean()
        assert float(terms[target].noise) == pytest.approx(float(small + large), rel=1e-5)
    assert float(terms["clean"].noise) != pytest.approx(float(terms["noise"].noise), rel=1e-3)


# -- weight average ---------------------------------------------------------------------------

def test_weight_average_follows_the_weights_and_restores_them():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    avg = WeightAverage(model, decay=0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    avg.update(model)  # first decay is min(0.9, 1/10) = 0.1: 90 % of the way
    assert torch.allclose(avg.state()["0.weight"], start + 0.9)
    own = model[0].weight.detach().clone()
    with avg.applied(model):
        assert torch.allclose(model[0].weight, start + 0.9)
    assert torch.equal(model[0].weight, own)


class _Interrupted(Exception):
    pass


class _StopsAfterFirstEpoch(Trainer):
    def end_epoch(self, train_loss, images_per_s):
        super().end_epoch(train_loss, images_per_s)
        raise _Interrupted  # as a kill after the epoch's state was written


def test_interrupted_cosine_run_with_average_resumes_to_the_same_weights(data, tmp_path):
    opts = dict(data=str(data), epochs=2, ema_decay=0.9, lr_schedule="cosine", **TINY)
    train(TrainOptions(out=str(tmp_path / "whole"), **opts))
    with pytest.raises(_Interrupted):
        _StopsAfterFirstEpoch(TrainOptions(out=str(tmp_path / "cut"), **opts)).run()
    train(TrainOptions(out=str(tmp_path / "cut"), resume=True, **opts))
    for name in ("train_state.safetensors", "model.safetensors"):
        a, ma = read_tensors(tmp_path / "whole" / name)
        b, mb = read_tensors(tmp_path / "cut" / name)
        assert a.keys() == b.keys()
        assert [k for k in a if not torch.equal(a[k], b[k])] == []
        if name == "train_state.safetensors":
            assert any(k.startswith("ema.") for k in a)
    assert ma["training"]["weights"] == "average"


def test_resume_without_the_average_it_was_trained_with_is_refused(data, tmp_path):
    train(TrainOptions(data=str(data), out=str(tmp_path), epochs=1, ema_decay=0.0, **TINY))
    with pytest.raises(CheckpointError, match="weight average"):
        train(TrainOptions(data=str(data), out=str(tmp_path), epochs=2, resume=True, ema_decay=0.9, **TINY))


# -- snapshots --------------------------------------------------------------------------------

def test_snapshots_are_written_during_training_and_load(data, tmp_path):
    tiny_minutes = 1e-6  # due after every step
    train(TrainOptions(data=str(data), out=str(tmp_path), epochs=1, snapshot_minutes=tiny_minutes,
                       ema_decay=0.9, **TINY))
    snaps = sorted((tmp_path / "snapshots").glob("*.safetensors"))
    plain = [p for p in snaps if not p.stem.endswith("_ema")]
    averaged = [p for p in snaps if p.stem.endswith("_ema")]
    assert len(plain) >= 3 and len(averaged) == len(plain)  # one at least per step (3 steps)
    _, meta = read_tensors(plain[0])
    _, meta_avg = read_tensors(averaged[0])
    assert meta["training"]["weights"] == "last" and meta_avg["training"]["weights"] == "average"
    assert meta["training"]["snapshot_minutes"] > 0 and math.isfinite(meta["thresholds"]["image"])
    with pytest.raises(ConfigError, match="snapshot_minutes"):
        TrainOptions(data=str(data), out=str(tmp_path), epochs=1, snapshot_minutes=0).validate()
