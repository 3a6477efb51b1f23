"""Detector: one class for every artifact; parity across backends; inputs good and bad."""
import json

import cv2
import numpy as np
import pytest

import dad_edge
from dad_edge.artifacts import metadata as md
from dad_edge.model.config import preset
from dad_edge.errors import BackendError, CheckpointError, ConfigError, DataError, InputError
from dad_edge.export.metadata_io import read_metadata, write_metadata
from dad_edge.export.onnx_export import export_onnx
from dad_edge.data.imageio import read_image, write_image
from dad_edge.training.metrics import roc_auc
from deploy_support import sample_images, write_checkpoint

Detector = dad_edge.Detector


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    """A gray tiny model (magnetic tile is gray) as checkpoint and ONNX, and test images."""
    tmp = tmp_path_factory.mktemp("gray")
    # Seed and spread chosen so that the scores of real images spread (std about 0.015).
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny", channels=1), seed=2, std=0.15)
    export_onnx(ckpt, tmp / "m.onnx")
    return ckpt, tmp / "m.onnx", sample_images(tmp)


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rgb")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny"), seed=2)
    export_onnx(ckpt, tmp / "m.onnx")
    return ckpt, tmp / "m.onnx"


def test_torch_and_onnxruntime_agree_on_real_images(gray):
    ckpt, onnx_path, images = gray
    paths, labels = [p for p, _ in images], [y for _, y in images]
    by_torch = Detector(ckpt, device="cpu")(paths)  # the GPU's parity: benchmarks/test_parity.py
    by_ort = Detector(onnx_path)(paths)
    assert all(r.ok for r in by_torch + by_ort)
    map_diff = max(float(np.abs(a.anomaly_map - b.anomaly_map).max()) for a, b in zip(by_torch, by_ort))
    s_torch = np.array([r.score for r in by_torch])
    s_ort = np.array([r.score for r in by_ort])
    print(f"\ntorch vs onnxruntime on {len(paths)} images: max |map diff| {map_diff:.2e}, "
          f"max |score diff| {np.abs(s_torch - s_ort).max():.2e}")
    assert map_diff <= 1e-4
    assert s_torch.std() > 1e-3  # the random model tells images apart: the comparison means something
    assert np.array_equal(np.argsort(s_torch, kind="stable"), np.argsort(s_ort, kind="stable"))
    assert roc_auc(labels, s_torch) == roc_auc(labels, s_ort)


def test_result_at_the_input_size(gray):
    _, onnx_path, images = gray
    path = images[-1][0]
    frame = read_image(path)
    r = Detector(onnx_path)(path)
    assert r.ok and r.source == str(path)
    assert r.anomaly_map.shape == frame.shape[:2] and r.anomaly_map.dtype == np.float32
    assert 0 <= r.anomaly_map.min() <= r.anomaly_map.max() <= 1 and 0 <= r.score <= 1
    assert r.label is None and r.mask is None and r.normalized_score is None  # not calibrated
    assert set(r.speed) == {"preprocess", "inference", "postprocess"}
    assert r.plot().shape == (*frame.shape[:2], 3)
    record = json.loads(r.to_json())
    assert record["score"] == r.score and record["shape"] == list(frame.shape[:2]) and record["ok"]


def test_arrays_paths_and_colour_order(rgb, tmp_path):
    _, onnx_path = rgb
    rng = np.random.default_rng(0)
    rgb_frame = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    write_image(tmp_path / "f.png", rgb_frame)
    det = Detector(onnx_path)
    from_file = det(tmp_path / "f.png")
    from_bgr = det(np.ascontiguousarray(rgb_frame[:, :, ::-1]))  # numpy frames are BGR by default
    from_rgb = det(rgb_frame, color_order="RGB")
    bgra = np.concatenate([rgb_frame[:, :, ::-1], np.full((50, 70, 1), 255, np.uint8)], axis=2)
    for r in (from_bgr, from_rgb, det(bgra)):
        assert r.score == from_file.score and np.array_equal(r.anomaly_map, from_file.anomaly_map)
    assert np.array_equal(from_bgr.image, rgb_frame)  # kept as RGB for plotting
    assert not np.shares_memory(from_rgb.image, rgb_frame)  # a copy: camera loops reuse buffers
    swapped = det(rgb_frame)  # the same array read as BGR is another image
    assert swapped.score != from_file.score
    gray_frame = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    assert det(gray_frame).anomaly_map.shape == (40, 30)
    assert det(gray_frame[:, :, None]).score == det(gray_frame).score


def test_batches_give_the_same_answers(rgb):
    _, onnx_path = rgb
    frames = [np.random.default_rng(i).integers(0, 256, (20 + i, 30, 3), dtype=np.uint8) for i in range(5)]
    one = Detector(onnx_path, batch_size=1)(frames)
    many = Detector(onnx_path, batch_size=4)(frames)
    assert [r.source for r in many] == [f"array[{i}]" for i in range(5)]
    for a, b in zip(one, many):
        assert abs(a.score - b.score) <= 1e-6 and np.abs(a.anomaly_map - b.anomaly_map).max() <= 1e-6


def test_thresholds_from_the_artifact(rgb, tmp_path):
    _, onnx_path = rgb
    calibrated = tmp_path / "c.onnx"
    calibrated.write_bytes(onnx_path.read_bytes())
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    score = Detector(calibrated)(frame).score
    meta = read_metadata(calibrated)
    write_metadata(calibrated, {**meta, "thresholds": {"image": score, "pixel": 0.5, "source": "test"}})
    r = Detector(calibrated)(frame)
    assert r.label is True and r.normalized_score == pytest.approx(0.5)
    assert r.mask.dtype == bool and np.array_equal(r.mask, r.anomaly_map >= 0.5)
    r.save(tmp_path / "plot.png")
    assert read_image(tmp_path / "plot.png").shape == (32, 32, 3)


@pytest.mark.parametrize("frame, message", [
    (np.zeros((8, 8, 3), np.float32), "dtype float32"),
    (np.full((8, 8), np.nan, np.float32), "NaN"),
    (np.zeros((8, 8), np.uint16), "uint16"),
    (np.zeros((8, 8, 2), np.uint8), "shape"),
    (np.zeros((8, 8, 5), np.uint8), "shape"),
    (np.zeros((0, 8, 3), np.uint8), "zero size"),
    (np.zeros((2, 8, 8, 3), np.uint8), "shape"),
])
def test_bad_frames(rgb, frame, message):
    det = Detector(rgb[1])
    with pytest.raises(InputError, match=message):
        det(frame)
    good = np.zeros((8, 8, 3), np.uint8)
    results = det([good, frame, good])  # in a batch the bad one is reported, the rest go on
    assert [r.ok for r in results] == [True, False, True]
    assert message in results[1].error and "array[1]" in results[1].error


def test_folder_with_non_images(rgb, tmp_path):
    folder = tmp_path / "imgs"
    write_image(folder / "a.png", np.zeros((10, 10, 3), np.uint8))
    write_image(folder / "c.jpg", np.zeros((12, 10, 3), np.uint8))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.txt").write_text("hello")
    (folder / ".hidden.png").write_bytes(b"")
    results = Detector(rgb[1])(folder)
    assert [r.source.rsplit("/", 1)[-1] for r in results] == ["a.png", "b.png", "c.jpg", "notes.txt"]
    assert [r.ok for r in results] == [True, False, True, False]
    assert "b.png" in results[1].error and "not an image file" in results[3].error
    assert len(Detector(rgb[1])(str(folder / "*.png"))) == 2  # glob
    with pytest.raises(ValueError, match="has no result"):
        results[1].plot()


def test_bad_sources(rgb, tmp_path):
    det = Detector(rgb[1])
    with pytest.raises(DataError, match="no such file"):
        det(tmp_path / "missing.png")
    with pytest.raises(DataError, match="no files match"):
        det(str(tmp_path / "*.png"))
    with pytest.raises(InputError, match="expected a path"):
        det(4.2)
    results = det([tmp_path / "missing.png", 3])
    assert not any(r.ok for r in results)


def _copy_with(tmp_path, src, name, data):
    path = tmp_path / name
    path.write_bytes(data(src.read_bytes()))
    return path


def test_bad_model_files(rgb, tmp_path):
    ckpt, onnx_path = rgb
    cut = lambda b: b[: len(b) // 2]  # noqa: E731
    with pytest.raises(CheckpointError, match="cut short"):
        Detector(_copy_with(tmp_path, ckpt, "cut.safetensors", cut))
    with pytest.raises(CheckpointError, match="not a readable ONNX"):
        Detector(_copy_with(tmp_path, onnx_path, "cut.onnx", cut))
    with pytest.raises(CheckpointError, match="not a readable ONNX"):
        Detector(_copy_with(tmp_path, onnx_path, "text.onnx", lambda b: b"hello world"))
    with pytest.raises(CheckpointError, match="no such model file"):
        Detector(tmp_path / "missing.onnx")
    with pytest.raises(BackendError, match="suffix"):
        Detector(_copy_with(tmp_path, onnx_path, "model.bin", lambda b: b))


def _onnx_with_props(src, dst, props):
    import onnx

    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dst))
    return dst


def test_bad_metadata(rgb, tmp_path):
    _, onnx_path = rgb
    meta = read_metadata(onnx_path)
    with pytest.raises(CheckpointError, match="not a dad_edge"):
        Detector(_onnx_with_props(onnx_path, tmp_path / "foreign.onnx", {"author": "someone"}))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Detector(_onnx_with_props(onnx_path, tmp_path / "broken.onnx", {"dad_edge": "{not json"}))
    newer = md.dumps({**meta, "format_version": 99, "library_version": "9.0.0"})
    with pytest.raises(CheckpointError, match="upgrade dad_edge"):
        Detector(_onnx_with_props(onnx_path, tmp_path / "newer.onnx", {"dad_edge": newer}))
    bad_model = md.dumps({**meta, "model": {**meta["model"], "image_size": 7}})
    with pytest.raises(CheckpointError, match="bad model config"):
        Detector(_onnx_with_props(onnx_path, tmp_path / "badcfg.onnx", {"dad_edge": bad_model}))


def test_device_and_precision_are_never_silently_changed(rgb):
    ckpt, onnx_path = rgb
    with pytest.raises(BackendError, match="CUDA"):
        Detector(onnx_path, device="cuda")
    with pytest.raises(BackendError, match="half"):
        Detector(onnx_path, half=True)
    with pytest.raises(BackendError, match="half"):
        Detector(ckpt, device="cpu", half=True)
    with pytest.raises(BackendError, match="unknown backend"):
        Detector(onnx_path, backend="coreml")  # (openvino is a backend now)
    with pytest.raises(ConfigError):
        Detector(onnx_path, color_order="BRG")
    det = Detector(onnx_path)
    assert "onnxruntime on CPUExecutionProvider" in repr(det)


def test_import_is_light():
    assert dad_edge.__version__ and dad_edge.Result
    with pytest.raises(AttributeError):
        dad_edge.NoSuchThing  # noqa: B018


def test_cli_predict(rgb, tmp_path, capsys):
    import argparse

    from dad_edge.cli import deploy as cli_deploy

    folder = tmp_path / "imgs"
    write_image(folder / "a.png", np.zeros((10, 12, 3), np.uint8))
    write_image(folder / "sub" / "a.png", np.full((10, 12, 3), 90, np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0cut")
    (folder / "notes.txt").write_text("hello")
    parser = argparse.ArgumentParser()
    cli_deploy.add_commands(parser.add_subparsers(dest="command", required=True))

    def run(*argv):
        args = parser.parse_args(["predict", str(rgb[1]), *map(str, argv)])
        return args.func(args)

    out = tmp_path / "out"
    assert run(folder, folder / "sub" / "a.png", "--save", out) == 0
    captured = capsys.readouterr()
    assert "2 images scored" in captured.out and "2 failed" in captured.out
    assert "broken.jpg" in captured.err and "notes.txt" in captured.err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["ok"] for r in records] == [True, False, False, True]
    assert [r.get("overlay") for r in records if r["ok"]] == ["a.png", "a_1.png"]  # same stem, two files
    assert cv2.imread(str(out / "a_1.png")).shape == (10, 12, 3)
    assert run(folder / "notes.txt") == 1  # nothing scored
