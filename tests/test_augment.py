"""Views of the normal training images (`--augment`): parsing, the views, and what batches make of them."""
import subprocess
import sys

import numpy as np
import pytest

from dad_edge.artifacts.checkpoint import load_model
from dad_edge.data.augment import View, draw_view, parse_augment
from dad_edge.data.demo import build_demo_dataset
from dad_edge.data.imageio import write_image
from dad_edge.data.synthetic import AnomalySynthesizer
from dad_edge.errors import ConfigError
from dad_edge.training.batches import SyntheticBatches, to_model_range
from dad_edge.training.train import TrainOptions, train

S = 32


def _images(n=6, channels=1, seed=0):
    # Distinct, asymmetric images: every view of one differs from it and from the other views.
    return np.random.default_rng(seed).integers(0, 256, size=(n, S, S, channels)).astype(np.uint8)


def _views(image):
    out = []
    for h in (False, True):
        for v in (False, True):
            for k in range(4):
                out.append(View(h, v, k).apply(image))
    return out


def test_parse_augment():
    assert parse_augment("none") == () and parse_augment("") == () and parse_augment(None) == ()
    assert parse_augment("vflip,hflip") == ("hflip", "vflip")  # one spelling whatever the order typed
    assert parse_augment(" HFLIP , rot90 ") == ("hflip", "rot90")
    assert parse_augment(["rot90"]) == ("rot90",)
    with pytest.raises(ConfigError, match="'flip'.*hflip, vflip, rot90"):
        parse_augment("hflip,flip")


def test_views_are_the_mirror_images_and_turns():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)  # not square: each axis is told apart
    np.testing.assert_array_equal(View(hflip=True).apply(a), a[:, ::-1])
    np.testing.assert_array_equal(View(vflip=True).apply(a), a[::-1])
    sq = np.arange(16).reshape(4, 4, 1)
    np.testing.assert_array_equal(View(quarter_turns=1).apply(sq)[:, :, 0], np.rot90(sq[:, :, 0]))
    assert View().identity and not View(quarter_turns=2).identity
    assert View(hflip=True).apply(a).flags["C_CONTIGUOUS"]


def test_draw_view_uses_only_the_allowed_views():
    rng = np.random.default_rng(0)
    drawn = [draw_view(("hflip",), rng) for _ in range(200)]
    assert all(not d.vflip and d.quarter_turns == 0 for d in drawn)
    assert 60 < sum(d.hflip for d in drawn) < 140
    turns = {draw_view(("rot90",), rng).quarter_turns for _ in range(100)}
    assert turns == {0, 1, 2, 3}
    assert draw_view((), rng).identity


def test_batches_without_views_are_unchanged_and_with_views_are_views_of_the_images():
    images = _images()
    synth = AnomalySynthesizer(S, 1, anomaly_prob=0.5)
    plain = SyntheticBatches(images, [f"i{i}" for i in range(6)], synth, 3, seed=4, shuffle=False)
    same = SyntheticBatches(images, [f"i{i}" for i in range(6)], synth, 3, seed=4, shuffle=False, augment=())
    viewed = SyntheticBatches(images, [f"i{i}" for i in range(6)], synth, 3, seed=4, shuffle=False,
                              augment=("hflip", "vflip", "rot90"))
    for epoch in range(3):
        for a, b, c in zip(plain.epoch(epoch), same.epoch(epoch), viewed.epoch(epoch)):
            assert all(np.array_equal(x, y) for x, y in zip(a, b))
    changed = 0
    for epoch in range(4):
        for b, batch in enumerate(viewed.epoch(epoch)):
            for j in range(len(batch.clean)):
                i = 3 * b + j
                clean = batch.clean[j].numpy()
                candidates = [to_model_range(v[None])[0].numpy() for v in _views(images[i])]
                assert any(np.array_equal(clean, c) for c in candidates)  # a view of its own image
                changed += not np.array_equal(clean, candidates[0])
                # Outside the anomaly the sample is its clean view exactly: mask and clean share a frame.
                outside = batch.mask[j, 0].numpy() == 0
                np.testing.assert_allclose(batch.image[j, 0].numpy()[outside], clean[0][outside], atol=1e-6)
                if bool(batch.normal[j]):
                    np.testing.assert_array_equal(batch.image[j].numpy(), clean)
    assert changed >= 12  # of 24 samples; 1/16 of draws is the identity


def test_batches_without_views_keep_the_original_clean_images():
    images = _images()
    synth = AnomalySynthesizer(S, 1, anomaly_prob=0.5)
    batches = SyntheticBatches(images, [f"i{i}" for i in range(6)], synth, 6, seed=1, shuffle=False)
    (batch,) = list(batches.epoch(0))
    np.testing.assert_array_equal(batch.clean.numpy(), to_model_range(images).numpy())


def test_a_foreground_mask_from_a_folder_is_turned_with_the_view(tmp_path):
    fg = np.zeros((S, S), np.uint8)
    fg[:, : S // 2] = 255  # left half only
    images = _images(4)
    for i in range(4):
        write_image(tmp_path / "fg" / f"i{i}.png", fg)
    synth = AnomalySynthesizer(S, 1, foreground=tmp_path / "fg", anomaly_prob=1.0)
    batches = SyntheticBatches(images, [f"i{i}" for i in range(4)], synth, 4, seed=0, shuffle=False,
                               augment=("hflip",))
    right = left = 0
    for epoch in range(6):
        (batch,) = list(batches.epoch(epoch))
        for j in range(4):
            mask = batch.mask[j, 0].numpy().astype(bool)
            mirrored = to_model_range(View(hflip=True).apply(images[j])[None])[0].numpy()
            flipped = np.array_equal(batch.clean[j].numpy(), mirrored)
            half = mask[:, : S // 2] if flipped else mask[:, S // 2:]
            assert not half.any()  # the anomaly stays on the part, in the view's frame
            right += flipped
            left += not flipped
    assert right >= 4 and left >= 4


def test_training_records_the_views_and_the_cli_refuses_unknown_ones(tmp_path):
    data = build_demo_dataset(tmp_path / "data", size=32, n_train=8, n_test_good=2, n_test_per_defect=2)
    out = tmp_path / "run"
    train(TrainOptions(data=str(data), out=str(out), epochs=1, preset="tiny", batch_size=4, progress=False,
                       device="cpu", augment="vflip,hflip"))
    _, meta = load_model(out / "model.safetensors")
    assert meta["training"]["options"]["augment"] == "hflip,vflip"
    with pytest.raises(ConfigError, match="augment"):
        TrainOptions(data=str(data), out=str(out), epochs=1, augment="mirror").validate()
    r = subprocess.run([sys.executable, "-m", "dad_edge", "train", "--data", str(data), "--out", str(tmp_path / "x"),
                        "--epochs", "1", "--augment", "mirror"], capture_output=True, text=True)
    assert r.returncode != 0 and "'mirror'" in r.stderr and "Traceback" not in r.stderr
