"""TensorRTBackend(resident=True) (backends/tensorrt_resident.py) without TensorRT or a GPU.

The TensorRT and cuda-python calls are the fakes of tensorrt_fakes.py (an engine that runs the ONNX
file with ONNX Runtime on host-backed "device" buffers; stream capture records work and a graph launch
replays it). The pre-processing kernel is the real kernels/preprocess_noise.cu compiled for the CPU
(cuda_emu_support.py), launched through cuda_loader's argument packing. What this checks: the resident
call gives the host path's numbers, captures one graph per batch shape and replays it, captures again
when the engine's buffers grow, falls back to plain calls where a capture fails, leaves batches it does
not take to the host path, and frees what it allocated.
"""
import numpy as np
import pytest

import dad_edge
from dad_edge.export.onnx_export import export_onnx
from dad_edge.export.tensorrt_build import EngineOptions, build_engine
from dad_edge.kernels import cuda_loader
from dad_edge.model.config import preset
from dad_edge.runtime import ops
from dad_edge.runtime.backends.tensorrt_resident import launch_preprocess
from cuda_emu_support import build_emulated_kernels
from deploy_support import write_checkpoint
from tensorrt_fakes import install_fake_gpu


@pytest.fixture(scope="module")
def emu_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("emu")


@pytest.fixture
def gpu(monkeypatch, emu_folder):
    """The fake TensorRT / cuda-python, with the emulated kernels launched on the fake stream."""
    trt = install_fake_gpu(monkeypatch)
    kernels = build_emulated_kernels(emu_folder, submit=trt.cudart.submit)
    if kernels is None:
        pytest.skip("no C++ compiler for the CPU emulation of the CUDA kernels")
    monkeypatch.setattr(cuda_loader, "CudaKernels", lambda index=0: kernels)
    trt.kernels = kernels
    return trt


@pytest.fixture(scope="module")
def onnx_rgb(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trt_resident")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny", smoothing_sigma=1.0), seed=3, std=0.15)
    export_onnx(ckpt, tmp / "model.onnx")
    return tmp / "model.onnx"


def _frames(n, shape=(45, 38, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def _engine(gpu, onnx, tmp_path, **batch):
    plan = tmp_path / "model.plan"
    build_engine(onnx, plan, EngineOptions(**batch))
    return plan


def test_preprocess_launch_fills_the_engine_input_as_the_host_does(emu_folder):
    kernels = build_emulated_kernels(emu_folder)
    if kernels is None:
        pytest.skip("no C++ compiler for the CPU emulation of the CUDA kernels")
    for order, cin, channels in (("BGR", 3, 3), ("RGB", 3, 3), ("BGR", 1, 1), ("RGB", 4, 3)):
        frames = np.stack(_frames(3, shape=(45, 38, cin), seed=cin))
        engine_input = np.full((3, channels, 32, 32), np.nan, np.float32)
        launch_preprocess(kernels, frames.ctypes.data, 3, frames.shape[1:], engine_input.ctypes.data, 32, channels,
                          order)
        expected = ops.preprocess(list(frames), 32, channels, order, normalize=False)
        np.testing.assert_allclose(engine_input, expected, atol=1e-4)


def test_resident_engine_gives_the_host_paths_numbers(gpu, onnx_rgb, tmp_path):
    plan = _engine(gpu, onnx_rgb, tmp_path, max_batch=4)
    frames = _frames(6)  # batches of 4 and 2: two shapes, two graphs
    with dad_edge.Detector(plan, batch_size=4) as host, dad_edge.Detector(plan, batch_size=4, resident=True) as det:
        assert det.backend.resident is not None and not det.backend.prepares_on_host
        m0, s0 = host.infer_batch(frames)
        for _ in range(3):
            m1, s1 = det.infer_batch(frames)
            np.testing.assert_allclose(m1, m0, atol=1e-5)
            np.testing.assert_allclose(s1, s0, atol=1e-5)
        resident = det.backend.resident
        assert resident.captures == 2 and len(gpu.cudart.execs) == 2  # one graph per batch shape, kept
        assert gpu.cudart.graph_launches == 6  # every call after its capture replays
        assert gpu.kernels.launches.count("preprocess_noise") == 2 * 2  # captured once, and once before it
        r = det.predict(frames[:2])  # the Result path through it too
        assert [x.score for x in r] == pytest.approx(s0[:2].tolist(), abs=1e-5)
    assert not gpu.cudart.memory and not gpu.cudart.pinned and not gpu.cudart.execs  # all released


def test_graphs_are_captured_again_when_the_engine_buffers_grow(gpu, onnx_rgb, tmp_path):
    plan = _engine(gpu, onnx_rgb, tmp_path, max_batch=4)
    with dad_edge.Detector(plan, batch_size=4, resident=True) as det:
        small = _frames(2)
        _, before = det.infer_batch(small)  # buffers for 2, graph for 2
        det.infer_batch(_frames(4, seed=1))  # buffers grow to 4: the graph of 2 holds freed addresses
        _, after = det.infer_batch(small)
        np.testing.assert_allclose(after, before, atol=1e-6)
        assert det.backend.resident.captures == 3 and len(gpu.cudart.execs) == 2  # 2, 4, then 2 again


def test_an_uncapturable_enqueue_runs_without_a_graph(gpu, onnx_rgb, tmp_path):
    plan = _engine(gpu, onnx_rgb, tmp_path, max_batch=4)
    frames = _frames(3)
    with dad_edge.Detector(plan, batch_size=4) as host, dad_edge.Detector(plan, batch_size=4, resident=True) as det:
        gpu.cudart.invalidate_capture = True
        _, s0 = host.infer_batch(frames)
        for _ in range(2):
            _, s1 = det.infer_batch(frames)
            np.testing.assert_allclose(s1, s0, atol=1e-5)
        assert det.backend.resident.captures == 0 and gpu.cudart.graph_launches == 0 and not gpu.cudart.execs


def test_batches_the_resident_path_does_not_take(gpu, onnx_rgb, tmp_path):
    plan = _engine(gpu, onnx_rgb, tmp_path, min_batch=2, opt_batch=2, max_batch=4)
    mixed = _frames(2) + _frames(1, shape=(30, 30, 3))
    with dad_edge.Detector(plan, batch_size=4) as host, dad_edge.Detector(plan, batch_size=4, resident=True) as det:
        np.testing.assert_allclose(det.infer_batch(mixed)[1], host.infer_batch(mixed)[1], atol=1e-6)
        one = _frames(1)  # below the profile's minimum: the host path pads it
        np.testing.assert_allclose(det.infer_batch(one)[1], host.infer_batch(one)[1], atol=1e-6)
        assert not det.backend.resident._shapes and gpu.cudart.graph_launches == 0
