"""benchmarks/letterbox_screen.py (session 13's aspect-ratio screening): the padded copy keeps every
original pixel and says where, and its scoring equals `dad-edge eval` where nothing was padded."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dad_edge.model.config import preset
from dad_edge.training.evaluate import evaluate_model
from deploy_support import write_category, write_checkpoint
from training_support import benchmark_module

screen = benchmark_module("letterbox_screen")


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    """A small category of wide images (masks cropped alike), some defects in the cropped part."""
    root = write_category(tmp_path_factory.mktemp("wide") / "cat", n_train=4, n_good=4, n_bad=4)
    for path in root.rglob("*.png"):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), np.ascontiguousarray(image[: image.shape[0] * 5 // 8]))  # h < w
    return root


def test_prepare_pads_to_a_square_and_records_the_box(category, tmp_path):
    n = screen.prepare(category, tmp_path / "sq")
    boxes = json.loads((tmp_path / "sq" / screen.BOXES).read_text())
    assert n == len(list(category.rglob("*.png"))) == len(boxes)
    for rel, (y0, x0, h, w, side) in boxes.items():
        original = cv2.imread(str(category / rel), cv2.IMREAD_UNCHANGED)
        square = cv2.imread(str(tmp_path / "sq" / rel), cv2.IMREAD_UNCHANGED)
        assert square.shape[:2] == (side, side) and original.shape[:2] == (h, w) and h < w and x0 == 0
        np.testing.assert_array_equal(square[y0:y0 + h, x0:x0 + w], original)
        if rel.startswith("ground_truth"):
            assert square[:y0].max(initial=0) == 0 and square[y0 + h:].max(initial=0) == 0


def test_crop_to_box_returns_the_original_area_only():
    box = [16, 0, 32, 64, 64]  # a 32 x 64 image centred in a 64 x 64 square
    padded_map = np.zeros((64, 64), np.float32)
    padded_map[16:48] = 1.0
    cropped = screen.crop_to_box(padded_map, box, 64)
    assert cropped.shape == (64, 64) and cropped.min() == 1.0  # no padding row left in


def test_eval_on_the_original_is_dad_edge_eval(category, tmp_path):
    ckpt = write_checkpoint(tmp_path / "m.safetensors", preset("tiny"))
    ours = screen.evaluate(ckpt, category, category)
    reference = evaluate_model(ckpt, category)
    for key in ("image_auroc", "pixel_auroc", "au_pro"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-9), key
