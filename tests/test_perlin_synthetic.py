import numpy as np
import pytest

from dad_edge.errors import ConfigError, DataError
from dad_edge.data.imageio import read_image, write_image
from dad_edge.data.perlin import perlin_mask, perlin_noise
from dad_edge.data.synthetic import AnomalySynthesizer, otsu_foreground, procedural_texture, stripe_shuffle

S = 64


def _image(channels=3, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S]
    base = (yy * 2 + xx)[:, :, None] + rng.integers(0, 40, (S, S, channels))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_perlin_noise_vanishes_on_lattice_and_is_deterministic():
    n = perlin_noise((64, 48), (4, 3), np.random.default_rng(1))
    assert n.shape == (64, 48) and n.dtype == np.float32
    assert np.abs(n[::16, ::16]).max() < 1e-6  # gradient noise is 0 at lattice points
    assert np.abs(n).max() <= 1.5 and n.std() > 0.1
    np.testing.assert_array_equal(n, perlin_noise((64, 48), (4, 3), np.random.default_rng(1)))
    assert perlin_noise((50, 37), (32, 8), np.random.default_rng(0)).shape == (50, 37)  # not divisible


def test_perlin_noise_is_smooth():
    n = perlin_noise((128, 128), (4, 4), np.random.default_rng(2))
    assert np.abs(np.diff(n, axis=0)).max() < 0.15 and np.abs(np.diff(n, axis=1)).max() < 0.15


def test_perlin_mask_values_fraction_determinism():
    masks = [perlin_mask(S, np.random.default_rng(i)) for i in range(40)]
    for m in masks:
        assert m.shape == (S, S) and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0}
    fraction = np.mean([m.mean() for m in masks])
    assert 0.01 < fraction < 0.2
    assert sum(m.any() for m in masks) >= 30
    np.testing.assert_array_equal(masks[5], perlin_mask(S, np.random.default_rng(5)))
    assert not np.array_equal(masks[5], masks[6])
    with pytest.raises(ConfigError):
        perlin_mask(S, np.random.default_rng(0), min_scale=3, max_scale=3)


@pytest.mark.parametrize("channels", [1, 3])
def test_synthesizer_deterministic(channels):
    synth = AnomalySynthesizer(S, channels)
    img = _image(channels)
    for seed in range(6):
        a = synth(img, np.random.default_rng(seed))
        b = synth(img, np.random.default_rng(seed))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2] == b[2]
        assert a[0].shape == (S, S, channels) and a[0].dtype == np.float32
        assert a[1].shape == (S, S) and a[1].dtype == np.float32


def test_probabilities():
    img = _image()
    normal = AnomalySynthesizer(S, 3, anomaly_prob=0.0)
    aug, mask, anomalous = normal(img, np.random.default_rng(0))
    assert not anomalous and not mask.any()
    np.testing.assert_array_equal(aug, img)
    always = AnomalySynthesizer(S, 3, anomaly_prob=1.0)
    results = [always(img, np.random.default_rng(i)) for i in range(20)]
    assert sum(r[2] for r in results) >= 18  # only an empty Perlin mask after retries stays normal
    for aug, mask, anomalous in results:
        assert anomalous == bool(mask.any())
        assert set(np.unique(mask)) <= {0.0, 1.0}
        np.testing.assert_array_equal(aug[mask == 0], img[mask == 0])  # untouched outside M
        if anomalous:
            assert np.abs(aug.astype(int) - img)[mask == 1].max() > 0
    half = AnomalySynthesizer(S, 3, anomaly_prob=0.5)
    rate = np.mean([half(img, np.random.default_rng(i))[2] for i in range(200)])
    assert 0.35 < rate < 0.65


def test_blend_formula(monkeypatch):
    img = _image()
    synth = AnomalySynthesizer(S, 3, anomaly_prob=1.0)
    monkeypatch.setattr(synth, "_source", lambda image, rng: np.full_like(image, 250))
    aug, mask, anomalous = synth(img, np.random.default_rng(3))
    assert anomalous
    x = img.astype(np.float64)[mask == 1]
    # aug = (1-b) * 250 + b * x inside M: solve b by least squares, check it fits every pixel.
    d = x - 250
    b = float((d * (aug[mask == 1] - 250.0)).sum() / (d * d).sum())
    assert 0.2 <= b <= 0.8
    np.testing.assert_allclose(aug[mask == 1], (1 - b) * 250 + b * x, rtol=0, atol=1e-3)  # not rounded


def test_float_images_stay_exact_outside_the_anomaly():
    """Training images are float (as the Detector resizes them): nothing rounds them on the way."""
    img = _image().astype(np.float32) + 0.25
    synth = AnomalySynthesizer(S, 3, anomaly_prob=1.0)
    aug, mask, anomalous = synth(img, np.random.default_rng(1))
    assert anomalous and aug.dtype == np.float32
    np.testing.assert_array_equal(aug[mask == 0], img[mask == 0])
    normal, _, _ = AnomalySynthesizer(S, 3, anomaly_prob=0.0)(img, np.random.default_rng(1))
    np.testing.assert_array_equal(normal, img)


def test_texture_dir(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="notes.*no image"):
        AnomalySynthesizer(S, 3, texture_dir=tmp_path / "notes")
    with pytest.raises(DataError, match="absent"):
        AnomalySynthesizer(S, 3, texture_dir=tmp_path / "absent")
    tex = np.zeros((80, 100, 3), np.uint8)
    tex[..., 1] = 255  # pure green: visible in the blend whatever the augmentations
    write_image(tmp_path / "dtd" / "banded" / "t.jpg", tex)  # nested like DTD
    synth = AnomalySynthesizer(S, 3, texture_dir=tmp_path / "dtd", anomaly_prob=1.0, self_source_prob=0.0)
    a = synth(_image(), np.random.default_rng(1))
    b = synth(_image(), np.random.default_rng(1))
    assert a[2]
    np.testing.assert_array_equal(a[0], b[0])


def test_foreground_folder(tmp_path):
    fg = np.zeros((32, 32), np.uint8)
    fg[8:24, 8:24] = 255
    write_image(tmp_path / "fg" / "img7.png", fg)
    synth = AnomalySynthesizer(S, 3, foreground=tmp_path / "fg", anomaly_prob=1.0)
    ref = synth.foreground_for("img7")
    assert ref.shape == (S, S) and ref.dtype == bool and ref.sum() == 32 * 32
    hits = 0
    for i in range(10):
        _, mask, anomalous = synth(_image(), np.random.default_rng(i), stem="img7")
        assert not (mask.astype(bool) & ~ref).any()
        hits += anomalous
    assert hits >= 5
    with pytest.raises(DataError, match="other"):
        synth(_image(), np.random.default_rng(0), stem="other")
    with pytest.raises(DataError, match="not-here"):
        AnomalySynthesizer(S, 3, foreground=tmp_path / "not-here")


def test_otsu_foreground():
    img = np.full((S, S, 1), 40, np.uint8)
    img[16:48, 16:48] = 200  # object: a quarter of the image
    fg = otsu_foreground(img)
    assert fg[32, 32] and not fg[2, 2] and 0.2 < fg.mean() < 0.3
    dark_object = 240 - img
    assert (otsu_foreground(dark_object) == fg).all()  # polarity does not matter
    assert otsu_foreground(np.full((S, S, 3), 9, np.uint8)).all()  # uniform: everywhere
    synth = AnomalySynthesizer(S, 1, foreground="otsu", anomaly_prob=1.0)
    for i in range(8):
        _, mask, _ = synth(img, np.random.default_rng(i))
        assert not (mask.astype(bool) & ~fg).any()


def test_stripe_shuffle_and_textures():
    img = _image()
    for seed in range(10):
        out = stripe_shuffle(img, np.random.default_rng(seed))
        assert not np.array_equal(out, img)
        np.testing.assert_array_equal(np.sort(out, axis=None), np.sort(img, axis=None))  # a permutation
    for seed in range(12):
        for channels in (1, 3):
            t = procedural_texture(S, channels, np.random.default_rng(seed))
            assert t.shape == (S, S, channels) and t.dtype == np.uint8 and t.std() > 3


def test_bad_arguments():
    with pytest.raises(ConfigError):
        AnomalySynthesizer(S, 2)
    with pytest.raises(ConfigError):
        AnomalySynthesizer(S, 3, anomaly_prob=1.5)
    with pytest.raises(DataError, match="shape"):
        AnomalySynthesizer(S, 3)(_image(1), np.random.default_rng(0))


def test_preview(tmp_path):
    synth = AnomalySynthesizer(S, 3)
    images = np.stack([_image(3, s) for s in range(3)])
    paths = synth.preview(images, 4, tmp_path / "prev", seed=1)
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    sheet = read_image(paths[0])
    assert sheet.shape == (S, 2 * S, 3)
    assert set(np.unique(sheet[:, S:])) <= {0, 255}


def test_band_mask_is_one_side_of_a_line_across_the_image():
    from dad_edge.data.perlin import band_mask

    for seed in range(12):
        m = band_mask(S, np.random.default_rng(seed))
        assert m.shape == (S, S) and m.dtype == np.float32 and set(np.unique(m)) <= {0.0, 1.0}
        assert 0.03 < m.mean() < 0.6
        # Anomalous side touches one border over its whole length; the opposite border is clean.
        borders = [m[0], m[-1], m[:, 0], m[:, -1]]
        assert sum(b.all() for b in borders) == 1 and sum(not b.any() for b in borders) >= 1
    np.testing.assert_array_equal(band_mask(S, np.random.default_rng(3)), band_mask(S, np.random.default_rng(3)))
    with pytest.raises(ConfigError, match="min_fraction"):
        band_mask(S, np.random.default_rng(0), min_fraction=0.6, max_fraction=0.5)


def test_band_anomalies_keep_the_images_texture():
    img = _image(1)
    synth = AnomalySynthesizer(S, 1, anomaly_prob=1.0, band_prob=1.0)
    for seed in range(6):
        aug, mask, anomalous = synth(img, np.random.default_rng(seed))
        assert anomalous and mask.mean() > 0.03
        np.testing.assert_array_equal(aug[mask == 0], img[mask == 0])
        inside = mask == 1
        # A finish change, not foreign content: what is inside stays correlated with the image.
        assert np.corrcoef(aug[inside][:, 0], img[inside][:, 0])[0, 1] > 0.3 or aug[inside].std() < 5
    # band_prob 0 draws nothing extra: the same samples as a synthesizer without the option.
    a = AnomalySynthesizer(S, 1, anomaly_prob=1.0)(img, np.random.default_rng(9))
    b = AnomalySynthesizer(S, 1, anomaly_prob=1.0, band_prob=0.0)(img, np.random.default_rng(9))
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ConfigError, match="band_prob"):
        AnomalySynthesizer(S, 1, band_prob=1.5)


def test_bands_with_donors_are_another_images_surface():
    """With use_donors, a band holds (nearly all of) the same region of another normal image."""
    images = np.stack([_image(1, seed=i) for i in range(4)])
    synth = AnomalySynthesizer(S, 1, anomaly_prob=1.0, band_prob=1.0)
    synth.use_donors(images)
    donors_seen = set()
    for seed in range(8):
        aug, mask, anomalous = synth(images[0], np.random.default_rng(seed))
        assert anomalous and mask.mean() > 0.03
        np.testing.assert_array_equal(aug[mask == 0], images[0][mask == 0])
        inside = mask == 1
        corr = [np.corrcoef(aug[inside][:, 0], images[j][inside][:, 0])[0, 1] for j in range(4)]
        best = int(np.argmax(corr))
        assert best != 0 and corr[best] > 0.9, corr  # another image's pixels, blended 0-30 % with its own
        donors_seen.add(best)
    assert len(donors_seen) >= 2
    with pytest.raises(DataError, match="use_donors"):
        synth.use_donors(images[:1])
    with pytest.raises(DataError, match="use_donors"):
        synth.use_donors(np.zeros((3, S + 1, S + 1, 1), np.float32))


def _textured(seed, gain=1.0):
    """A ground-surface-like image: vertical streaks plus noise, contrast scaled by `gain`."""
    rng = np.random.default_rng(seed)
    streaks = rng.normal(0, 12, (1, S)) + rng.normal(0, 6, (S, S))
    return np.clip(110 + gain * streaks, 0, 255).astype(np.uint8)[:, :, None]


@pytest.mark.parametrize("channels", [1, 3])
def test_poisson_patch_labels_where_the_paste_changed_the_image(channels):
    from dad_edge.data.poisson_patch import CHANGE_THRESHOLD, poisson_patch
    labelled = 0
    for seed in range(12):
        img = np.repeat(_textured(seed), channels, axis=2)
        donor = np.repeat(_textured(100 + seed, gain=2.5), channels, axis=2)  # a rougher finish
        out = poisson_patch(img, donor, np.random.default_rng(seed))
        again = poisson_patch(img, donor, np.random.default_rng(seed))
        if out is None:
            assert again is None
            continue
        aug, mask = out
        np.testing.assert_array_equal(aug, again[0])  # deterministic for a seed
        assert aug.shape == img.shape and aug.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
        change = np.abs(aug - img).mean(axis=2)
        # One pasted rectangle: nothing changed outside its bounding box, the label inside it.
        ys, xs = np.nonzero(change)
        box = np.zeros_like(mask)
        box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
        assert (mask <= box).all()
        assert change[mask == 1].mean() > CHANGE_THRESHOLD > change[mask == 0].mean()
        labelled += 1
    assert labelled >= 8


def test_patch_anomalies_come_from_donors_and_change_nothing_when_off():
    images = np.stack([_textured(i, gain=1 + i) for i in range(4)])
    synth = AnomalySynthesizer(S, 1, anomaly_prob=1.0, patch_prob=1.0)
    # Without donors the option cannot act: the same Perlin samples as without it, same stream.
    for seed in range(3):
        a = AnomalySynthesizer(S, 1, anomaly_prob=1.0)(images[0], np.random.default_rng(seed))
        b = synth(images[0], np.random.default_rng(seed))
        np.testing.assert_array_equal(a[0], b[0])
    synth.use_donors(images)
    perlin = AnomalySynthesizer(S, 1, anomaly_prob=1.0)
    differ = 0
    for seed in range(8):
        aug, mask, anomalous = synth(images[0], np.random.default_rng(seed))
        assert anomalous and mask.any()
        ys, xs = np.nonzero(np.abs(aug - images[0]).max(axis=2))
        # A patch is one rectangle, well inside the border (a Perlin blob may reach the edges).
        assert ys.min() >= 1 and xs.min() >= 1 and ys.max() <= S - 2 and xs.max() <= S - 2
        differ += not np.array_equal(aug, perlin(images[0], np.random.default_rng(seed))[0])
    assert differ == 8
    with pytest.raises(ConfigError, match="patch_prob"):
        AnomalySynthesizer(S, 1, patch_prob=-0.1)
