"""VisA and DAGM 2007 read into the same Category as MVTec: small trees in each real layout, built here."""
from pathlib import Path

import numpy as np
import pytest

from dad_edge.data.dagm import DAGMCategory
from dad_edge.data.imageio import write_image
from dad_edge.data.layouts import detect_layout, open_category
from dad_edge.data.mvtec import MVTecCategory, load_masks
from dad_edge.data.visa import VisACategory
from dad_edge.errors import DataError

VISA_HEADER = "object,split,label,image,mask\n"


def _img(value, size=12, colour=True):
    return np.full((size, size, 3 if colour else 1), value, np.uint8)


def _label_mask(value, size=12):
    """A label image as VisA ships it: 0 outside, a small defect index inside rows 2..5."""
    m = np.zeros((size, size), np.uint8)
    m[2:6, 3:9] = value
    return m


def _visa(root: Path, rows_for_other_object=True) -> Path:
    """<root>/candle with 3 normal training images, 1 normal and 2 anomalous test images; split_csv/1cls.csv."""
    rows = []
    images = root / "candle" / "Data" / "Images"
    for i in range(4):
        write_image(images / "Normal" / f"{i:04d}.JPG", _img(20 + i))
        rows.append(f"candle,{'train' if i < 3 else 'test'},normal,candle/Data/Images/Normal/{i:04d}.JPG,")
    for i, value in enumerate((1, 2)):  # defect indices, as in VisA's masks
        write_image(images / "Anomaly" / f"{i:03d}.JPG", _img(200))
        write_image(root / "candle" / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png", _label_mask(value))
        rows.append(f"candle,test,anomaly,candle/Data/Images/Anomaly/{i:03d}.JPG,"
                    f"candle/Data/Masks/Anomaly/{i:03d}.png")
    if rows_for_other_object:  # another object's rows: must be ignored, even though its files are absent
        rows.append("pcb1,train,normal,pcb1/Data/Images/Normal/0000.JPG,")
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text(VISA_HEADER + "\n".join(rows) + "\n")
    return root / "candle"


def test_visa_object_reads_the_official_split(tmp_path):
    cat = open_category(_visa(tmp_path / "VisA"))
    assert isinstance(cat, VisACategory)
    train = cat.train_samples()
    assert [s.path.name for s in train] == ["0000.JPG", "0001.JPG", "0002.JPG"] and {s.label for s in train} == {0}
    test = cat.test_samples()
    assert [(s.path.name, s.defect_type, s.label) for s in test] == [
        ("0003.JPG", "good", 0), ("000.JPG", "anomaly", 1), ("001.JPG", "anomaly", 1)]
    assert test[1].mask_path == tmp_path / "VisA" / "candle" / "Data" / "Masks" / "Anomaly" / "000.png"
    assert cat.defect_types() == ["anomaly"]
    # Masks hold 1 and 2, not 255: the defect area is still the defect area.
    masks = load_masks(test, 12)
    assert not masks[0].any()
    expected = _label_mask(1) > 0
    np.testing.assert_array_equal(masks[1], expected)
    np.testing.assert_array_equal(masks[2], expected)


def test_visa_validation_split_is_seeded_like_mvtec(tmp_path):
    cat = open_category(_visa(tmp_path / "VisA"))
    a = cat.train_val_split(0.34, seed=3)
    assert a == cat.train_val_split(0.34, seed=3)
    assert len(a[1]) == 1 and len(a[0]) == 2 and set(a[0]) | set(a[1]) == set(cat.train_samples())


def test_visa_data_set_folder_asks_for_one_object(tmp_path):
    _visa(tmp_path / "VisA")
    with pytest.raises(DataError, match=r"holding the categories candle.*pass one of them"):
        open_category(tmp_path / "VisA")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("candle/Data/Images/Normal/0001.JPG", "../../outside.JPG"), r"line 3: image .* points outside"),
    (lambda t: t.replace("Normal/0001.JPG", "Normal/9999.JPG"), r"line 3: image .*9999\.JPG does not exist"),
    (lambda t: t.replace(",candle/Data/Masks/Anomaly/000.png", ","), r"line 6: anomalous image .* without a mask"),
    (lambda t: t.replace("object,split", "obj,split"), r"header obj,split,label,image,mask"),
    (lambda t: t.replace("test,anomaly,candle/Data/Images/Anomaly/001", "test,broken,candle/Data/Images/Anomaly/001"),
     r"line 7: split 'test' / label 'broken'"),
    (lambda t: t.replace("candle,train,normal,candle/Data/Images/Normal/0000.JPG,",
                         "candle,train,anomaly,candle/Data/Images/Normal/0000.JPG,candle/Data/Masks/Anomaly/000.png"),
     r"line 2: an anomalous training image"),
])
def test_visa_bad_split_file_names_file_and_line(tmp_path, edit, message):
    obj = _visa(tmp_path / "VisA")
    (tmp_path / "outside.JPG").write_bytes((obj / "Data" / "Images" / "Normal" / "0000.JPG").read_bytes())
    csv = tmp_path / "VisA" / "split_csv" / "1cls.csv"
    csv.write_text(edit(csv.read_text()))
    with pytest.raises(DataError, match=message) as e:
        open_category(obj)
    assert str(csv) in str(e.value)


def test_visa_without_split_file_says_where_it_belongs(tmp_path):
    obj = _visa(tmp_path / "VisA")
    (tmp_path / "VisA" / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DataError, match=r"split_csv/1cls\.csv: no such file"):
        open_category(obj)


# ---- DAGM 2007 ---------------------------------------------------------------------------------

def _ellipse(size=16):
    """A DAGM label image: 0 / 255, an ellipse around the defect."""
    import cv2

    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, (8, 8), (5, 3), 30, 0, 360, 255, -1)
    return m


def _dagm_split(folder: Path, defective, n=4, labels_file=True, bom=False):
    """Images 0001.PNG.. in `folder`; the indices in `defective` get Label/<stem>_label.PNG and a 1 in Labels.txt."""
    lines = ["1"]  # the first line holds one number
    for i in range(1, n + 1):
        stem = f"{i:04d}"
        write_image(folder / f"{stem}.PNG", _img(60 + i, 16, colour=False))
        if i in defective:
            write_image(folder / "Label" / f"{stem}_label.PNG", _ellipse())
            lines.append(f"{i}\t1\t{stem}.PNG\t0\t{stem}_label.PNG")
        else:
            lines.append(f"{i}\t0\t{stem}.PNG\t0\t0")
    (folder / "Label").mkdir(parents=True, exist_ok=True)
    if labels_file:
        (folder / "Label" / "Labels.txt").write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n")


def _dagm(root: Path, **kw) -> Path:
    cls = root / "Class3"
    _dagm_split(cls / "Train", defective={2}, n=5, **kw)
    _dagm_split(cls / "Test", defective={1, 4}, n=4, **kw)
    return cls


@pytest.mark.parametrize("labels_file, bom", [(True, False), (True, True), (False, False)])
def test_dagm_class_trains_on_defect_free_images_and_tests_on_all(tmp_path, labels_file, bom):
    cls = _dagm(tmp_path / "DAGM", labels_file=labels_file, bom=bom)
    cat = open_category(cls)
    assert isinstance(cat, DAGMCategory) and detect_layout(cls) == "dagm"
    # The defective training image (0002) is not a normal image: left out of training.
    assert [s.path.name for s in cat.train_samples()] == ["0001.PNG", "0003.PNG", "0004.PNG", "0005.PNG"]
    test = cat.test_samples()
    assert [(s.path.name, s.label) for s in test] == [("0002.PNG", 0), ("0003.PNG", 0), ("0001.PNG", 1),
                                                      ("0004.PNG", 1)]
    assert test[2].mask_path == cls / "Test" / "Label" / "0001_label.PNG"
    masks = load_masks(test, 16)
    np.testing.assert_array_equal(masks[2], _ellipse() > 0)
    assert not masks[:2].any()


def test_dagm_bad_labels_line_names_file_and_line(tmp_path):
    cls = _dagm(tmp_path / "DAGM")
    labels = cls / "Test" / "Label" / "Labels.txt"
    labels.write_text(labels.read_text().replace("3\t0\t0003.PNG\t0\t0", "3\tmaybe\t0003.PNG"))
    with pytest.raises(DataError, match=r"Labels\.txt, line 4: .*expected 5 tab-separated fields") as e:
        open_category(cls)
    assert str(labels) in str(e.value)


def test_dagm_defect_without_its_label_image_is_refused(tmp_path):
    cls = _dagm(tmp_path / "DAGM")
    (cls / "Test" / "Label" / "0004_label.PNG").unlink()
    with pytest.raises(DataError, match=r"line 5: defective image 0004\.PNG without its mask .*0004_label\.PNG"):
        open_category(cls)


def test_dagm_root_asks_for_one_class(tmp_path):
    _dagm(tmp_path / "DAGM")
    with pytest.raises(DataError, match=r"categories Class3.*--data .*Class3"):
        open_category(tmp_path / "DAGM")


def test_mvtec_folders_still_open_as_mvtec(tmp_path):
    root = tmp_path / "part"
    write_image(root / "train" / "good" / "a.png", _img(1))
    assert type(open_category(root)) is MVTecCategory and detect_layout(root) == "mvtec"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no train/good/ folder"):  # none matched: MVTec's own message
        open_category(tmp_path / "empty")


# ---- the consumers: eval and baselines take the category whatever its layout -------------------

@pytest.mark.parametrize("layout", ["visa", "dagm"])
def test_eval_scores_visa_and_dagm_with_their_masks(tmp_path, layout):
    from dad_edge.model.config import preset
    from dad_edge.runtime.detector import Detector
    from dad_edge.training.evaluate import evaluate
    from deploy_support import random_model

    root = _visa(tmp_path / "VisA") if layout == "visa" else _dagm(tmp_path / "DAGM")
    cat = open_category(root)
    channels = 3 if layout == "visa" else 1
    model = random_model(preset("tiny", channels=channels), seed=1, std=0.15)
    with Detector.from_module(model, color_order="RGB") as det:
        metrics = evaluate(det, root)
    test = cat.test_samples()
    assert metrics["num_images"] == len(test) and metrics["num_anomalous"] == sum(s.label for s in test)
    # Pixel metrics are computed: every defect image's mask was found and read (none empty).
    assert metrics["images_without_masks"] == {} and 0.0 <= metrics["pixel_auroc"] <= 1.0
    assert all(m.any() for m in load_masks([s for s in test if s.label], 32))


def test_a_baseline_fits_and_evaluates_on_a_dagm_class(tmp_path):
    from dad_edge.baselines.fit import MIN_TRAIN_IMAGES, fit_baseline
    from dad_edge.training.evaluate import evaluate_model

    cls = tmp_path / "DAGM" / "Class1"
    _dagm_split(cls / "Train", defective={3}, n=MIN_TRAIN_IMAGES + 1)
    _dagm_split(cls / "Test", defective={1, 4}, n=4)
    fit = fit_baseline(cls, "iforest", tmp_path / "if", image_size=8)
    assert fit.num_images == MIN_TRAIN_IMAGES  # the defective training image is left out
    metrics = evaluate_model(fit.path, cls)
    assert (metrics["num_images"], metrics["num_anomalous"]) == (4, 2) and metrics["pixel_auroc"] is None


@pytest.mark.parametrize("layout", ["visa", "dagm"])
def test_train_and_calibrate_read_visa_and_dagm(tmp_path, layout):
    """`dad-edge train --data` takes a VisA object or a DAGM class as it takes an MVTec category,
    and calibrate reads their masks (VisA's hold class indices, not 255)."""
    from dad_edge.export.calibrate import _mask, calibration_samples
    from dad_edge.training.train import TrainOptions, train

    root = _visa(tmp_path / "VisA") if layout == "visa" else _dagm(tmp_path / "DAGM")
    cat = open_category(root)
    path = train(TrainOptions(data=str(root), out=str(tmp_path / "run"), epochs=1, preset="tiny", batch_size=2,
                              progress=False, device="cpu"))
    assert path.is_file()
    samples = calibration_samples(root)
    assert [s.path for s in samples] == [s.path for s in cat.test_samples()]
    defect = next(s for s in samples if s.label)
    assert _mask(defect, (16, 16)).any()
