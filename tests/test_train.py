import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dad_edge.artifacts.checkpoint import load_model, read_tensors
from dad_edge.data.mvtec import MVTecCategory, load_images
from dad_edge.errors import CheckpointError, ConfigError
from dad_edge.data.imageio import read_image
from dad_edge.training.batches import to_model_range
from dad_edge.training.synthesis import preview
from dad_edge.training.train import TrainOptions, Trainer, train
from training_support import DIFFUSIONAD, good_only_demo

# CPU: bit-exact resume is a CPU promise (cuDNN and mixed precision need not be deterministic).
# A constant rate without warm-up: these tests stop a run early by giving it a smaller epoch budget,
# which would also change a budget-relative schedule (tests/test_recipe.py covers that schedule).
# No weight average (the CPU recipe's default): the saved model is then the state of its epoch.
COMMON = dict(preset="tiny", batch_size=4, progress=False, device="cpu", lr_schedule="constant", warmup_fraction=0.0,
              ema_decay=0.0, model_overrides=DIFFUSIONAD)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return good_only_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def run2(data, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch run."""
    out = tmp_path_factory.mktemp("run2")
    path = train(TrainOptions(data=str(data), out=str(out), epochs=2, **COMMON))
    assert path == out / "model.safetensors"
    return out


def _model_tensors(path: Path, prefix: str = ""):
    tensors, meta = read_tensors(path)
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, meta


def test_train_writes_model_and_state(run2):
    assert sorted(p.name for p in run2.iterdir()) == ["model.safetensors", "train_state.safetensors"]  # no temp files
    model, meta = load_model(run2 / "model.safetensors")
    assert model.cfg.image_size == 32 and model.cfg.channels == 1  # gray demo photos detected
    state, smeta = _model_tensors(run2 / "train_state.safetensors", "model.")
    assert set(state) == set(model.state_dict())
    assert smeta["train_state"]["epoch"] == 2 and len(smeta["train_state"]["history"]) == 2
    assert any(k.startswith("optim.") for k in read_tensors(run2 / "train_state.safetensors")[0])


def test_training_changed_the_weights(run2):
    from dad_edge.model.diffusion_ad import DiffusionAD

    model, _ = load_model(run2 / "model.safetensors")
    torch.manual_seed(0)  # the training seed: the initial weights
    init = DiffusionAD(model.cfg).state_dict()
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, init[k])]
    assert any(k.startswith("unet.") for k in changed) and any(k.startswith("segnet.") for k in changed)
    assert torch.equal(model.state_dict()["noise"], init["noise"])  # the fixed noise is not trained


def test_metadata_thresholds_and_training_record(run2, data):
    model, meta = load_model(run2 / "model.safetensors")
    th = meta["thresholds"]
    for key in ("image", "pixel"):
        assert isinstance(th[key], float) and 0 <= th[key] <= 1
    assert "held-out" in th["source"]
    tr = meta["training"]
    assert tr["epochs"] == 2 and tr["selected_epoch"] in (1, 2)
    assert tr["train_images"] == 11 and tr["val_images"] == 1
    assert Path(tr["data"]) == data.resolve()
    # Selection on held-out good images, never on the test set: the only mention of
    # "test" is the statement that it is not used.
    selection = tr["selection"].lower()
    assert "held-out" in selection
    assert "test" not in selection.replace("never the test set", "")
    assert "auroc" not in selection
    assert tr["options"]["preset"] == "tiny" and tr["options"]["epochs"] == 2
    assert "resume" not in tr["options"]
    # Thresholds are the scores of the held-out images (one here; q=0.99 of one value is it).
    _, val = MVTecCategory(data).train_val_split(0.1, 0)
    assert len(val) == 1
    x = to_model_range(load_images(val, 32, 1))
    with torch.no_grad():
        out = model(x)
    assert th["image"] == pytest.approx(float(out.score[0]), abs=1e-6)
    assert th["pixel"] == pytest.approx(float(out.anomaly_map.max()), abs=1e-6)


def test_selected_model_is_the_state_of_its_epoch(run2):
    model, meta = _model_tensors(run2 / "model.safetensors")
    state, _ = _model_tensors(run2 / "train_state.safetensors", "model.")
    if meta["training"]["selected_epoch"] == 2:
        assert all(torch.equal(model[k], state[k]) for k in model)
    else:
        assert not all(torch.equal(model[k], state[k]) for k in model)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(run2, data, tmp_path):
    out = tmp_path / "resumed"
    train(TrainOptions(data=str(data), out=str(out), epochs=1, **COMMON))
    _, meta1 = read_tensors(out / "train_state.safetensors")
    assert meta1["train_state"]["epoch"] == 1
    train(TrainOptions(data=str(data), out=str(out), epochs=2, resume=True, **COMMON))
    for name, prefix in (("train_state.safetensors", ""), ("model.safetensors", "")):
        a, ma = _model_tensors(run2 / name, prefix)
        b, mb = _model_tensors(out / name, prefix)
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert different == [], f"{name}: resumed run differs from the uninterrupted one in {different[:5]}"
        assert ma["thresholds"]["image"] == mb["thresholds"]["image"]
        assert ma["training"]["selected_epoch"] == mb["training"]["selected_epoch"]
    _, ms = read_tensors(out / "train_state.safetensors")
    assert ms["train_state"]["epoch"] == 2 and len(ms["train_state"]["history"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "train_state.safetensors"]
    # A finished run resumed with the same stop does nothing.
    before = (out / "train_state.safetensors").read_bytes()
    train(TrainOptions(data=str(data), out=str(out), epochs=2, resume=True, **COMMON))
    assert (out / "train_state.safetensors").read_bytes() == before


def test_resume_keeps_the_recipe_and_input_gain_of_the_interrupted_run(data, tmp_path):
    """Options left unset on --resume come from the run's own record, not from today's defaults or
    --input-gain auto (which would turn the gain off on these evenly lit images and refuse the state)."""
    out = tmp_path / "kept"
    first = dict(COMMON, lr_schedule="cosine", lr_unet=5e-4, warmup_fraction=0.1)
    train(TrainOptions(data=str(data), out=str(out), epochs=1, input_gain=0.4, **first))
    unset = {k: v for k, v in COMMON.items() if k not in ("lr_schedule", "warmup_fraction")}
    train(TrainOptions(data=str(data), out=str(out), epochs=2, resume=True, **unset))
    _, meta = read_tensors(out / "train_state.safetensors")
    recipe = meta["training"]["recipe"]
    assert meta["train_state"]["epoch"] == 2
    assert (recipe["lr_schedule"], recipe["lr_unet"], recipe["warmup_fraction"]) == ("cosine", 5e-4, 0.1)
    assert meta["model"]["input_gain"] == 0.4
    # An option given on --resume still wins.
    train(TrainOptions(data=str(data), out=str(out), epochs=3, resume=True, **dict(unset, lr_unet=2e-4)))
    _, meta = read_tensors(out / "train_state.safetensors")
    assert meta["training"]["recipe"]["lr_unet"] == 2e-4 and meta["training"]["recipe"]["lr_schedule"] == "cosine"


def test_resume_with_another_preset_is_a_config_error(run2, data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run2, out)
    opts = TrainOptions(data=str(data), out=str(out), epochs=3, resume=True,
                        **{**COMMON, "preset": "compact"}, image_size=32)
    with pytest.raises(ConfigError, match="different model config"):
        Trainer(opts).run()
    opts = TrainOptions(data=str(data), out=str(out), epochs=3, resume=True,
                        **{**COMMON, "model_overrides": {**DIFFUSIONAD, "noise_seed": 3}})
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(opts).run()
    # A field that one config leaves out when off (to_dict) is named too, not a KeyError.
    opts = TrainOptions(data=str(data), out=str(out), epochs=3, resume=True, **COMMON, input_gain=0.4)
    with pytest.raises(ConfigError, match="input_gain differ"):
        Trainer(opts).run()


def test_resume_without_state_is_an_error(data, tmp_path):
    opts = TrainOptions(data=str(data), out=str(tmp_path / "empty"), epochs=1, resume=True, **COMMON)
    with pytest.raises(CheckpointError, match="train_state.safetensors"):
        Trainer(opts).run()


def test_minutes_budget_stops_training(data, tmp_path):
    out = tmp_path / "budget"
    train(TrainOptions(data=str(data), out=str(out), minutes=1e-6, **COMMON))
    _, meta = read_tensors(out / "train_state.safetensors")
    assert meta["train_state"]["epoch"] == 1  # stopped after the first batch of epoch 1
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("changes, message", [
    (dict(epochs=None, minutes=None), "--epochs or --minutes"),
    (dict(epochs=0), "epochs=0"),
    (dict(minutes=0.0), "minutes=0"),
    (dict(batch_size=1), "batch_size=1"),
    (dict(val_fraction=0.0), "val_fraction=0"),
    (dict(val_fraction=1.0), "val_fraction=1"),
    (dict(lr_unet=0.0), "lr_unet"),
    (dict(select="best_test"), "select"),
    (dict(device="tpu"), "device"),
    (dict(threshold_quantile=0.3), "threshold_quantile"),
])
def test_train_options_validation(changes, message):
    opts = TrainOptions(**{**dict(data="d", out="o", epochs=1), **changes})
    with pytest.raises(ConfigError, match=message):
        opts.validate()


def test_valid_options_pass():
    opts = TrainOptions(data="d", out="o", minutes=0.5)
    assert opts.validate() is opts


def test_unknown_preset_and_bad_override_are_config_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="'huge'"):
        Trainer(TrainOptions(data=str(data), out=str(tmp_path), epochs=1, preset="huge"))
    with pytest.raises(ConfigError, match="top_k"):
        Trainer(TrainOptions(data=str(data), out=str(tmp_path), epochs=1, preset="tiny",
                             model_overrides={"top_k": 0}))


def test_preview_writes_n_pngs(data, tmp_path):
    out = tmp_path / "pv"
    paths = preview(TrainOptions(data=str(data), out=str(out), epochs=1, **COMMON), 5)
    assert len(paths) == 5
    files = sorted((out / "preview").iterdir())
    assert [p.name for p in files] == sorted(p.name for p in paths)
    assert all(p.suffix == ".png" for p in files)
    for p in files:
        img = read_image(p)
        assert img.shape[:2] == (32, 64)  # sample beside its mask
        mask = img[:, 32:]
        assert set(np.unique(mask)) <= {0, 255} and mask.max() == 255  # every preview is anomalous
    assert not (out / "model.safetensors").exists()  # preview does not train


def test_preview_shows_the_views_training_draws_with_augment(data, tmp_path):
    """With --augment, preview sample i is image i through the view training's first epoch gives it."""
    from dad_edge.data.augment import parse_augment
    from dad_edge.data.layouts import open_category
    from dad_edge.data.mvtec import load_images
    from dad_edge.training.batches import sample_view

    # Perlin anomalies only: a thin line's anti-aliased rim also changes a little outside its label
    # (tests/test_line_anomaly.py), and this test compares everything outside the label with the view.
    opts = TrainOptions(data=str(data), out=str(tmp_path / "pv"), epochs=1, augment="hflip,vflip,rot90",
                        line_prob=0.0, **COMMON)
    paths = preview(opts, 6)
    samples, _ = open_category(opts.data).train_val_split(opts.val_fraction, opts.seed)
    originals = load_images(samples[:6], 32, 3)
    views = [sample_view(parse_augment(opts.augment), [opts.seed, 0, i]) for i in range(6)]
    assert sum(not v.identity for v in views) >= 3  # the test means something only if views are drawn
    for i, (path, view) in enumerate(zip(paths, views)):
        assert path.name == f"synthetic_{i:03d}_{view.name}.png"
        img = read_image(path)
        shown, normal = img[:, :32, 0], img[:, 32:, 0] == 0
        expected = view.apply(originals[i])[..., 0]
        assert normal.any() and np.array_equal(shown[normal], expected[normal])  # outside the anomaly: the view
        if not view.identity:  # and not the image as it was
            assert not np.array_equal(shown[normal], originals[i][..., 0][normal])


def test_synthetic_batches_are_a_function_of_seed_and_epoch(data):
    from dad_edge.data.synthetic import AnomalySynthesizer
    from dad_edge.training.train import SyntheticBatches

    samples, _ = MVTecCategory(data).train_val_split(0.1, 0)
    imgs = load_images(samples, 32, 1)
    stems = [s.path.stem for s in samples]

    def batches(seed, epoch, shuffle=True):
        sb = SyntheticBatches(imgs, stems, AnomalySynthesizer(32, 1), 4, seed, shuffle=shuffle)
        return sb, list(sb.epoch(epoch))

    sb, e0 = batches(0, 0)
    assert len(sb) == 3 and [len(b[0]) for b in e0] == [4, 4, 3]  # 11 images
    _, again = batches(0, 0)
    for a, b in zip(e0, again):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    x, m, n, clean = e0[0]
    assert x.shape == clean.shape == (4, 1, 32, 32) and m.shape == (4, 1, 32, 32) and n.dtype == torch.bool
    assert x.min() >= -1 and x.max() <= 1
    assert all(float(m[i].sum()) == 0 for i in range(4) if n[i])  # normal samples have empty masks
    # `clean` is the normal image each sample was made from: equal to it outside the mask, and
    # equal to the whole sample when the sample is normal.
    batches_flat = [b for b in e0]
    for b in batches_flat:
        outside = (b.mask == 0).expand_as(b.image)
        assert torch.equal(b.image[outside], b.clean[outside])
        assert all(torch.equal(b.image[i], b.clean[i]) for i in range(len(b.normal)) if b.normal[i])
        assert any(not torch.equal(b.image[i], b.clean[i]) for i in range(len(b.normal)) if not b.normal[i])
    # Another epoch (or seed): other order and other synthetic anomalies.
    _, e1 = batches(0, 1)
    _, s1 = batches(1, 0)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(e0, e1))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(e0, s1))
    # The augmentation of one image changes with the epoch, not only the order.
    _, f0 = batches(0, 0, shuffle=False)
    _, f1 = batches(0, 1, shuffle=False)
    assert not torch.equal(torch.cat([b[0] for b in f0]), torch.cat([b[0] for b in f1]))
    # A last batch of one is dropped (BatchNorm cannot train on it).
    sb9 = SyntheticBatches(imgs[:9], stems[:9], AnomalySynthesizer(32, 1), 4, 0, shuffle=True)
    assert len(sb9) == 2 and sum(len(b[0]) for b in sb9.epoch(0)) == 8


def test_threaded_synthetic_batches_equal_serial_ones(data):
    """workers > 0 (the GPU default) must give exactly the batches of workers=0, in order,
    also when a consumer stops early (the minutes budget breaks out mid-epoch)."""
    from dad_edge.data.synthetic import AnomalySynthesizer
    from dad_edge.training.train import SyntheticBatches, resolve_workers

    samples, _ = MVTecCategory(data).train_val_split(0.1, 0)
    imgs = load_images(samples, 32, 1)
    stems = [s.path.stem for s in samples]
    serial = list(SyntheticBatches(imgs, stems, AnomalySynthesizer(32, 1), 4, 3, True, workers=0).epoch(2))
    threaded_batches = SyntheticBatches(imgs, stems, AnomalySynthesizer(32, 1), 4, 3, True, workers=3)
    threaded = list(threaded_batches.epoch(2))
    assert len(serial) == len(threaded) == 3
    for a, b in zip(serial, threaded):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    first = next(iter(threaded_batches.epoch(2)))  # abandoned generator: the pool shuts down cleanly
    assert torch.equal(first[0], serial[0][0])
    assert resolve_workers(None, torch.device("cpu")) == 0 and resolve_workers(2, torch.device("cpu")) == 2
    assert resolve_workers(None, torch.device("cuda")) >= 1


def test_negative_workers_is_a_config_error(tmp_path):
    from dad_edge.training.train import TrainOptions

    with pytest.raises(ConfigError, match="workers=-1"):
        TrainOptions(data=str(tmp_path), out=str(tmp_path / "o"), epochs=1, workers=-1).validate()


def test_training_images_are_the_detectors_preprocessing(data):
    """Training feeds the model the numbers deployment does: the same float resize, no rounding."""
    from dad_edge.data.imageio import read_image
    from dad_edge.runtime import ops

    samples = MVTecCategory(data).train_samples()[:3]
    x_train = to_model_range(load_images(samples, 24, 1)).numpy()
    x_deployed = ops.preprocess([read_image(s.path) for s in samples], 24, 1, "RGB")
    np.testing.assert_allclose(x_train, x_deployed, rtol=0, atol=1e-6)


def test_resume_records_the_input_gain_as_the_interrupted_run_chose_it(data, tmp_path):
    """An `--input-gain auto` run that turned the gain on is still recorded as "auto" after a resume, not as
    the number resume carried over."""
    import cv2

    varied = tmp_path / "varied"
    shutil.copytree(data, varied)
    for i, path in enumerate(sorted((varied / "train" / "good").iterdir())):  # two lighting conditions
        image = cv2.imread(str(path))
        cv2.imwrite(str(path), (image * (0.5 if i % 2 else 1.0)).astype(np.uint8))
    out = tmp_path / "auto"
    train(TrainOptions(data=str(varied), out=str(out), epochs=1, **COMMON))
    _, meta = read_tensors(out / "train_state.safetensors")
    chosen = meta["training"]["input_gain"]
    assert chosen["setting"] == "auto" and chosen["input_gain"] > 0
    train(TrainOptions(data=str(varied), out=str(out), epochs=2, resume=True, **COMMON))
    _, meta = read_tensors(out / "train_state.safetensors")  # written after every epoch
    assert meta["train_state"]["epoch"] == 2 and meta["training"]["input_gain"] == chosen
