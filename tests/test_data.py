import os
from pathlib import Path

import numpy as np
import pytest

from dad_edge.data.mvtec import (MVTecCategory, Sample, detect_channels, has_masks, load_images, load_masks)
from dad_edge.errors import ConfigError, DataError
from dad_edge.data.imageio import read_image, write_image
from dad_edge.data.preprocess import resize_bilinear


def _magnetic_tile() -> Path:
    base = os.environ.get("DAD_EDGE_DATA")
    root = Path(base) if base else Path(__file__).resolve().parents[2] / "shared" / "data"
    root = root / "magnetic_tile"
    if not (root / "train" / "good").is_dir():
        pytest.skip(f"magnetic_tile dataset not found at {root}")
    return root


def _img(value, size=10, colour=False):
    img = np.full((size, size, 3 if colour else 1), value, np.uint8)
    if colour:
        img[..., 0] = 250
    return img


def _category(root: Path, n_train=5) -> Path:
    for i in range(n_train):
        write_image(root / "train" / "good" / f"{i:02d}.png", _img(10 * i))
    write_image(root / "test" / "good" / "g0.png", _img(1))
    write_image(root / "test" / "good" / "g1.png", _img(2))
    write_image(root / "test" / "hole" / "a.png", _img(3))
    write_image(root / "test" / "hole" / "nested" / "b.jpg", _img(4))
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 3:7] = 255
    write_image(root / "ground_truth" / "hole" / "a_mask.png", mask)
    write_image(root / "ground_truth" / "hole" / "nested" / "b_mask.bmp", mask)
    write_image(root / "test" / "crack" / "c.png", _img(5))
    write_image(root / "ground_truth" / "crack" / "c.png", np.zeros((10, 10), np.uint8))  # <stem>.png, empty
    return root


def test_samples_layout(tmp_path):
    cat = MVTecCategory(_category(tmp_path / "cat"))
    assert len(cat.train_samples()) == 5 and all(s.label == 0 for s in cat.train_samples())
    assert cat.defect_types() == ["crack", "hole"]
    test = cat.test_samples()
    assert [(s.path.name, s.defect_type, s.label) for s in test] == [
        ("g0.png", "good", 0), ("g1.png", "good", 0), ("c.png", "crack", 1),
        ("a.png", "hole", 1), ("b.jpg", "hole", 1)]
    assert test[0].mask_path is None
    assert test[2].mask_path == tmp_path / "cat" / "ground_truth" / "crack" / "c.png"
    assert test[4].mask_path == tmp_path / "cat" / "ground_truth" / "hole" / "nested" / "b_mask.bmp"
    assert has_masks(test)

    masks = load_masks(test, 10)
    assert masks.shape == (5, 10, 10) and masks.dtype == bool
    assert not masks[:3].any()  # good images and the empty crack mask
    assert masks[3].sum() == 12 and masks[3, 2:5, 3:7].all()


def test_label_is_one_for_empty_mask():
    assert Sample(Path("x.png"), "uneven", Path("x_mask.png")).label == 1
    assert Sample(Path("x.png"), "good", None).label == 0


def test_defect_without_mask_names_image_and_expected_mask(tmp_path):
    root = _category(tmp_path / "cat")
    write_image(root / "test" / "hole" / "orphan.png", _img(9))
    with pytest.raises(DataError, match=r"orphan\.png.*ground_truth.hole.orphan_mask\.png"):
        MVTecCategory(root).test_samples()


def test_defect_folder_without_ground_truth(tmp_path):
    root = _category(tmp_path / "cat")
    write_image(root / "test" / "dent" / "d.png", _img(9))
    test = MVTecCategory(root).test_samples()
    dent = [s for s in test if s.defect_type == "dent"]
    assert len(dent) == 1 and dent[0].mask_path is None and dent[0].label == 1
    assert not has_masks(test)
    with pytest.raises(DataError, match="d.png"):
        load_masks(test, 10)


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="missing.*MVTec"):
        MVTecCategory(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        MVTecCategory(tmp_path / "file")
    _category(tmp_path / "ds" / "bottle")
    with pytest.raises(DataError, match="no train/good.*bottle"):  # the dataset folder, not a category
        MVTecCategory(tmp_path / "ds")
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty.train.good.*no image"):
        MVTecCategory(tmp_path / "empty")
    write_image(tmp_path / "notest" / "train" / "good" / "0.png", _img(0))
    with pytest.raises(DataError, match="no test/"):
        MVTecCategory(tmp_path / "notest").test_samples()
    root = _category(tmp_path / "emptydefect")
    (root / "test" / "scuff").mkdir()
    with pytest.raises(DataError, match="scuff.*no image"):
        MVTecCategory(root).test_samples()


def test_train_val_split(tmp_path):
    cat = MVTecCategory(_category(tmp_path / "cat", n_train=20))
    train, val = cat.train_val_split(0.2, seed=3)
    assert len(val) == 4 and len(train) == 16
    assert not set(s.path for s in train) & set(s.path for s in val)
    assert sorted(s.path for s in train + val) == [s.path for s in cat.train_samples()]
    assert cat.train_val_split(0.2, seed=3) == (train, val)
    assert cat.train_val_split(0.2, seed=4)[1] != val
    assert len(cat.train_val_split(0.01)[1]) == 1  # at least one
    assert cat.train_val_split(0.0) == (cat.train_samples(), [])
    with pytest.raises(ConfigError):
        cat.train_val_split(1.0)


def test_load_images_channels(tmp_path):
    colour = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_image(tmp_path / "c.png", colour)
    write_image(tmp_path / "g.png", _img(77, size=12))
    samples = [Sample(tmp_path / "c.png", "good", None), Sample(tmp_path / "g.png", "good", None)]
    rgb = load_images(samples, 16, 3)
    assert rgb.shape == (2, 16, 16, 3) and rgb.dtype == np.float32
    # Not rounded: the numbers the Detector's pre-processing gives the model.
    np.testing.assert_array_equal(rgb[0], resize_bilinear(colour.astype(np.float32), 16))
    assert not np.array_equal(rgb[0], np.rint(rgb[0]))
    assert (rgb[1] == 77).all()
    gray = load_images(samples, 8, 1)
    assert gray.shape == (2, 8, 8, 1)
    assert detect_channels(samples) == 3 and detect_channels(samples[1:]) == 1
    assert detect_channels(samples, max_check=0) == 1


def test_magnetic_tile_counts():
    cat = MVTecCategory(_magnetic_tile())
    assert len(cat.train_samples()) == 762
    test = cat.test_samples()
    assert sum(s.label == 0 for s in test) == 190 and sum(s.label == 1 for s in test) == 392
    assert cat.defect_types() == ["blowhole", "break", "crack", "fray", "uneven"]
    assert has_masks(test)
    train, val = cat.train_val_split(0.1)
    assert len(val) == 76 and len(train) == 686


def test_magnetic_tile_uneven_with_black_mask():
    cat = MVTecCategory(_magnetic_tile())
    uneven = [s for s in cat.test_samples() if s.defect_type == "uneven"]
    masks = load_masks(uneven, 32)
    empty = [s for s, m in zip(uneven, masks) if not m.any()]
    assert empty, "expected an 'uneven' image with an all-black mask"
    assert all(s.label == 1 for s in empty)
    assert any(m.any() for m in masks)


def test_magnetic_tile_loads_gray():
    cat = MVTecCategory(_magnetic_tile())
    samples = cat.train_samples()[:4]
    assert read_image(samples[0].path).shape[2] == 1
    assert detect_channels(samples) == 1
    assert load_images(samples, 64, 1).shape == (4, 64, 64, 1)
