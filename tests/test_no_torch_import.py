"""The edge runtime stays light: `import dad_edge` and a Detector on .onnx / .plan never load torch.

Checked in a fresh interpreter, because this test process has torch loaded already.
"""
import json
import subprocess
import sys
from pathlib import Path

from dad_edge.model.config import preset
from dad_edge.artifacts.engine_file import write_engine_file
from dad_edge.export.onnx_export import export_onnx
from deploy_support import engine_meta, write_checkpoint

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import numpy as np
import dad_edge
from dad_edge.errors import BackendError
after_import = sorted(m for m in ("torch", "onnxruntime", "onnx") if m in sys.modules)
det = dad_edge.Detector(sys.argv[1])
r = det(np.zeros((40, 30, 3), np.uint8))
r.plot(), r.to_json(), det([np.zeros((8, 8), np.uint8), "missing.png"])
try:
    dad_edge.Detector(sys.argv[2])
    engine = "loaded"
except BackendError as exc:
    engine = str(exc)
print(json.dumps({"after_import": after_import, "engine": engine, "loaded": sorted(
    m for m in ("torch", "onnx", "safetensors", "tensorrt", "onnxruntime") if m in sys.modules)}))
"""


def test_detector_on_onnx_and_engine_never_imports_torch(tmp_path):
    ckpt = write_checkpoint(tmp_path / "m.safetensors", preset("tiny"))
    export_onnx(ckpt, tmp_path / "m.onnx")
    write_engine_file(tmp_path / "m.plan", b"engine bytes", engine_meta())
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "m.onnx"), str(tmp_path / "m.plan")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []  # import dad_edge: numpy and OpenCV only
    # onnxruntime for the .onnx file, nothing else; the engine fails for want of TensorRT
    # (or of a GPU) here, after having read its header without torch.
    assert report["loaded"] in (["onnxruntime"], ["onnxruntime", "tensorrt"])
    if "tensorrt" not in report["loaded"]:
        assert "TensorRT is not installed" in report["engine"]
