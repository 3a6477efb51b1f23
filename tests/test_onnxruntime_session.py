"""The ONNX Runtime backend's session settings (onnxruntime_backend.SESSION): applied, overridable,
checked, and never a different function."""
import numpy as np
import pytest

from dad_edge.errors import ConfigError
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.config import preset
from dad_edge.runtime.backends.onnxruntime_backend import SESSION, OnnxRuntimeBackend
from deploy_support import write_checkpoint

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("session")
    export_onnx(write_checkpoint(tmp / "m.safetensors", preset("tiny")), tmp / "m.onnx")
    return tmp / "m.onnx"


def test_settings_reach_the_session_and_change_no_number(onnx_file):
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, 32, 32)).astype(np.float32)
    default = OnnxRuntimeBackend(onnx_file, device="cpu")
    options = default.session.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == SESSION["intra_op_num_threads"]
    assert options.enable_cpu_mem_arena is SESSION["enable_cpu_mem_arena"]
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # SESSION's choice
    other = {"graph_optimization_level": "basic", "intra_op_num_threads": 1, "enable_cpu_mem_arena": False,
             "execution_mode": "parallel", "allow_spinning": True}
    tuned = OnnxRuntimeBackend(onnx_file, device="cpu", session=other)
    options = tuned.session.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.intra_op_num_threads == 1 and options.enable_cpu_mem_arena is False
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    (m0, s0), (m1, s1) = default.infer(x), tuned.infer(x)
    assert np.abs(m0 - m1).max() < 1e-5 and np.abs(s0 - s1).max() < 1e-5 and np.ptp(s0) > 0


@pytest.mark.parametrize("session, match", [({"threads": 2}, "threads"),
                                            ({"graph_optimization_level": "max"}, "'max'"),
                                            ({"execution_mode": "async"}, "'async'")])
def test_bad_settings(onnx_file, session, match):
    with pytest.raises(ConfigError, match=match):
        OnnxRuntimeBackend(onnx_file, device="cpu", session=session)


def test_the_detector_passes_session_settings_to_onnxruntime_only(onnx_file):
    import dad_edge

    with dad_edge.Detector(onnx_file, session={"allow_spinning": True, "intra_op_num_threads": 1}) as det:
        options = det.backend.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert options.intra_op_num_threads == 1
    with pytest.raises(ConfigError, match="threads"):  # checked by the backend, named
        dad_edge.Detector(onnx_file, session={"threads": 2})
    checkpoint = onnx_file.with_suffix(".safetensors")
    with pytest.raises(ConfigError, match=r"session=\{'allow_spinning': True\} applies to the onnxruntime backend; "
                                          r".* runs on torch"):
        dad_edge.Detector(checkpoint, session={"allow_spinning": True})
