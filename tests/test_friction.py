"""Friction a new user met (#15 part 7), each fixed and checked through the public interface:
streams given to det() / predict, plot()'s colour order, Result.boxes and repr, predict --save-maps,
--good/--bad, --help, --batch, the progress bar, train --config."""
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import cv2
import numpy as np
import pytest

import dad_edge
from dad_edge.artifacts.metadata import Thresholds
from dad_edge.cli import build_parser, main
from dad_edge.data.imageio import read_image, write_image
from dad_edge.errors import ConfigError, DataError, InputError
from dad_edge.export.metadata_io import read_metadata
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.config import preset
from dad_edge.runtime.result import Result
from dad_edge.stream.outputs import anomaly_boxes
from dad_edge.training.metrics import f1_max
from deploy_support import write_category, write_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny gray ONNX model and a small MVTec-layout category (test/good, test/spot with masks)."""
    tmp = tmp_path_factory.mktemp("friction")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny", channels=1), seed=2, std=0.15)
    onnx = tmp / "m.onnx"
    export_onnx(ckpt, onnx)
    return onnx, write_category(tmp / "cat", n_train=6), tmp


def hand_result(label=True, with_mask=True, thresholds=None):
    amap = np.zeros((60, 80), np.float32)
    amap[10:20, 5:35] = 0.9
    amap[12, 6] = 0.95  # the large region's peak
    amap[40:44, 60:63] = 0.7
    return Result("x.png", score=0.8, normalized_score=0.6, label=label, anomaly_map=amap,
                  mask=amap >= 0.5 if with_mask else None, image=np.full((60, 80, 3), 100, np.uint8),
                  thresholds=thresholds)


# -- streams handed to what takes images ------------------------------------------------------

def test_camera_url_and_video_point_to_the_stream(setup, tmp_path, capsys):
    onnx, _, _ = setup
    det = dad_edge.Detector(onnx)
    with pytest.raises(InputError, match=r"camera index.*det\.stream\(0\).*dad-edge stream MODEL --source 0"):
        det(0)
    with pytest.raises(InputError, match="network stream.*dad-edge stream"):
        det("rtsp://host/cam")
    video = tmp_path / "line.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 24))
    for _ in range(3):
        writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    with pytest.raises(DataError, match=r"line\.mp4 is a video.*dad-edge stream MODEL --source"):
        det(video)
    assert main(["predict", str(onnx), str(video)]) == 1  # nothing scored
    err = capsys.readouterr().err
    assert "is a video" in err and "dad-edge stream" in err and "not a readable image" not in err
    # The stream itself still plays it.
    results = list(det.stream(str(video)))
    assert len(results) == 3 and all(r.ok for r in results)


# -- Result ---------------------------------------------------------------------------------

def test_plot_is_bgr_by_default_and_says_so(tmp_path):
    r = hand_result()
    bgr, rgb = r.plot(), r.plot(color_order="RGB")
    assert np.array_equal(bgr, rgb[:, :, ::-1]) and not np.array_equal(bgr, rgb)
    assert "BGR" in Result.plot.__doc__
    r.save(tmp_path / "x.png")  # files are written in their true colours
    assert np.array_equal(read_image(tmp_path / "x.png"), rgb)
    with pytest.raises(ConfigError, match="color_order='HSV'"):
        r.plot(color_order="HSV")


def test_boxes_are_the_events_regions_with_a_score():
    r = hand_result()
    assert r.boxes == [(5, 10, 30, 10, pytest.approx(0.95)), (60, 40, 3, 4, pytest.approx(0.7))]
    assert [list(b[:4]) for b in r.boxes] == anomaly_boxes(r)  # one implementation for both
    assert hand_result(label=False).boxes == []  # a good image has no anomalous regions
    assert hand_result(with_mask=False).boxes == []  # uncalibrated: nothing to threshold with
    by_image = hand_result(with_mask=False, thresholds=Thresholds(image=0.8))
    assert by_image.boxes == [(5, 10, 30, 10, pytest.approx(0.95))]
    assert json.loads(r.to_json())["boxes"] == [[5, 10, 30, 10, pytest.approx(0.95)], [60, 40, 3, 4, pytest.approx(0.7)]]


def test_repr_leaves_the_arrays_out():
    r = hand_result()
    r.anomaly_map = np.zeros((1080, 1920), np.float32)
    text = repr(r)
    assert "array" not in text and "anomaly_map" not in text and len(text) < 300
    assert "score=0.8" in text and "label=True" in text


def test_predict_save_maps_writes_the_raw_map_and_the_mask(setup, tmp_path):
    onnx, category, _ = setup
    images = category / "test" / "spot"
    assert main(["predict", str(onnx), str(images), "--save-maps", str(tmp_path), "--pixel-threshold", "0.5"]) == 0
    det = dad_edge.Detector(onnx, pixel_threshold=0.5)
    for path in sorted(images.glob("*.png")):
        r = det(path)
        saved = cv2.imread(str(tmp_path / f"{path.stem}_map.tiff"), cv2.IMREAD_UNCHANGED)
        assert saved.dtype == np.float32 and np.array_equal(saved, r.anomaly_map)  # value for value
        mask = cv2.imread(str(tmp_path / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask, r.mask.astype(np.uint8) * 255)


# -- folders without masks ------------------------------------------------------------------------

def test_eval_and_calibrate_on_good_and_bad_folders(setup, tmp_path, capsys):
    onnx, category, _ = setup
    good, bad = category / "test" / "good", category / "test" / "spot"
    assert main(["eval", str(onnx), "--good", str(good), "--bad", str(bad), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "image-level metrics only" in out and "ground_truth" not in out
    assert main(["eval", str(onnx), "--good", str(good), "--bad", str(bad), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    with_masks = dad_edge.evaluate(onnx, category)
    assert metrics["image_auroc"] == with_masks["image_auroc"] and metrics["pixel_auroc"] is None
    model = tmp_path / "c.onnx"
    model.write_bytes(onnx.read_bytes())
    assert main(["calibrate", str(model), "--good", str(good), "--bad", str(bad), "--quiet"]) == 0
    assert "no masks" in capsys.readouterr().out
    results = dad_edge.Detector(onnx)([*sorted(good.glob("*.png")), *sorted(bad.glob("*.png"))])
    labels = np.array([0] * len(list(good.glob("*.png"))) + [1] * len(list(bad.glob("*.png"))))
    stored = read_metadata(model)["thresholds"]
    assert stored["image"] == pytest.approx(f1_max(labels, np.array([r.score for r in results]))[1])
    for argv, message in ((["--good", str(good)], "--good needs --bad"),
                          (["--data", str(category), "--bad", str(bad)], "not both"), ([], "--data DIR")):
        assert main(["eval", str(onnx), *argv]) == 2
        assert message in capsys.readouterr().err


# -- --help, option names, progress ------------------------------------------------------------

def test_help_shows_defaults_and_an_example_for_every_command():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        text = sub.format_help()
        assert "examples:" in text and f"dad-edge {name}" in text.split("examples:")[1], name
        assert "--batch-size" not in text, name  # the old name works but is not shown
    predict = commands["predict"].format_help()
    assert "--batch N" in predict and "(default: 8)" in predict


@pytest.mark.parametrize("command", ["predict", "eval", "calibrate", "stream", "train", "benchmark"])
def test_batch_and_its_old_name(command):
    parser = build_parser()
    head = {"predict": ["predict", "m.onnx", "x.png"], "eval": ["eval", "m.onnx", "--data", "d"],
            "calibrate": ["calibrate", "m.onnx", "--data", "d"], "stream": ["stream", "m.onnx", "--source", "0"],
            "train": ["train", "--data", "d", "--out", "o"], "benchmark": ["benchmark", "m.onnx"]}[command]
    new = parser.parse_args(head + ["--batch", "3"]).batch_size
    old = parser.parse_args(head + ["--batch-size", "3"]).batch_size
    assert new == old and new in (3, [3])


def _stderr_on_a_terminal(argv):
    """Run `dad-edge` with stderr on a pseudo-terminal; -> what it wrote there."""
    leader, follower = pty.openpty()
    # A terminal 120 columns wide: a new pty is 0 x 0, where tqdm draws a bar of no width.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "dad_edge", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=follower, env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(setup, tmp_path):
    onnx, category, _ = setup
    model = tmp_path / "c.onnx"
    model.write_bytes(onnx.read_bytes())
    shown = _stderr_on_a_terminal(["calibrate", str(model), "--data", str(category), "--batch", "2"])
    # tqdm's "n/12" over the 12 test images (a fast run may close the bar before it redraws at 12/12)
    assert "calibrate:" in shown and "/12 [" in shown
    shown = _stderr_on_a_terminal(["eval", str(onnx), "--data", str(category), "--batch", "2"])
    assert "eval:" in shown and "/12 [" in shown
    assert "/12 [" not in _stderr_on_a_terminal(["eval", str(onnx), "--data", str(category), "--quiet"])
    piped = subprocess.run([sys.executable, "-m", "dad_edge", "eval", str(onnx), "--data", str(category)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "/12 [" not in piped.stderr  # not a terminal: no bar


# -- train --config --------------------------------------------------------------------------------

def _resolved(capsys, *argv):
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    assert main(["train", *argv, "--print-config"]) == 0
    return tomllib.loads(capsys.readouterr().out)


def test_train_config_files_and_flags(setup, tmp_path, capsys):
    _, category, _ = setup
    toml_file = tmp_path / "a.toml"
    toml_file.write_text(f'data = "{category}"\nout = "{tmp_path / "run"}"\npreset = "tiny"\nepochs = 1\n'
                         'batch-size = 2\nlr_unet = 0.002\nno-amp = true\nseed = 4\n')
    resolved = _resolved(capsys, "--config", str(toml_file), "--seed", "0")
    assert resolved["seed"] == 0  # given on the command line, even at its default value: the flag wins
    assert (resolved["preset"], resolved["epochs"], resolved["batch"], resolved["lr-unet"]) == ("tiny", 1, 2, 0.002)
    assert resolved["no-amp"] is True and resolved["select"] == "val"  # the rest keep their defaults
    # --print-config writes a file that reads back to the same options.
    saved = tmp_path / "b.toml"
    assert main(["train", "--config", str(toml_file), "--print-config"]) == 0
    saved.write_text(capsys.readouterr().out)
    assert _resolved(capsys, "--config", str(saved)) == _resolved(capsys, "--config", str(toml_file))
    json_file = tmp_path / "a.json"
    json_file.write_text(json.dumps({"data": str(category), "out": str(tmp_path / "run"), "preset": "tiny",
                                     "epochs": 1, "batch": 2, "device": "cpu", "quiet": True,
                                     "method": "diffusionad"}))
    assert main(["train", "--config", str(json_file)]) == 0  # trains from the file alone
    capsys.readouterr()
    trained = read_metadata(tmp_path / "run" / "model.safetensors")["model"]
    tiny = json.loads(json.dumps(preset("tiny").to_dict()["unet"]))  # tuples as JSON lists
    assert trained["unet"] == tiny  # the file's preset, not the default compact
    for content, message in (('{"epoch": 1}', "unknown option 'epoch'; did you mean 'epochs'"),
                             ('{"batch": 0}', "batch: 0 is not accepted"),
                             ('{"select": "best"}', "must be one of val, last"),
                             ('{"resume": "yes"}', "must be true or false"),
                             ('[1, 2]', "table / object")):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        assert main(["train", "--config", str(bad), "--data", "d", "--out", "o", "--epochs", "1"]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("a: 1")
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    assert ".json or .toml" in capsys.readouterr().err
