"""dad_edge.training.plots and dad_edge.runtime.overlay: written PNGs, their sizes, and overlays that follow the map."""
import cv2
import numpy as np
import pytest

from dad_edge.training.plots import heatmap_overlay, save_overlay, save_roc_plot


def test_roc_plot_written_and_depends_on_the_curve(tmp_path):
    perfect = tmp_path / "new" / "dir" / "perfect.png"
    chance = tmp_path / "chance.png"
    save_roc_plot(perfect, {"perfect": (np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]))})
    rng = np.random.default_rng(0)
    fpr = np.concatenate(([0.0], np.sort(rng.random(500)), [1.0]))
    tpr = np.clip(fpr + rng.normal(0, 0.02, fpr.size), 0, 1)
    save_roc_plot(str(chance), {"image": (fpr, tpr), "pixel": (fpr, fpr ** 0.3)})
    a, b = cv2.imread(str(perfect)), cv2.imread(str(chance))
    assert a.shape == b.shape == (512, 512, 3)
    assert np.count_nonzero(np.any(a != b, axis=2)) > 1000
    # Two curves get two distinct colours: count strongly saturated hues.
    hue = cv2.cvtColor(b, cv2.COLOR_BGR2HSV)
    saturated = hue[..., 1] > 150
    assert len(np.unique(hue[..., 0][saturated] // 10)) >= 2


def test_roc_plot_rejects_mismatched_curve(tmp_path):
    with pytest.raises(ValueError, match="equal length"):
        save_roc_plot(tmp_path / "x.png", {"bad": ([0, 1], [0, 0.5, 1])})


@pytest.mark.parametrize("shape", [(64, 80, 3), (64, 80, 1), (64, 80)])
def test_overlay_shape_dtype_and_hot_region(shape):
    image = np.full(shape, 100, np.uint8)
    anomaly_map = np.zeros((16, 20), np.float32)  # resized to the image
    anomaly_map[4:8, 5:10] = 1.0
    out = heatmap_overlay(image, anomaly_map)
    assert out.shape == (64, 80, 3) and out.dtype == np.uint8
    hot, cold = out[20:28, 24:36].astype(int), out[50:60, 60:75].astype(int)
    # JET: red where the map is 1, blue where it is 0 (RGB order).
    assert hot[..., 0].mean() > hot[..., 2].mean() + 50
    assert cold[..., 2].mean() > cold[..., 0].mean() + 50
    assert np.abs(hot.mean((0, 1)) - cold.mean((0, 1))).max() > 50


def test_overlay_contours():
    image = np.zeros((32, 32, 3), np.uint8)
    gt = np.zeros((32, 32), bool)
    gt[8:16, 8:16] = True
    pred = np.zeros((32, 32), bool)
    pred[20:28, 20:28] = True
    out = heatmap_overlay(image, np.zeros((32, 32)), gt_mask=gt, pred_mask=pred)
    assert tuple(out[8, 10]) == (0, 255, 0)  # green on the ground-truth edge
    assert tuple(out[20, 22]) == (255, 255, 255)  # white on the prediction edge
    assert tuple(out[12, 12]) != (0, 255, 0)  # inside stays the heat map


def test_overlay_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        heatmap_overlay(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        heatmap_overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 1)))


def test_save_overlay_side_by_side(tmp_path):
    path = tmp_path / "a" / "b" / "overlay.png"
    image = np.zeros((40, 50, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    save_overlay(path, image, np.zeros((40, 50)), gt_mask=np.ones((40, 50), bool))
    written = cv2.imread(str(path))
    assert written.shape == (40, 100, 3)
    assert tuple(written[20, 20]) == (0, 0, 200)  # left half: the image, back in BGR
    assert not np.array_equal(written[:, :50], written[:, 50:])
