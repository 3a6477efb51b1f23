"""dad_edge.training.metrics against scikit-learn, hand-worked AU-PRO cases and a brute-force AU-PRO."""
import json

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from dad_edge.training import metrics
from dad_edge.training.metrics import au_pro, average_precision, compute_metrics, f1_max, roc_auc, roc_curve


@pytest.fixture(params=[None, 1, 3], ids=["one-chunk", "chunk-1", "chunk-3"])
def chunk(request, monkeypatch):
    """Run a test once as is and once with tiny scan chunks, so ties straddle chunk ends."""
    if request.param is not None:
        monkeypatch.setattr(metrics, "_CHUNK", request.param)


def _random_cases(seed: int, count: int):
    """(labels, scores) pairs with heavy ties, float64 / float32 / int scores, negatives and -0.0."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        n = int(rng.integers(2, 200))
        labels = rng.integers(0, 2, n)
        if labels.min() == labels.max():
            continue
        levels = int(rng.integers(1, 12))
        kind = len(cases) % 4
        if kind == 0:
            scores = rng.integers(0, levels, n)  # integer-valued
        elif kind == 1:
            scores = (rng.integers(-levels, levels, n) / 4).astype(np.float32)
            scores[scores == 0] = np.float32(-0.0) * rng.integers(0, 2, int((scores == 0).sum()))
        elif kind == 2:
            scores = np.round(rng.normal(size=n) + labels, 1)  # float64 with ties
        else:
            scores = rng.random(n).astype(np.float32)
        cases.append((labels, scores))
    return cases


def _sk_f1_max(labels, scores) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return float(f1.max())


def test_roc_auc_ap_f1_match_sklearn(chunk):
    for labels, scores in _random_cases(0, 80):
        assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), rel=1e-12, abs=1e-14)
        assert average_precision(labels, scores) == pytest.approx(
            average_precision_score(labels, scores), rel=1e-12, abs=1e-14)
        best, threshold = f1_max(labels, scores)
        assert best == pytest.approx(_sk_f1_max(labels, scores), rel=1e-12)
        # The threshold reproduces the F1 with "anomalous when score >= threshold".
        predicted = np.asarray(scores) >= threshold
        tp = int((predicted & (labels == 1)).sum())
        assert best == pytest.approx(2 * tp / (predicted.sum() + labels.sum()), rel=1e-12)


def test_roc_curve_matches_sklearn(chunk):
    for labels, scores in _random_cases(1, 40):
        for drop in (True, False):
            fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=drop)
            sk_fpr, sk_tpr, sk_thresholds = sk_roc_curve(labels, scores, drop_intermediate=drop)
            np.testing.assert_allclose(fpr, sk_fpr, rtol=1e-15)
            np.testing.assert_allclose(tpr, sk_tpr, rtol=1e-15)
            np.testing.assert_array_equal(thresholds, sk_thresholds)


def test_small_known_values():
    labels = [0, 0, 1, 1]
    assert roc_auc(labels, [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied: the diagonal
    assert average_precision(labels, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert f1_max(labels, [0.1, 0.4, 0.35, 0.8]) == (pytest.approx(0.8), pytest.approx(0.35))
    assert f1_max([True, False], [2, 1]) == (1.0, 2.0)


def test_single_class_and_bad_input_errors():
    with pytest.raises(ValueError, match="only one class"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only one class"):
        roc_auc([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="only one class"):
        roc_curve([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="no positive"):
        average_precision([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="no positive"):
        f1_max([0, 0], [0.1, 0.2])
    assert average_precision([1, 1], [0.1, 0.2]) == 1.0  # defined without negatives, as sklearn
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1, 1], [0.1, 0.2])


# --- AU-PRO -------------------------------------------------------------------------------

def _au_pro_brute_force(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """The official MVTec AD recipe, one threshold at a time (scipy labels, 3x3 structure)."""
    regions = []
    for mask, amap in zip(masks, maps):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3), int))
        regions += [amap[labelled == k] for k in range(1, count + 1)]
    normal = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fprs.append(float((normal >= t).mean()))
        pros.append(float(np.mean([(r >= t).mean() for r in regions])))
    x, y = np.array(fprs), np.array(pros)
    stop = np.searchsorted(x, fpr_limit, side="right")
    area = np.sum((x[1:stop] - x[:stop - 1]) * (y[1:stop] + y[:stop - 1]) / 2)
    if x[stop - 1] < fpr_limit:
        y_lim = np.interp(fpr_limit, x[stop - 1:stop + 1], y[stop - 1:stop + 1])
        area += (fpr_limit - x[stop - 1]) * (y[stop - 1] + y_lim) / 2
    return float(area / fpr_limit)


def test_au_pro_perfect_detector():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 5:8, 0:2] = True
    assert au_pro(masks, masks.astype(np.float32)) == 1.0


def test_au_pro_one_of_two_equal_components_first():
    # A (4 px) at 1.0, the normal pixels at 0.5, B (4 px) at 0.0. Curve
    # (0,0) (0,0.5) (1,0.5) (1,1): PRO is 0.5 over the whole [0, 0.3].
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 0:2, 0:2] = True
    masks[0, 5:7, 5:7] = True
    maps = np.full(masks.shape, 0.5, np.float32)
    maps[0, 0:2, 0:2] = 1.0
    maps[0, 5:7, 5:7] = 0.0
    assert au_pro(masks, maps) == pytest.approx(0.5, abs=1e-12)


def test_au_pro_one_normal_pixel_before_the_defect():
    # 16 px: a 2x2 defect and 12 normal pixels. One normal pixel at 1.0, the defect at 0.8,
    # the rest 0. Curve (0,0) (1/12,0) (1/12,1) (1,1): area to 0.3 is 0.3 - 1/12.
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 2:4, 2:4] = True
    maps = np.zeros(masks.shape, np.float32)
    maps[0, 0, 0] = 1.0
    maps[0, 2:4, 2:4] = 0.8
    assert au_pro(masks, maps) == pytest.approx((0.3 - 1 / 12) / 0.3, abs=1e-12)


def test_au_pro_interpolates_at_the_limit():
    # 10 normal px (5 at 0.5, 5 at 0) and a 2-px defect at 0.9 and 0.5. The tie at 0.5
    # moves from (0, 0.5) straight to (0.5, 1): PRO = 0.5 + FPR up to 0.3, area 0.195.
    masks = np.zeros((1, 1, 12), bool)
    masks[0, 0, 10:] = True
    maps = np.array([[[0.5] * 5 + [0.0] * 5 + [0.9, 0.5]]], np.float32)
    assert au_pro(masks, maps) == pytest.approx(0.195 / 0.3, abs=1e-12)
    # The limit itself changes the normalisation: to 0.5 the area is 0.375.
    assert au_pro(masks, maps, fpr_limit=0.5) == pytest.approx(0.375 / 0.5, abs=1e-12)


def test_au_pro_components_in_different_images_count_separately():
    # Image 0 has a 1-px defect found first, image 1 a 9-px defect found last: each
    # component weighs 1/2 (pooled pixels would give 1/10).
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 0, 0] = True
    masks[1, 2:5, 2:5] = True
    maps = np.full(masks.shape, 0.5, np.float32)
    maps[0, 0, 0] = 1.0
    maps[1, 2:5, 2:5] = 0.0
    assert au_pro(masks, maps) == pytest.approx(0.5, abs=1e-12)


def test_au_pro_components_of_different_sizes_count_equally():
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 0, 0] = True  # 1 px
    masks[0, 4:7, 4:7] = True  # 9 px, not 8-connected to the first
    for found_first in ((0, 0), (5, 5)):
        maps = np.full(masks.shape, 0.5, np.float32)
        maps[0][masks[0]] = 0.0
        label = ndimage.label(masks[0])[0]
        maps[0][label == label[found_first]] = 1.0
        assert au_pro(masks, maps) == pytest.approx(0.5, abs=1e-12)


def test_au_pro_uses_8_connectivity():
    # The diagonal pair is one component (half found); the other pair is not found:
    # PRO = (1/2 + 0) / 2 = 0.25. 4-connectivity would give 1/3.
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True
    masks[0, 5, 5:7] = True
    maps = np.full(masks.shape, 0.5, np.float32)
    maps[0][masks[0]] = 0.0
    maps[0, 0, 0] = 1.0
    assert au_pro(masks, maps) == pytest.approx(0.25, abs=1e-12)


def test_au_pro_matches_brute_force(chunk):
    rng = np.random.default_rng(2)
    for trial in range(12):
        masks = np.zeros((3, 12, 12), bool)
        for _ in range(4):
            i, r, c = rng.integers(0, 3), rng.integers(0, 10), rng.integers(0, 10)
            masks[i, r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = True
        noise = rng.random(masks.shape) + masks * rng.uniform(0, 1)
        maps = np.round(noise * 4) / 4 if trial % 2 else noise  # ties, or none
        maps = maps.astype(np.float32 if trial % 3 else np.float64)
        assert au_pro(masks, maps) == pytest.approx(_au_pro_brute_force(masks, maps), abs=1e-12)


def test_au_pro_undefined_and_bad_input():
    assert au_pro(np.zeros((2, 4, 4), bool), np.random.rand(2, 4, 4)) is None
    assert au_pro(np.ones((1, 4, 4), bool), np.random.rand(1, 4, 4)) is None
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        au_pro(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="fpr_limit"):
        au_pro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4)), fpr_limit=0)


# --- compute_metrics -------------------------------------------------------------------------

def _dataset(seed: int = 3):
    """10 images: 4 good, 3 crack, 2 hole, 1 'logical' whose mask is empty."""
    rng = np.random.default_rng(seed)
    types = ["good"] * 4 + ["crack"] * 3 + ["hole"] * 2 + ["logical"]
    masks = np.zeros((len(types), 16, 16), bool)
    for i, t in enumerate(types):
        if t in ("crack", "hole"):
            r, c = rng.integers(0, 12, 2)
            masks[i, r:r + 4, c:c + 3] = True
    maps = (rng.random(masks.shape) * 0.6 + masks * 0.5).astype(np.float32)
    labels = np.array([t != "good" for t in types], int)
    scores = maps.reshape(len(types), -1).max(1) + rng.normal(0, 0.1, len(types))
    return labels, scores, masks, maps, types


def test_compute_metrics(chunk):
    labels, scores, masks, maps, types = _dataset()
    out = compute_metrics(labels, scores, masks, maps, types)
    json.dumps(out)
    expected_keys = {"image_auroc", "pixel_auroc", "au_pro", "pixel_ap", "f1_max", "pixel_f1_max",
                     "image_threshold_f1", "pixel_threshold_f1", "num_images", "num_anomalous"}
    assert set(out) == expected_keys | {"au_pro_definition", "per_type"}
    assert "divided by 0.3" in out["au_pro_definition"]
    assert set(out["per_type"]) == {"crack", "hole", "logical"}
    assert (out["num_images"], out["num_anomalous"]) == (10, 6)

    def check(entry, sel):
        assert set(entry) == expected_keys
        for key, value in entry.items():
            assert value is None or type(value) in (float, int), key
        assert entry["num_images"] == sel.sum() and entry["num_anomalous"] == labels[sel].sum()
        assert entry["image_auroc"] == pytest.approx(roc_auc_score(labels[sel], scores[sel]), rel=1e-12)
        assert entry["f1_max"] == pytest.approx(_sk_f1_max(labels[sel], scores[sel]), rel=1e-12)
        if not masks[sel].any():
            assert entry["pixel_auroc"] is entry["au_pro"] is entry["pixel_ap"] is None
            assert entry["pixel_f1_max"] is entry["pixel_threshold_f1"] is None
            return
        pixel_labels, pixel_scores = masks[sel].ravel(), maps[sel].ravel()
        assert entry["pixel_auroc"] == pytest.approx(roc_auc_score(pixel_labels, pixel_scores), rel=1e-12)
        assert entry["pixel_ap"] == pytest.approx(
            average_precision_score(pixel_labels, pixel_scores), rel=1e-12)
        assert entry["pixel_f1_max"] == pytest.approx(_sk_f1_max(pixel_labels, pixel_scores), rel=1e-12)
        assert entry["au_pro"] == pytest.approx(_au_pro_brute_force(masks[sel], maps[sel]), abs=1e-12)
        for value in (entry["pixel_auroc"], entry["au_pro"], entry["pixel_ap"], entry["pixel_f1_max"]):
            assert 0 <= value <= 1

    types_arr = np.array(types)
    check({k: out[k] for k in expected_keys}, np.ones(len(types), bool))
    for t, entry in out["per_type"].items():
        check(entry, (types_arr == t) | (types_arr == "good"))


def test_compute_metrics_length_mismatch():
    labels, scores, masks, maps, types = _dataset()
    with pytest.raises(ValueError, match="lengths differ"):
        compute_metrics(labels, scores, masks, maps, types[:-1])
