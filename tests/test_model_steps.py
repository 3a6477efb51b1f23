"""One model function (issue 11, part 2): DiffusionAD.forward is a sequence of named steps
(prepare -> networks -> combine -> segment -> score), the fused torch path runs those very
steps with their fused ops, an export traces them in plain torch, and every formula has
one source (NoiseSchedule.add_noise, schedule.eval_coefficients, combine_ref.guided_x0,
score_ref.gaussian_taps).
"""
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dad_edge.kernels import preprocess_noise_ref
from dad_edge.kernels.combine_ref import combine_ref, guided_x0
from dad_edge.kernels.score_ref import gaussian_taps
from dad_edge.model.config import preset
from dad_edge.model.deploy_graph import DeployGraph
from dad_edge.model.diffusion_ad import DiffusionAD
from dad_edge.model.schedule import eval_coefficients
from dad_edge.runtime import ops
from dad_edge.runtime.fused import FusedPipeline
from deploy_support import random_model

REPO = Path(__file__).resolve().parents[1]
STEPS = ["prepare", "networks", "combine", "segment", "score"]
CONFIGS = {"two_pass_smoothed": preset("tiny", smoothing_sigma=1.0), "single_pass": preset("tiny", denoiser="single_pass")}


def _pixels(cfg, b=3, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (b, cfg.channels, cfg.image_size, cfg.image_size)).astype(np.float32))


def _record_steps(model, calls):
    """Make `model` note each step it runs (the real step runs: the wrapper only records its name)."""
    for name in STEPS:
        real = getattr(model, name)

        def step(*args, _name=name, _real=real, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        object.__setattr__(model, name, step)


def _record_ops(monkeypatch, calls):
    for name in ("combine", "score", "preprocess_noise"):
        real = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _n=name, _r=real, **k: calls.append(_n) or _r(*a, **k))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_and_the_fused_pipeline_run_the_same_named_steps(name, monkeypatch):
    cfg = CONFIGS[name]
    model = random_model(cfg, seed=1, std=0.15)
    pixels = _pixels(cfg)
    steps, fused_ops = [], []
    _record_steps(model, steps)
    _record_ops(monkeypatch, fused_ops)
    with torch.inference_mode():
        plain = DeployGraph(model)(pixels)
    assert steps == STEPS and fused_ops == []  # the plain forward: the steps, no fused op

    pipe = FusedPipeline(model, impl="reference")
    steps.clear()
    out = pipe.from_pixels(pixels, pixel_threshold=0.5)
    assert steps == STEPS and fused_ops == ["combine", "score"]  # the same steps, through their fused ops
    steps.clear(), fused_ops.clear()
    frames = pixels.permute(0, 2, 3, 1).to(torch.uint8).numpy()[..., ::-1].copy()  # the same pixels as BGR frames
    from_frames = pipe.from_frames(frames, "BGR")
    # Frames are pre-processed and noised by the fused preprocess_noise; the model's steps do the rest.
    assert steps == STEPS[1:] and fused_ops == ["preprocess_noise", "combine", "score"]

    for got in (out, from_frames):
        assert (got.anomaly_map - plain.anomaly_map).abs().max() <= 1e-6
        assert (got.score - plain.score).abs().max() <= 1e-6
    assert torch.equal(out.mask, out.anomaly_map >= 0.5)


def test_fused_model_forward_is_the_fused_pipeline_bit_for_bit():
    """With use_fused on, model(x) runs the fused ops itself: the same function as FusedPipeline."""
    cfg = CONFIGS["two_pass_smoothed"]
    pixels = _pixels(cfg, seed=4)
    pipe = FusedPipeline(random_model(cfg, seed=2, std=0.15), impl="reference")
    fused_model = random_model(cfg, seed=2, std=0.15).use_fused(True, impl="reference")
    assert fused_model.fused_ops and fused_model.unet.fused_norm
    with torch.inference_mode():
        a = DeployGraph(fused_model)(pixels)
    b = pipe.from_pixels(pixels)
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.score, b.score)
    fused_model.use_fused(False)
    assert not fused_model.fused_ops and fused_model.fused_impl is None and not fused_model.unet.fused_norm


def test_export_of_a_fused_model_traces_the_plain_steps(monkeypatch):
    cfg = CONFIGS["two_pass_smoothed"]
    model = random_model(cfg, seed=3, std=0.15)
    pixels = _pixels(cfg, b=2)
    with torch.inference_mode():
        plain = DeployGraph(model)(pixels)
    model.use_fused(True, impl="reference")
    calls = []
    _record_ops(monkeypatch, calls)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(DeployGraph(model).eval(), (pixels,), check_trace=False)
    assert calls == []  # a trace (so an ONNX export) never sees the fused ops
    with torch.no_grad():
        maps, scores = traced(pixels)
    assert torch.equal(maps, plain.anomaly_map) and torch.equal(scores, plain.score)


def test_the_fused_path_holds_no_formula_of_its_own():
    """runtime/fused.py keeps buffers and the frame pre-processing only: noising, embeddings,
    combine, sigmoid, smoothing and top-k are the model's steps."""
    src = (REPO / "dad_edge" / "runtime" / "fused.py").read_text()
    code = "\n".join(line.split("#")[0] for line in src.split('"""')[2].splitlines())  # after the docstring
    for formula in ("sigmoid", "topk", "sqrt", ".expand(", "segnet", "forward_embedded", "ops.combine",
                    "ops.score", "eval_timesteps", "coefficients", "unet."):
        assert formula not in code, formula


# -- one source per formula -----------------------------------------------------------------------


def test_eval_coefficients_are_derived_in_one_place():
    """Only the schedule computes Coefficients; the model, the fused path and the kernels read
    eval_coefficients(cfg)."""
    offenders = []
    for root in ("dad_edge", "kernels", "export"):
        for path in (REPO / root).rglob("*.py"):
            if path.name != "schedule.py" and re.search(r"\.coefficients\(", path.read_text()):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    cfg = preset("tiny", t_small=150, t_large=700)
    model = DiffusionAD(cfg)
    assert model.eval_coefs == eval_coefficients(cfg) and eval_coefficients(cfg) is eval_coefficients(cfg)
    assert preprocess_noise_ref.noise_coefficients is eval_coefficients  # the kernels' name for it


def test_plain_combine_is_the_reference_combine():
    """The model's combine step and the kernels' reference are one formula: equal to the bit."""
    cfg = CONFIGS["two_pass_smoothed"]
    model = random_model(cfg, seed=5, std=0.15)
    x = _pixels(cfg) * (2 / 255) - 1
    with torch.inference_mode():
        x_t = model.prepare(x)
        eps = model.networks(x_t, model.step_embeddings(x.shape[0]))
        seg_in = model.combine(x, eps, x_t)
    expect = combine_ref(x, eps, model.noise, eval_coefficients(cfg), cfg.guidance_w)
    assert torch.equal(seg_in, expect)
    x0 = seg_in[:, cfg.channels:]
    assert (x0.abs() == 1).any() and (x0.abs() < 1).any()  # the clamps are exercised, the rest is not clamped
    # The training path's formula is the same one, with per-sample coefficient tensors.
    b = x.shape[0]
    abar = model.alphas_cumprod
    t_s, t_l = torch.full((b,), cfg.t_small), torch.full((b,), cfg.t_large)
    x0_train = model.norm_guided_x0(x_t[:b], x_t[b:], eps[:b], eps[b:], abar[t_s].reshape(-1, 1, 1, 1),
                                    abar[t_l].reshape(-1, 1, 1, 1))
    assert (x0_train - x0).abs().max() <= 1e-6  # float32 abar against float64 constants
    coefs = tuple(torch.tensor(c) for c in eval_coefficients(cfg))
    assert torch.allclose(guided_x0(x_t[:b], x_t[b:], eps[:b], eps[b:], coefs, cfg.guidance_w), x0, atol=1e-6)


def test_model_smoothing_uses_the_kernels_taps():
    for sigma in (0.5, 1.0, 3.0):
        model = DiffusionAD(preset("tiny", smoothing_sigma=sigma))
        np.testing.assert_array_equal(model.smoothing.numpy(), gaussian_taps(sigma))
