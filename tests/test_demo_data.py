import cv2
import numpy as np
import pytest

from dad_edge.data.mvtec import MVTecCategory, load_images, load_masks
from dad_edge.data.demo import (DEFECT_TYPES, DEMO_TEXTURES, TEST_ROWS, TRAIN_ROWS, add_defect,
                                build_demo_dataset, load_photo)
from dad_edge.errors import DataError
from dad_edge.data.imageio import read_image

pytest.importorskip("skimage")

SMALL = dict(size=64, n_train=4, n_test_good=3, n_test_per_defect=2)


def test_layout_and_counts(tmp_path):
    root = build_demo_dataset(tmp_path, "grass", **SMALL)
    assert root == tmp_path / "grass"
    cat = MVTecCategory(root)
    assert len(cat.train_samples()) == 4
    assert cat.defect_types() == sorted(DEFECT_TYPES)
    test = cat.test_samples()
    assert sum(s.label == 0 for s in test) == 3 and sum(s.label == 1 for s in test) == 6
    assert all(s.mask_path.name.endswith("_mask.png") for s in test if s.label)
    img = read_image(test[0].path)
    assert img.shape == (64, 64, 1)
    masks = load_masks(test, 64)
    assert all(m.sum() >= 8 for m in masks[3:])
    raw = read_image(test[-1].mask_path)
    assert set(np.unique(raw)) == {0, 255}


def test_deterministic_and_rebuildable(tmp_path):
    a = build_demo_dataset(tmp_path / "a", **SMALL)
    b = build_demo_dataset(tmp_path / "b", **SMALL)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    c = build_demo_dataset(tmp_path / "a", **{**SMALL, "n_train": 2}, seed=1)  # replaces its own folder
    assert len(list((c / "train" / "good").iterdir())) == 2
    other = build_demo_dataset(tmp_path / "c", **SMALL, seed=1)
    assert (other / "train" / "good" / "000.png").read_bytes() != (b / "train" / "good" / "000.png").read_bytes()


def test_refuses_foreign_folder_and_unknown_texture(tmp_path):
    (tmp_path / "brick").mkdir()
    (tmp_path / "brick" / "mine.txt").write_text("user data")
    with pytest.raises(DataError, match="brick"):
        build_demo_dataset(tmp_path, "brick", **SMALL)
    assert (tmp_path / "brick" / "mine.txt").exists()
    with pytest.raises(DataError, match="brick, grass, gravel"):
        build_demo_dataset(tmp_path, "marble", **SMALL)


def test_train_and_test_regions_are_disjoint():
    assert TRAIN_ROWS[1] <= TEST_ROWS[0]
    for texture in DEMO_TEXTURES:
        photo = load_photo(texture)
        assert photo.shape == (512, 512) and photo.dtype == np.uint8


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_defects_visible_and_masks_exact(kind):
    photo = load_photo("gravel")
    rng = np.random.default_rng(7)
    for i in range(4):
        clean = np.ascontiguousarray(photo[384:512, 128 * i:128 * (i + 1)])
        out, mask = add_defect(clean, kind, rng)
        assert mask.dtype == bool and mask.sum() >= 8
        diff = np.abs(out.astype(int) - clean)
        assert (diff[mask] >= 10).all()  # every labelled pixel changed
        assert diff[mask].mean() >= 40  # clearly visible
        # Nothing changed away from the drawn geometry (anti-aliasing touches one pixel ring).
        near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert (diff[~near] == 0).all()


def test_default_build_is_loadable(tmp_path):
    root = build_demo_dataset(tmp_path)  # the defaults of `dad-edge demo`
    cat = MVTecCategory(root)
    assert len(cat.train_samples()) == 60 and len(cat.test_samples()) == 20 + 3 * 12
    assert load_images(cat.train_samples()[:2], 128, 1).shape == (2, 128, 128, 1)
