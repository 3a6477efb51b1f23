"""The one-class protocol and its readers: digits (built in), class folders, MNIST idx, MNIST-C .npy.
CIFAR-10's python batches: tests/test_cifar_pickle.py."""
import gzip
import struct
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from dad_edge.data.class_folders import read_class_folders
from dad_edge.data.digits import load_digits_dataset
from dad_edge.data.imageio import read_image, write_image
from dad_edge.data.mnist import IDX_IMAGES, IDX_LABELS, read_idx, read_mnist_c
from dad_edge.data.mvtec import MVTecCategory
from dad_edge.data.oneclass import ArrayImages, OneClassDataset, mean_over_classes
from dad_edge.data.oneclass_formats import detect_format, open_oneclass_dataset
from dad_edge.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def test_digits_are_scikit_learns_digits_upsampled(digits):
    from sklearn.datasets import load_digits

    ref = load_digits()
    x = digits.images.array
    assert x.shape == (1797, 32, 32, 1) and x.dtype == np.uint8
    assert digits.class_names == [str(d) for d in range(10)] and digits.is_test is None
    np.testing.assert_array_equal(digits.labels, ref.target)
    # Area-averaged back to 8x8, each image follows its own 0..16 counts scaled to 0..255 (the bilinear
    # upsampling blurs across block borders): 0.98 against 0.52 for the counts of other images.
    back = np.stack([cv2.resize(im[:, :, 0].astype(np.float32), (8, 8), interpolation=cv2.INTER_AREA) for im in x])
    target = ref.images * (255 / 16)
    assert np.corrcoef(back.ravel(), target.ravel())[0, 1] > 0.95
    assert np.corrcoef(back.ravel(), target[::-1].ravel())[0, 1] < 0.7
    assert x.max() == 255 and (x[:, 0, 0] == 0).mean() > 0.9  # full range, ink bright on a black ground


def test_split_without_partition_holds_out_part_of_the_normal_class(digits):
    s = digits.split("3", seed=0)
    members = np.flatnonzero(digits.labels == 3)
    assert (digits.labels[s.train_index] == 3).all()
    normal_test = s.test_index[s.test_labels == 0]
    assert (digits.labels[normal_test] == 3).all()
    assert not set(s.train_index) & set(normal_test)
    assert sorted(set(s.train_index) | set(normal_test)) == members.tolist()
    assert len(normal_test) == round(len(members) * 0.2)
    # Every other digit is an anomaly, all of them, labelled 1; test_classes names each image's class.
    anomalies = s.test_index[s.test_labels == 1]
    assert sorted(anomalies.tolist()) == np.flatnonzero(digits.labels != 3).tolist()
    assert [c == "3" for c in s.test_classes] == (s.test_labels == 0).tolist()
    assert s.test_labels[: len(normal_test)].sum() == 0  # normal images first


def test_split_is_a_function_of_seed_and_class_alone(digits):
    a = digits.split("3", seed=0)
    digits.split("5", seed=0)  # another class in between changes nothing
    b = digits.split(3, seed=0)
    c = digits.split("3", seed=1)
    assert np.array_equal(a.train_index, b.train_index) and np.array_equal(a.test_index, b.test_index)
    assert not np.array_equal(a.train_index, c.train_index)


def test_caps_take_an_equal_share_of_every_other_class(digits):
    s = digits.split("0", seed=2, max_train=50, max_test_anomalies=20)
    assert len(s.train_index) == 50 and (digits.labels[s.train_index] == 0).all()
    counts = np.bincount(digits.labels[s.test_index[s.test_labels == 1]], minlength=10)
    assert counts[0] == 0 and sorted(counts[1:].tolist()) == [2] * 7 + [3] * 2  # 20 over 9 classes
    assert s.test_labels.sum() == 20


def test_split_keeps_the_data_sets_own_partition():
    images = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1).repeat(4, 1).repeat(4, 2)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2])
    is_test = np.array([False] * 9 + [True] * 3)
    ds = OneClassDataset("toy", ArrayImages(images), labels, ["a", "b", "c"], is_test)
    s = ds.split("b")
    assert s.train_index.tolist() == [3, 4, 5]  # class b from the training part only
    assert s.test_index.tolist() == [10, 9, 11]  # the whole test part, class b first
    assert s.test_labels.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match="toy: class 'b' has 0 images in the training part and 4 in the test part"):
        OneClassDataset("toy", ArrayImages(images), labels, ["a", "b", "c"], labels == 1).split("b")
    with pytest.raises(DataError, match="toy: class 'b' has 1 image; the protocol needs at least 2"):
        OneClassDataset("toy", ArrayImages(images[:5]), [0, 0, 1, 2, 2], ["a", "b", "c"]).split("b")


@pytest.mark.parametrize("kwargs, message", [
    (dict(normal_class="11"), "no class '11'; the classes are 0, 1"),
    (dict(normal_class="1", test_fraction=1.0), r"test_fraction=1.0 must be in \(0, 1\)"),
    (dict(normal_class="1", max_train=0), "max_train=0 must be at least 1"),
])
def test_bad_split_options_are_config_errors(digits, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        digits.split(**kwargs)


def test_mean_over_classes():
    r = mean_over_classes({"0": 0.9, "1": 0.7})
    assert r == {"per_class": {"0": 0.9, "1": 0.7}, "mean": pytest.approx(0.8)}
    with pytest.raises(ValueError, match="finite"):
        mean_over_classes({"0": float("nan")})


def test_written_category_is_the_split_in_mvtec_layout(digits, tmp_path):
    s = digits.split("7", seed=0, max_test_anomalies=27)
    root = s.write_category(tmp_path / "digits-7")
    cat = MVTecCategory(root)
    train = cat.train_samples()
    assert [int(p.path.stem) for p in train] == s.train_index.tolist()
    np.testing.assert_array_equal(read_image(train[0].path), digits.images.image(int(s.train_index[0])))
    test = cat.test_samples()
    assert sorted((int(t.path.stem), t.label) for t in test) == sorted(zip(s.test_index.tolist(),
                                                                           s.test_labels.tolist()))
    assert cat.defect_types() == [str(d) for d in range(10) if d != 7]  # each other class is a defect type
    # The same split again: the folder is reused as it is; another split replaces it; a foreign folder is refused.
    stamp = (root / "train" / "good").stat().st_mtime_ns
    assert s.write_category(root) == root and (root / "train" / "good").stat().st_mtime_ns == stamp
    other = digits.split("7", seed=1, max_test_anomalies=27)
    other.write_category(root)
    assert [int(p.path.stem) for p in MVTecCategory(root).train_samples()] == other.train_index.tolist()
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match="mine: exists and was not written by write_category"):
        s.write_category(tmp_path / "mine")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_a_baseline_runs_the_protocol_through_the_written_category(digits, tmp_path):
    """What `dad-edge compare` will do per class: write the split, fit, evaluate with the common metric code."""
    from sklearn.metrics import roc_auc_score

    from dad_edge.baselines.fit import fit_baseline
    from dad_edge.baselines.scorer import BaselineScorer
    from dad_edge.training.evaluate import evaluate_model

    s = digits.split("8", seed=0, max_test_anomalies=90)
    root = s.write_category(tmp_path / "digits-8")
    fit = fit_baseline(root, "iforest", tmp_path / "if", image_size=16)
    assert fit.num_images == len(s.train_index)
    metrics = evaluate_model(fit.path, root)
    assert (metrics["num_images"], metrics["num_anomalous"]) == (len(s.test_index), int(s.test_labels.sum()))
    # The folder is the split: scoring the split's own frames gives the same AUROC.
    with BaselineScorer(fit.path) as scorer:
        _, scores = scorer.infer_batch(s.test_frames(), "RGB")
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(s.test_labels, scores), abs=1e-12)
    # Eights against the other digits in raw pixels: far better than chance (0.95 measured), not perfect.
    assert 0.8 < metrics["image_auroc"] < 1.0


# ---- class folders -----------------------------------------------------------------------------

def _tree(root: Path, classes=("cat", "dog", "owl"), n=3, part=""):
    for k, name in enumerate(classes):
        for i in range(n):
            suffix = ".jpg" if i == 0 else ".png"
            write_image(root / part / name / f"{i}{suffix}", np.full((6, 8, 3), 40 * k + i, np.uint8))
    return root


def test_class_folders_without_and_with_partition(tmp_path):
    ds = read_class_folders(_tree(tmp_path / "mini"))
    assert ds.class_names == ["cat", "dog", "owl"] and ds.is_test is None
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.images.image(4)[0, 0, 0] == 41
    s = ds.split("dog", seed=0)
    root = s.write_category(tmp_path / "dog")
    first = MVTecCategory(root).train_samples()[0].path
    assert first.read_bytes() == ds.images.paths[int(first.stem)].read_bytes()  # copied, not re-encoded
    part = tmp_path / "cifar_png"
    _tree(part, part="train")
    _tree(part, n=2, part="test")
    ds = read_class_folders(part)
    assert len(ds) == 15 and ds.is_test.sum() == 6 and detect_format(part) == "class-folders"
    assert ds.split("owl").train_index.tolist() == [6, 7, 8]


def test_class_folder_bad_trees_are_named(tmp_path):
    _tree(tmp_path / "one", classes=("cat",))
    with pytest.raises(DataError, match=r"one: 1 class folder \(cat\); the one-class protocol needs at least 2"):
        read_class_folders(tmp_path / "one")
    _tree(tmp_path / "empty", classes=("cat", "dog"))
    (tmp_path / "empty" / "eel").mkdir()
    with pytest.raises(DataError, match=r"empty/eel: no image files"):
        read_class_folders(tmp_path / "empty")
    _tree(tmp_path / "split", part="train")
    _tree(tmp_path / "split", classes=("cat", "dog"), part="test")
    with pytest.raises(DataError, match="train/ holds the classes cat, dog, owl but test/ holds cat, dog"):
        read_class_folders(tmp_path / "split")


# ---- MNIST idx and MNIST-C ---------------------------------------------------------------------

def _idx(path: Path, array: np.ndarray, magic: int, dims=None):
    dims = array.shape if dims is None else dims
    data = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _mnist(folder: Path, gz=False):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", 6), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 5, 4), dtype=np.uint8)
        labels = (np.arange(n) % 3).astype(np.uint8)
        end = ".gz" if gz else ""
        _idx(folder / f"{prefix}-images-idx3-ubyte{end}", images, IDX_IMAGES)
        _idx(folder / f"{prefix}-labels-idx1-ubyte{end}", labels, IDX_LABELS)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_keep_their_partition(tmp_path, gz):
    arrays = _mnist(tmp_path / "mnist", gz)
    ds = open_oneclass_dataset(tmp_path / "mnist")
    assert detect_format(tmp_path / "mnist") == "mnist" and ds.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(ds.images.array[:6, :, :, 0], arrays["train"][0])
    np.testing.assert_array_equal(ds.images.array[6:, :, :, 0], arrays["t10k"][0])
    assert ds.is_test.tolist() == [False] * 6 + [True] * 3
    s = ds.split("1")
    assert s.train_index.tolist() == [1, 4] and s.test_index.tolist() == [7, 6, 8]


def test_idx_wrong_magic_number_is_named(tmp_path):
    _mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: magic number 0x00000801; an idx file of "
                                        r"images \(0x00000803\)"):
        read_idx(labels, IDX_IMAGES)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_larger_than_the_file_is_refused_before_any_allocation(tmp_path, gz):
    path = tmp_path / ("big-images-idx3-ubyte" + (".gz" if gz else ""))
    _idx(path, np.zeros((2, 28, 28), np.uint8), IDX_IMAGES, dims=(60000, 28, 28))  # claims 47 MB, holds 1.5 kB
    tracemalloc.start()
    with pytest.raises(DataError, match=r"declares \(60000, 28, 28\) = 47040000 bytes of data, the file holds 1568"):
        read_idx(path, IDX_IMAGES)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000  # chunks of what is there, never the header's claim
    _idx(path, np.zeros((2, 28, 28), np.uint8), IDX_IMAGES, dims=(4_000_000, 1000, 1000))
    with pytest.raises(DataError, match="more than any MNIST-like file"):
        read_idx(path, IDX_IMAGES)


def test_mnist_c_npy_files(tmp_path):
    folder = tmp_path / "mnist_c" / "fog"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.save(folder / "train_images.npy", train)
    np.save(folder / "train_labels.npy", np.array([0, 1, 0, 1]))
    np.save(folder / "test_images.npy", train[:2])
    np.save(folder / "test_labels.npy", np.array([1, 0], np.uint8))
    ds = open_oneclass_dataset(folder)
    assert detect_format(folder) == "mnist-c" and ds.class_names == ["0", "1"]
    np.testing.assert_array_equal(ds.images.array[:4], train)
    assert ds.is_test.tolist() == [False] * 4 + [True] * 2


def test_mnist_c_bad_npy_files_are_refused(tmp_path):
    folder = tmp_path / "fog"
    folder.mkdir()
    np.save(folder / "train_images.npy", np.zeros((2, 28, 28), np.uint8))
    np.save(folder / "train_labels.npy", np.array([0, 1]))
    np.save(folder / "test_images.npy", np.zeros((2, 28, 28), np.uint8))
    np.save(folder / "test_labels.npy", np.array([0, 1]))
    path = folder / "train_labels.npy"
    np.save(path, np.array([0, "x"], dtype=object), allow_pickle=True)  # a pickle inside: never loaded
    with pytest.raises(DataError, match=r"train_labels\.npy: holds Python objects"):
        read_mnist_c(folder)
    np.save(path, np.array([0, 1]))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"train_labels\.npy: the header declares \(2,\) int64 = 16 bytes, the file "
                                        r"holds 13"):
        read_mnist_c(folder)
    np.save(path, np.array([0, 1]))
    np.save(folder / "test_images.npy", np.zeros((2, 28, 28), np.float32))
    with pytest.raises(DataError, match=r"test_images\.npy: float32 \(2, 28, 28\); expected uint8"):
        read_mnist_c(folder)


def test_digits_is_the_built_in_default(digits):
    ds = open_oneclass_dataset("digits")
    assert ds.name == "digits" and np.array_equal(ds.images.array, digits.images.array)
