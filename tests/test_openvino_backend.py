"""OpenVINO backend: the same .onnx as ONNX Runtime, or an IR written by `dad-edge export --format
openvino`; the same numbers, torch-free, clear errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'dad_edge[openvino]')")

import dad_edge  # noqa: E402
from dad_edge.artifacts import metadata as md  # noqa: E402
from dad_edge.cli import main  # noqa: E402
from dad_edge.errors import BackendError, CheckpointError, ConfigError  # noqa: E402
from dad_edge.export.metadata_io import read_metadata, write_metadata  # noqa: E402
from dad_edge.export.onnx_export import export_onnx  # noqa: E402
from dad_edge.export.openvino_export import export_openvino  # noqa: E402
from dad_edge.model.config import preset  # noqa: E402
from deploy_support import write_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# fp32 graphs on two runtimes: summation order differs, nothing else.
ATOL_MAP, ATOL_SCORE = 1e-4, 1e-5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openvino")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny", smoothing_sigma=1.0))
    export_onnx(ckpt, tmp / "m.onnx")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40 + 8 * i, 36, 3), dtype=np.uint8) for i in range(5)]
    with dad_edge.Detector(tmp / "m.onnx", backend="onnxruntime") as det:
        reference = det.infer_batch(frames)
    return {"tmp": tmp, "ckpt": ckpt, "onnx": tmp / "m.onnx", "frames": frames, "reference": reference}


def _compare(det, model):
    maps, scores = det.infer_batch(model["frames"])
    ref_maps, ref_scores = model["reference"]
    assert np.abs(maps - ref_maps).max() <= ATOL_MAP
    assert np.abs(scores - ref_scores).max() <= ATOL_SCORE
    assert np.ptp(scores) > 1e-4  # the frames differ, so must their scores: not a constant output


def test_openvino_reads_the_onnx_file_and_equals_onnxruntime(model):
    with dad_edge.Detector(model["onnx"], backend="openvino", batch_size=2) as det:
        assert det.backend.name == "openvino" and det.backend.device == "CPU"
        assert det.meta == read_metadata(model["onnx"])
        _compare(det, model)
        assert det(model["frames"][0]).anomaly_map.shape == (40, 36)


def test_ir_export_keeps_metadata_and_numbers(model):
    xml = model["tmp"] / "m.xml"
    meta = export_openvino(model["onnx"], xml)
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert meta["openvino"]["source"] == "m.onnx" and meta["openvino"]["version"] == ov.get_version()
    assert read_metadata(xml) == meta and meta["model"] == read_metadata(model["onnx"])["model"]
    with dad_edge.Detector(xml) as det:  # chosen by the suffix
        assert det.backend.name == "openvino"
        _compare(det, model)
    # `dad-edge calibrate` rewrites thresholds in place: they land in the IR and are read back.
    write_metadata(xml, {**meta, "thresholds": md.Thresholds(0.5, 0.6, "test").to_dict()})
    with dad_edge.Detector(xml) as det:
        assert det.thresholds == md.Thresholds(0.5, 0.6, "test")
        _compare(det, model)


def test_cli_export_openvino(model, tmp_path, capsys):
    out = tmp_path / "cli.xml"
    assert main(["export", str(model["ckpt"]), "--format", "openvino", "--out", str(out)]) == 0
    assert "OpenVINO IR" in capsys.readouterr().out and out.with_suffix(".bin").is_file()
    with dad_edge.Detector(out) as det:
        _compare(det, model)
    assert main(["export", str(model["onnx"]), "--format", "openvino", "--out", str(tmp_path / "x.bin")]) == 2
    assert "an .xml file" in capsys.readouterr().err


def test_errors(model, tmp_path):
    with pytest.raises(BackendError, match="CPU plugin"):
        dad_edge.Detector(model["onnx"], backend="openvino", device="cuda")
    with pytest.raises(BackendError, match="half=True"):
        dad_edge.Detector(model["onnx"], backend="openvino", half=True)
    with pytest.raises(ConfigError, match="torch backend"):
        dad_edge.Detector(model["onnx"], backend="openvino", fused=True)
    junk = tmp_path / "junk.xml"
    junk.write_text("<net>cut short")
    with pytest.raises(CheckpointError, match="junk.xml is not a readable"):
        dad_edge.Detector(junk)
    import onnx  # an ONNX model that is not a dad_edge one: no metadata

    proto = onnx.load(str(model["onnx"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    with pytest.raises(CheckpointError, match="not a dad_edge one"):
        dad_edge.Detector(tmp_path / "plain.onnx", backend="openvino")


SCRIPT = """
import json, sys
import numpy as np
import dad_edge
scores = []
for path, backend in ((sys.argv[1], "openvino"), (sys.argv[2], None)):
    with dad_edge.Detector(path, backend=backend) as det:
        scores.append(det(np.zeros((40, 30, 3), np.uint8)).score)
print(json.dumps({"scores": scores, "torch": "torch" in sys.modules}))
"""


def test_openvino_detector_never_imports_torch(model):
    xml = model["tmp"] / "free.xml"
    export_openvino(model["onnx"], xml)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model["onnx"]), str(xml)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["torch"] is False and abs(report["scores"][0] - report["scores"][1]) < ATOL_SCORE
