"""The operator seam in the runtime: the Detector's batched pre-processing, the fused torch path
(dad_edge.runtime.fused) against the plain graph, the U-Net's fused-norm flag, and the GPU
pipeline benchmark's smoke mode.

Without a GPU the fused path is forced (fused=True) with CPU tensors: its stages then run in
the C extension or the numpy reference, or (fused_impl="triton") in Triton's interpreter.
"""
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import dad_edge
from dad_edge.runtime import ops
from dad_edge.runtime.backends.torch_backend import TorchBackend
from dad_edge.model.config import preset
from dad_edge.errors import ConfigError
from dad_edge.model.deploy_graph import DeployGraph
from dad_edge.export.onnx_export import export_onnx
from dad_edge.runtime.fused import FusedPipeline, fused_available
from dad_edge.data.imageio import write_image
from dad_edge.kernels import c_ext
from dad_edge.data.preprocess import to_pixels
from deploy_support import random_model, write_checkpoint

REPO = Path(__file__).resolve().parents[1]
Detector = dad_edge.Detector
MAP_ATOL, SCORE_ATOL = 1e-5, 1e-6

MODELS = {
    "two_pass_smoothed": preset("tiny", smoothing_sigma=1.0),
    "single_pass": preset("tiny", denoiser="single_pass"),
    "gray": preset("tiny", channels=1),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fused")
    return {name: write_checkpoint(tmp / f"{name}.safetensors", cfg, seed=3, std=0.15) for name, cfg in MODELS.items()}


def _frames(channels_in=3, seed=0):
    """Frames of mixed sizes (one wider than tall, one smaller than the model, one BGRA)."""
    rng = np.random.default_rng(seed)
    last = 4 if channels_in == 3 else 1
    shapes = [(50, 70, channels_in), (32, 32, channels_in), (20, 90, channels_in), (45, 33, last)]
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]


def _close(plain, fused, map_atol=MAP_ATOL, score_atol=SCORE_ATOL):
    (m0, s0), (m1, s1) = plain, fused
    assert m0.shape == m1.shape and s0.shape == s1.shape
    map_diff, score_diff = float(np.abs(m0 - m1).max()), float(np.abs(s0 - s1).max())
    assert map_diff <= map_atol, map_diff
    assert score_diff <= score_atol, score_diff
    return map_diff, score_diff


# -- the plain path stays the default where there is no GPU ------------------------------------


def test_cpu_default_is_the_plain_graph(checkpoints):
    ckpt = checkpoints["two_pass_smoothed"]
    det = Detector(ckpt, device="cpu")
    assert det.backend.fused is None
    assert fused_available("cpu") is False
    assert Detector(ckpt, device="cpu", fused=False).backend.fused is None
    forced = Detector(ckpt, device="cpu", fused=True)
    assert isinstance(forced.backend.fused, FusedPipeline)


def test_fused_option_only_for_the_torch_backend(checkpoints, tmp_path):
    onnx_path = tmp_path / "m.onnx"
    export_onnx(checkpoints["gray"], onnx_path)
    assert Detector(onnx_path, fused=False).backend.name == "onnxruntime"
    with pytest.raises(ConfigError, match="torch backend"):
        Detector(onnx_path, fused=True)


# -- the Detector's pre-processing through the seam ----------------------------------------------


class _Recorder:
    """Wraps a backend's infer and keeps the pixel batches it was given."""

    def __init__(self, backend):
        self.batches, self._infer = [], backend.infer
        backend.infer = self

    def __call__(self, x):
        self.batches.append(x.copy())
        return self._infer(x)


@pytest.mark.parametrize("form", ["default", "no_c_extension"])
def test_detector_pixels_are_to_pixels(checkpoints, tmp_path, monkeypatch, form):
    if form == "no_c_extension":
        monkeypatch.setattr(c_ext, "C_ERROR", "dad_edge._C is not built (test)")
        monkeypatch.setattr(c_ext, "_C", None)
    det = Detector(checkpoints["two_pass_smoothed"], device="cpu", batch_size=8)  # the CPU seam
    rec = _Recorder(det.backend)
    frames = _frames()
    gray = frames[1][:, :, 0]
    write_image(tmp_path / "f.png", frames[0])  # read back as RGB: a second colour order in the batch
    items = [frames[0], gray, tmp_path / "f.png", np.zeros((8, 8, 2), np.uint8), frames[2], frames[3]]
    results = det(items)
    assert [r.ok for r in results] == [True, True, True, False, True, True]  # the bad frame alone fails
    assert "array[3]" in results[3].error
    assert len(rec.batches) == 1 and rec.batches[0].shape == (5, 3, 32, 32)  # one backend call per batch
    expect = np.stack([to_pixels(frames[0], 32, 3, "BGR"), to_pixels(gray, 32, 3, "BGR"),
                       to_pixels(frames[0], 32, 3, "RGB"), to_pixels(frames[2], 32, 3, "BGR"),
                       to_pixels(frames[3], 32, 3, "BGR")])
    diff = float(np.abs(rec.batches[0] - expect).max())
    print(f"\nDetector pixels ({ops.pick('preprocess') if form == 'default' else 'reference'}) vs "
          f"preprocess.to_pixels: max |diff| {diff}")
    assert diff <= 1e-4
    for r in results:
        if r.ok:
            assert set(r.speed) == {"preprocess", "inference", "postprocess"} and r.speed["preprocess"] > 0


def test_detector_batches_and_single_frames_agree(checkpoints):
    det = Detector(checkpoints["gray"], device="cpu", batch_size=3)
    frames = _frames(channels_in=1)
    many = det(frames)
    for frame, r in zip(frames, many):
        one = det(frame)
        # torch's convolutions round differently at other batch sizes: float noise only
        assert abs(one.score - r.score) <= 1e-6 and np.abs(one.anomaly_map - r.anomaly_map).max() <= 1e-6


# -- the fused path against the plain graph ------------------------------------------------------


IMPLS = [None, "reference"] + (["c"] if c_ext.C_ERROR is None else []) + ["triton"]


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("impl", IMPLS, ids=lambda v: str(v))
def test_fused_backend_matches_the_plain_graph(checkpoints, model, impl, monkeypatch):
    cfg = MODELS[model]
    ckpt = checkpoints[model]
    # Triton runs on CUDA tensors where there is a GPU, and interpreted on CPU tensors otherwise.
    device = "cuda" if impl in (None, "triton") and torch.cuda.is_available() else "cpu"
    # On a GPU: full float32 convolutions (not TF32) so both paths round alike; the GPU GroupNorm
    # kernels still sum in other orders than the CPU's, hence the looser bound there.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    atol = (1e-4, 1e-5) if device == "cuda" else (MAP_ATOL, SCORE_ATOL)
    plain = TorchBackend(ckpt, device=device, fused=False)
    fused = TorchBackend(ckpt, device=device, fused=True, fused_impl=impl)
    assert fused.fused is not None and plain.fused is None
    c_in = 3 if cfg.channels == 3 else 1
    frames = _frames(c_in)
    interpreted = impl == "triton" and not torch.cuda.is_available()  # seconds a call: one of each
    for order in ("BGR",) if interpreted else ("BGR", "RGB"):
        pixels = ops.preprocess(frames, cfg.image_size, cfg.channels, order, normalize=False)
        expect = plain.infer(pixels)
        assert float(np.std(expect[1])) > 1e-4 and float(np.std(expect[0])) > 1e-3  # the maps tell frames apart
        map_diff, score_diff = _close(expect, fused.run(frames, order), *atol)  # uint8 frames in
        if not interpreted:
            _close(expect, fused.infer(pixels), *atol)  # the Backend interface: float pixels in
    print(f"\n{model}, fused impl={impl}: max |map diff| {map_diff:.1e}, max |score diff| {score_diff:.1e}")


def test_fused_detector_matches_the_plain_detector(checkpoints, tmp_path):
    ckpt = checkpoints["two_pass_smoothed"]
    frames = _frames()
    write_image(tmp_path / "f.png", frames[0])
    items = [frames[0], tmp_path / "f.png", np.zeros((8, 8, 2), np.uint8), frames[2], frames[3][:, :, :3]]
    plain = Detector(ckpt, batch_size=4)(items)
    fused_det = Detector(ckpt, batch_size=4, fused=True)
    fused_det.warmup(2)
    fused = fused_det(items)
    assert [r.ok for r in fused] == [r.ok for r in plain] == [True, True, False, True, True]
    for a, b in zip(plain, fused):
        if a.ok:
            assert a.anomaly_map.shape == b.anomaly_map.shape
            assert np.abs(a.anomaly_map - b.anomaly_map).max() <= MAP_ATOL and abs(a.score - b.score) <= SCORE_ATOL
            assert set(b.speed) == {"preprocess", "inference", "postprocess"}


def test_fused_pipeline_inputs_and_mask():
    cfg = MODELS["two_pass_smoothed"]
    model = random_model(cfg, seed=1, std=0.15)
    frames = np.stack([f[:, :, :3] for f in _frames()[:1]] * 3)  # one (B, H, W, C) array
    with torch.inference_mode():
        expect = DeployGraph(model)(torch.from_numpy(ops.preprocess(frames, 32, 3, "BGR", normalize=False)))
    pipe = FusedPipeline(model)
    for given in (frames, torch.from_numpy(frames), list(frames)):
        out = pipe.from_frames(given, "BGR", pixel_threshold=0.5)
        assert out.anomaly_map.shape == (3, 1, 32, 32) and out.score.shape == (3,)
        assert (out.anomaly_map - expect.anomaly_map).abs().max() <= MAP_ATOL
        assert (out.score - expect.score).abs().max() <= SCORE_ATOL
        assert torch.equal(out.mask, out.anomaly_map >= 0.5)
    with pytest.raises(ValueError, match="impl"):
        FusedPipeline(model, impl="cuda")


# -- the U-Net's fused GroupNorm + SiLU flag ------------------------------------------------------


def test_fused_norm_flag_is_off_by_default_and_never_traced(monkeypatch):
    cfg = MODELS["two_pass_smoothed"]
    model = random_model(cfg, seed=1, std=0.15)
    flags = [m.fused_norm for m in model.unet.modules() if hasattr(m, "fused_norm")]
    assert flags and not any(flags)  # training and export run plain torch
    assert "eval_abar" not in model.state_dict()  # derived buffers stay out of checkpoints
    x = torch.rand(2, 3, 32, 32) * 255
    with torch.inference_mode():
        plain = DeployGraph(model)(x)

    calls = []
    real = ops.groupnorm_silu
    monkeypatch.setattr(ops, "groupnorm_silu", lambda *a, **k: calls.append(1) or real(*a, **k))
    model.unet.use_fused_norm(True)
    with torch.inference_mode():
        fused = DeployGraph(model)(x)
    n_norms = sum(isinstance(m, torch.nn.GroupNorm) for m in model.unet.modules())
    n_attn_norms = sum(type(m).__name__ == "AttentionBlock" for m in model.unet.modules())
    assert len(calls) == n_norms - n_attn_norms  # every GroupNorm + SiLU, none of attention's plain norms
    assert torch.equal(plain.anomaly_map, fused.anomaly_map)  # CPU: torch's own ops, bit for bit

    calls.clear()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings
        torch.jit.trace(DeployGraph(model).eval(), (x,), check_trace=False)
    assert calls == []  # a trace (and so an ONNX export) sees plain torch ops
    model.unet.use_fused_norm(False)
    assert not any(m.fused_norm for m in model.unet.modules() if hasattr(m, "fused_norm"))


# -- the GPU pipeline benchmark --------------------------------------------------------------


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_pipeline", REPO / "benchmarks" / "gpu_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_pipeline_benchmark_smoke(tmp_path, capsys, monkeypatch):
    """--smoke runs the plain and fused paths once on the CPU (Triton interpreted) and checks that
    they agree; without it and without CUDA the script stops at once with a clear message."""
    args = ["--smoke", "--json", str(tmp_path / "out.json")]
    if torch.cuda.is_available():  # the real GPU mode, tiny: every row (CUDA graphs too) runs and is timed
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_pipeline.py"), "--preset", "tiny",
                               "--batch", "2", "--iters", "3", "--warmup", "1", "--json", str(tmp_path / "gpu.json")],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
        assert [r["path"] for r in rows] == ["plain", "fused", "plain+graph", "fused+graph"]
        assert all("error" not in r and r["images_per_s"] > 0 for r in rows)
        assert rows[1]["max_map_diff_vs_plain"] <= 1e-3
        return
    bench = _load_benchmark()  # in this process (conftest switched the interpreter on): no second torch import
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # main() sets it; restored afterwards
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "plain and fused paths ran and agree" in out and "max |map diff| vs plain" in out
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert {r["path"] for r in rows} == {"plain", "fused"}
    assert bench.main([]) == 2 and "needs a CUDA GPU" in capsys.readouterr().err
