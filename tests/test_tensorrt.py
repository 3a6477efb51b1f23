"""TensorRT: everything around the engine, tested here; the real build and run where TensorRT is.

This machine has no GPU and no TensorRT. The runtime and the builder are exercised against
fakes of the TensorRT and cuda-python calls they make (tensorrt_fakes.py): the fake "engine" runs
the exported ONNX graph with ONNX Runtime, reading and writing the (host-backed) "device" buffers
at the addresses the backend set, so the buffer sizing, copies, shapes and batching are real.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

import dad_edge
from dad_edge.runtime.backends import cuda_runtime
from dad_edge.runtime.backends.tensorrt_backend import check_compatible, rebuild_command
from dad_edge.model.config import preset
from dad_edge.errors import BackendError, ConfigError, DataError
from dad_edge.artifacts.engine_file import read_engine_file, write_engine_file
from dad_edge.export.onnx_export import export_onnx
from dad_edge.export.tensorrt_build import CalibrationBatches, EngineOptions, build_engine
from dad_edge.data.imageio import write_image
from deploy_support import engine_meta, generated_image, write_checkpoint
from tensorrt_fakes import install_fake_gpu


@pytest.fixture
def fake_gpu(monkeypatch):
    return install_fake_gpu(monkeypatch)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trt")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny", channels=1), seed=5)
    export_onnx(ckpt, tmp / "model.onnx")
    return tmp / "model.onnx"


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [generated_image(rng, i % 2 == 1, shape=(40 + i, 36))[:, :, 0] for i in range(n)]


# -- the runtime -------------------------------------------------------------------------

def test_engine_runs_like_onnxruntime(fake_gpu, onnx_model, tmp_path):
    plan = tmp_path / "model.plan"
    meta = build_engine(onnx_model, plan, EngineOptions(half=True, min_batch=2, opt_batch=2, max_batch=4))
    built = meta["tensorrt"]
    assert (built["version"], built["compute_capability"], built["gpu_name"]) == ("10.3.0.26", "8.7", "Fake GPU")
    assert built["precision"] == meta["export"]["precision"] == "fp16" and built["source"] == "model.onnx"
    assert built["batch"] == {"min": 2, "opt": 2, "max": 4} and built["dla_core"] is None
    config = fake_gpu.built[-1]
    assert "fp16" in config.flags and config.workspace == 4 << 30
    det = dad_edge.Detector(plan, batch_size=8)
    assert det.batch_size == 4 and "tensorrt on cuda:0 (Fake GPU)" in repr(det)
    reference = dad_edge.Detector(onnx_model)
    batch = frames(7)  # 4 + 3: two calls, the buffers sized once for 4
    for a, b in zip(det(batch), reference(batch)):
        assert a.score == b.score and np.array_equal(a.anomaly_map, b.anomaly_map)
    single = det(batch[0])  # below the profile's minimum of 2: padded, the padding dropped
    assert single.score == reference(batch[0]).score
    assert fake_gpu.cudart.mallocs == 3  # image, anomaly_map, score: once per engine
    det.close()
    assert not fake_gpu.cudart.memory


def test_fp32_build_turns_tf32_off(fake_gpu, onnx_model, tmp_path):
    build_engine(onnx_model, tmp_path / "a.plan", EngineOptions())
    assert "tf32" not in fake_gpu.built[-1].flags and "fp16" not in fake_gpu.built[-1].flags


def test_explicit_batch_flag_for_tensorrt_8(fake_gpu, onnx_model, tmp_path):
    build_engine(onnx_model, tmp_path / "a.plan", EngineOptions())
    fake_gpu.__version__ = "8.6.1.6"  # JetPack 5: explicit batch is a creation flag there
    meta = build_engine(onnx_model, tmp_path / "b.plan", EngineOptions())
    assert fake_gpu.network_flags == [0, 1 << 3] and meta["tensorrt"]["version"] == "8.6.1.6"


def test_timing_cache_and_dla(fake_gpu, onnx_model, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    meta = build_engine(onnx_model, tmp_path / "d.plan", EngineOptions(half=True, dla_core=1, timing_cache=cache))
    config = fake_gpu.built[-1]
    assert config.default_device_type == "dla" and config.DLA_core == 1 and "gpu_fallback" in config.flags
    assert cache.read_bytes() == b"old+tuned" and meta["tensorrt"]["dla_core"] == 1


def test_int8_calibration_feeds_good_images(fake_gpu, onnx_model, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        write_image(tmp_path / "good" / f"{i}.png", generated_image(rng, False))
    with pytest.warns(UserWarning, match="only 5 images"):
        meta = build_engine(onnx_model, tmp_path / "q.plan",
                            EngineOptions(int8=True, calib=tmp_path / "good", opt_batch=2, max_batch=2))
    config = fake_gpu.built[-1]
    assert {"int8", "fp16"} <= config.flags
    assert len(config.fed) == 2 and config.fed[0].shape == (2, 1, 32, 32)  # full batches only
    assert 0 <= config.fed[0].min() and config.fed[0].max() <= 255 and config.fed[0].std() > 0
    assert meta["tensorrt"]["precision"] == "int8" and meta["tensorrt"]["calibration_images"] == 4
    assert fake_gpu.cudart.memory == {}  # the calibrator's buffer is freed


def test_engine_from_another_gpu_or_tensorrt(fake_gpu, onnx_model, tmp_path):
    plan = tmp_path / "engine.plan"
    build_engine(onnx_model, plan, EngineOptions(half=True))
    fake_gpu.cudart.cc = (8, 9)
    with pytest.raises(BackendError, match=r"compute capability 8\.7 .*this device has 8\.9.*rebuild it on this "
                                           r"device: dad-edge export model\.onnx --format engine --out .*engine\.plan --half"):
        dad_edge.Detector(plan)
    fake_gpu.cudart.cc = (8, 7)
    fake_gpu.__version__ = "8.6.1.6"
    with pytest.raises(BackendError, match=r"TensorRT 10\.3\.0\.26 \(this device has TensorRT 8\.6\.1\.6\).*rebuild it"):
        dad_edge.Detector(plan)
    fake_gpu.__version__ = "10.3.0.30"  # another build of the same release: accepted
    dad_edge.Detector(plan).close()
    meta, _ = read_engine_file(plan)
    write_engine_file(plan, b"garbage", meta)  # a header fine, the engine not: TensorRT returns None
    with pytest.raises(BackendError, match="could not load .*rebuild it on this device"):
        dad_edge.Detector(plan)


def test_check_compatible_and_rebuild_command():
    meta = {"tensorrt": {"version": "8.6.1.6", "compute_capability": "7.2", "gpu_name": "Xavier",
                         "precision": "int8", "source": "tile.onnx"}}
    check_compatible(meta, "e.plan", "8.6.1.6", "7.2")
    with pytest.raises(BackendError) as err:
        check_compatible(meta, "e.plan", "10.3.0.26", "8.7", "Orin")
    text = str(err.value)
    assert "TensorRT 8.6.1.6" in text and "compute capability 7.2 (Xavier" in text and "8.7, Orin" in text
    assert rebuild_command(meta, "e.plan") == ("dad-edge export tile.onnx --format engine --out e.plan "
                                              "--int8 --calib <good images>")


def test_cuda_errors_and_devices(fake_gpu):
    cuda = cuda_runtime.Cuda(0)
    fake_gpu.cudart.limit = 10
    with pytest.raises(BackendError, match="cudaMalloc failed on cuda:0: out of memory"):
        cuda_runtime.DeviceBuffer(cuda, 100)
    with pytest.raises(BackendError, match="does not exist"):
        cuda_runtime.Cuda(3)
    assert cuda_runtime.device_index(None) == 0 and cuda_runtime.device_index("cuda:2") == 2
    with pytest.raises(BackendError, match="runs on a GPU"):
        cuda_runtime.device_index("cpu")


def test_missing_tensorrt_or_cuda_python(monkeypatch, tmp_path):
    plan = tmp_path / "e.plan"
    write_engine_file(plan, b"engine", engine_meta())
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        dad_edge.Detector(plan)
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(BackendError, match="cuda-python is not installed"):
        cuda_runtime.Cuda(0)


# -- options and calibration data (plain numpy) ---------------------------------------------

@pytest.mark.parametrize("options, message", [
    (EngineOptions(min_batch=2, opt_batch=1), "batch range"),
    (EngineOptions(max_batch=0), "batch range"),
    (EngineOptions(int8=True), "needs --calib"),
    (EngineOptions(calib=Path(".")), "only used with --int8"),
    (EngineOptions(workspace_gb=0), "workspace"),
    (EngineOptions(dla_core=0), "DLA"),
])
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        options.validate()


def test_calibration_batches(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(7):
        write_image(tmp_path / "sub" / f"{i}.png", generated_image(rng, False))
    (tmp_path / "sub" / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="only 8 images"):
        batches = CalibrationBatches(tmp_path, batch_size=3, image_size=32, channels=3)
    with pytest.warns(UserWarning, match="broken.png"):
        out = list(batches)
    assert len(out) == 2 and all(b.shape == (3, 3, 32, 32) and b.dtype == np.float32 for b in out)
    assert batches.used == 6 and batches.nbytes == 3 * 3 * 32 * 32 * 4
    with pytest.raises(DataError, match="fewer than one batch"):
        CalibrationBatches(tmp_path, batch_size=20, image_size=32, channels=3)


# -- the real thing, where the machine has it -------------------------------------------------

def test_real_engine_matches_onnxruntime(onnx_model, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine")
    pytest.importorskip("cuda", reason="cuda-python is not installed on this machine")
    try:
        cuda_runtime.Cuda(0)
    except BackendError as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    reference = dad_edge.Detector(onnx_model)
    batch = frames(6)
    expected = reference(batch)
    # Stated tolerances: fp32 engines as ONNX Runtime (TF32 off); fp16 within 2e-2 on maps and scores.
    for precision, options, tol in (("fp32", EngineOptions(max_batch=4), 1e-4),
                                    ("fp16", EngineOptions(half=True, max_batch=4), 2e-2)):
        plan = tmp_path / f"{precision}.plan"
        build_engine(onnx_model, plan, options)
        with dad_edge.Detector(plan) as det:
            got = det(batch)
        map_diff = max(float(np.abs(a.anomaly_map - b.anomaly_map).max()) for a, b in zip(got, expected))
        score_diff = max(abs(a.score - b.score) for a, b in zip(got, expected))
        print(f"\nTensorRT {precision} vs ONNX Runtime: max |map diff| {map_diff:.2e}, max |score diff| {score_diff:.2e}")
        assert map_diff <= tol and score_diff <= tol
        same = [f[:40] for f in batch]  # frames of one shape: the resident path (tensorrt_resident.py) takes them
        with dad_edge.Detector(plan) as det, dad_edge.Detector(plan, resident=True) as resident:
            for _ in range(2):  # the second call replays the captured graph
                np.testing.assert_allclose(resident.infer_batch(same)[1], det.infer_batch(same)[1], atol=1e-4)
            assert resident.backend.resident.captures >= 1
