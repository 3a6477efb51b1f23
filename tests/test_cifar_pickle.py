"""CIFAR-10's python batches through the restricted unpickler: real batches load, anything else is refused
and nothing in it runs."""
import os
import pickle
import struct
import warnings

import numpy as np
import pytest

from dad_edge.data.cifar import CLASSES, read_cifar10, read_cifar_batch
from dad_edge.data.cifar_pickle import load_cifar_pickle
from dad_edge.data.imageio import write_image
from dad_edge.data.oneclass_formats import detect_format, open_oneclass_dataset
from dad_edge.errors import DataError


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [(seed + i) % 3 for i in range(n)]


# ---- the bytes Python 2's cPickle wrote (protocol 2), as in the 2009 release -------------------

def _s(b: bytes) -> bytes:
    """A Python 2 str: SHORT_BINSTRING or BINSTRING (read back as bytes with encoding='bytes')."""
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def _i(n: int) -> bytes:
    return b"K" + bytes([n]) if n < 256 else (b"M" + struct.pack("<H", n) if n < 65536 else b"J" + struct.pack("<i", n))


def _py2_array(a: np.ndarray) -> bytes:
    """numpy's reduce of a uint8 array: _reconstruct(ndarray, (0,), 'b') then BUILD (1, shape, dtype, False, raw)."""
    shape = b"".join(_i(n) for n in a.shape) + {1: b"\x85", 2: b"\x86"}[a.ndim]
    dtype = (b"cnumpy\ndtype\n" + _s(b"u1") + _i(0) + _i(1) + b"\x87R"
             + b"(" + _i(3) + _s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + _i(0) + b"tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _i(0) + b"\x85" + _s(b"b") + b"\x87R"
            + b"(" + _i(1) + shape + dtype + b"\x89" + _s(a.tobytes()) + b"tb")


def _py2_batch(data: np.ndarray, labels) -> bytes:
    items = (_s(b"batch_label") + _s(b"training batch 1 of 5") + _s(b"data") + _py2_array(data)
             + _s(b"labels") + b"](" + b"".join(_i(v) for v in labels) + b"e"
             + _s(b"filenames") + b"](" + b"".join(_s(b"img_%d.png" % i) for i in range(len(labels))) + b"e")
    return b"\x80\x02}(" + items + b"u."


def test_the_py2_bytes_are_what_numpy_itself_reads_as_the_batch():
    """The hand-written bytes are a faithful batch: plain pickle + numpy read them as the same dict."""
    data, labels = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 warns on the numpy.core name
        ref = pickle.loads(_py2_batch(data, labels), encoding="bytes")
    np.testing.assert_array_equal(ref[b"data"], data)
    assert ref[b"labels"] == labels and ref[b"batch_label"] == b"training batch 1 of 5"


@pytest.mark.parametrize("form", ["python2", "protocol2", "protocol4", "protocol5", "str-keys"])
def test_real_batches_load_as_rgb_images(tmp_path, form):
    data, labels = _batch()
    path = tmp_path / "data_batch_1"
    if form == "python2":
        path.write_bytes(_py2_batch(data, labels))
    elif form == "str-keys":
        path.write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol=4))
    else:
        path.write_bytes(pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"},
                                      protocol=int(form[-1])))
    images, y = read_cifar_batch(path)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8 and y.tolist() == labels
    # Each row is the red plane, then green, then blue, each row-major 32x32.
    assert tuple(images[2, 0, 0]) == (data[2, 0], data[2, 1024], data[2, 2048])
    assert tuple(images[1, 5, 7]) == (data[1, 5 * 32 + 7], data[1, 1024 + 5 * 32 + 7], data[1, 2048 + 5 * 32 + 7])


def test_the_batches_folder_is_a_one_class_data_set_with_its_partition(tmp_path):
    for name, seed in (("data_batch_1", 0), ("data_batch_2", 1), ("test_batch", 2)):
        data, labels = _batch(5, seed)
        (tmp_path / name).write_bytes(_py2_batch(data, labels))
    meta = {b"label_names": [n.encode() for n in CLASSES], b"num_cases_per_batch": 10000, b"num_vis": 3072}
    (tmp_path / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    ds = open_oneclass_dataset(tmp_path)
    assert detect_format(tmp_path) == "cifar10" and ds.class_names == list(CLASSES)
    assert len(ds) == 15 and ds.is_test.tolist() == [False] * 10 + [True] * 5
    s = ds.split("bird")  # class 2
    assert s.train_index.tolist() == [2, 6, 9]  # labels 0 1 2 0 1 | 1 2 0 1 2 | test 2 0 1 2 0
    # The whole test batch: class 2 first, then the other classes in class order.
    assert s.test_index.tolist() == [10, 13, 11, 14, 12] and s.test_labels.tolist() == [0, 0, 1, 1, 1]


def test_the_png_form_goes_through_the_class_folders(tmp_path):
    for part in ("train", "test"):
        for name in ("cat", "dog"):
            write_image(tmp_path / part / name / "0.png", np.zeros((32, 32, 3), np.uint8))
    ds = read_cifar10(tmp_path)
    assert ds.class_names == ["cat", "dog"] and ds.is_test.tolist() == [False, False, True, True]


# ---- refused, never executed ---------------------------------------------------------------------

class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _CallsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",)


class _Sub(np.ndarray):
    """An ndarray subclass: unpickling it would import and build a class the file chooses."""


@pytest.mark.parametrize("payload, named", [
    (_RunsAShellCommand, r"(posix|nt)\.system"),
    (_CallsEval, r"(builtins|__builtin__)\.eval"),
])
def test_a_malicious_batch_is_refused_and_not_executed(tmp_path, payload, named):
    marker = tmp_path / "executed"
    path = tmp_path / "data_batch_1"
    data, labels = _batch()
    for protocol in (0, 2, 4, 5):
        path.write_bytes(pickle.dumps({b"data": data, b"labels": labels, b"extra": payload(marker)},
                                      protocol=protocol))
        with pytest.raises(DataError, match=rf"data_batch_1: refused: the file asks to call or build {named}.*"
                                            "nothing in it was run") as e:
            read_cifar_batch(path)
        assert str(path) in str(e.value)
        assert not marker.exists()


def test_an_array_subclass_is_refused(tmp_path):
    path = tmp_path / "test_batch"
    data, labels = _batch()
    path.write_bytes(pickle.dumps({b"data": data.view(_Sub), b"labels": labels}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch: refused: .*_Sub"):
        read_cifar_batch(path)


def _reduce(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"


@pytest.mark.parametrize("body, message", [
    # numpy's own reconstruction, asked for a 10^12-element array: never allocated.
    (_reduce(b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85",
             _s(b"b")), "an array reconstruction other than numpy's own"),
    # The array class called directly.
    (_reduce(b"cnumpy\nndarray\n", _i(5)), "not callable"),
    # An object dtype: arrays of arbitrary Python objects.
    (_reduce(b"cnumpy\ndtype\n", _s(b"O8"), _i(0), _i(1)), "dtype 'O8'"),
    # A codec other than the one protocol 2 uses for bytes.
    (_reduce(b"c_codecs\nencode\n", b"X\x01\x00\x00\x00x", b"X\x04\x00\x00\x00zlib"), "codec 'zlib'"),
])
def test_numpys_own_names_are_only_accepted_for_what_a_batch_holds(tmp_path, body, message):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02}(" + _s(b"data") + body + b"u.")
    with pytest.raises(DataError, match=rf"data_batch_1: not a CIFAR python batch \(.*{message}"):
        load_cifar_pickle(path)


@pytest.mark.parametrize("content, message", [
    ({b"data": np.zeros((2, 3072), np.float64), b"labels": [0, 1]}, "dtype 'f8'"),
    ({b"data": [0] * 3072, b"labels": [0]}, "'data' is list"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, "'data' is uint8 \\(2, 1024\\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "'labels' must be 2 class numbers 0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}, "CIFAR-100 has fine_labels"),
    ([1, 2, 3], "holds a list, not the dict"),
])
def test_a_batch_with_other_contents_is_refused(tmp_path, content, message):
    path = tmp_path / "data_batch_3"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match=rf"data_batch_3: .*{message}"):
        read_cifar_batch(path)


def test_a_truncated_batch_is_a_data_error(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(_py2_batch(*_batch())[:-500])
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR python batch"):
        read_cifar_batch(path)
