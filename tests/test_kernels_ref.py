"""The kernel references (kernels/*_ref.py) against the code they stand for.

preprocess_noise_ref and combine_ref must reproduce the tensors DiffusionAD.forward feeds
its U-Net and segmentation net; score_ref its smoothed map and top-k score, and
artifacts.metadata.normalize_score; groupnorm_silu_ref the res-block's silu(norm(h + emb)).
Every fused form is then tested against these references only.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dad_edge.artifacts.metadata import normalize_score
from dad_edge.model.config import preset
from dad_edge.kernels.combine_ref import combine_ref
from dad_edge.kernels.groupnorm_silu_ref import groupnorm_silu_ref
from dad_edge.kernels.preprocess_noise_ref import preprocess_noise_ref, preprocess_ref
from dad_edge.model.schedule import eval_coefficients
from dad_edge.kernels.score_ref import gaussian_taps, score_ref, smooth_ref, topk_mean_ref
from dad_edge.model.diffusion_ad import DiffusionAD, gaussian_kernel
from dad_edge.data.preprocess import preprocess_batch, to_pixels


def perturbed_model(cfg) -> DiffusionAD:
    """A tiny model whose zero-initialised output convs are perturbed (else eps == 0)."""
    torch.manual_seed(0)
    model = DiffusionAD(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.15)
    return model.eval()


def capture_forward(model, x):
    """Run forward(x), recording the U-Net input/output and the segmentation-net input."""
    seen = {}
    unet_fwd, seg_fwd = model.unet.forward_embedded, model.segnet.forward

    def unet_hook(inp, emb):
        seen["unet_in"] = inp.clone()
        seen["eps"] = unet_fwd(inp, emb)
        return seen["eps"]

    def seg_hook(inp):
        seen["seg_in"] = inp.clone()
        return seg_fwd(inp)

    model.unet.forward_embedded, model.segnet.forward = unet_hook, seg_hook
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        del model.unet.forward_embedded, model.segnet.forward
    return out, seen


@pytest.fixture(scope="module")
def run():
    cfg = preset("tiny", smoothing_sigma=1.0)
    model = perturbed_model(cfg)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (45, 37, 3), dtype=np.uint8) for _ in range(3)]
    x = preprocess_batch(frames, cfg.image_size, cfg.channels, "BGR")
    out, seen = capture_forward(model, torch.from_numpy(x))
    return cfg, model, frames, x, out, seen


def test_preprocess_noise_ref_is_the_unet_input_of_forward(run):
    cfg, model, frames, x, _, seen = run
    unet_in, x_ref = preprocess_noise_ref(frames, cfg.image_size, cfg.channels, "BGR", model.noise.numpy(),
                                          eval_coefficients(cfg))
    np.testing.assert_array_equal(x_ref, x)
    np.testing.assert_allclose(unet_in, seen["unet_in"].numpy(), rtol=0, atol=1e-6)


def test_combine_ref_is_the_segmentation_input_of_forward(run):
    cfg, model, _, x, _, seen = run
    seg_in = combine_ref(x, seen["eps"].numpy(), model.noise.numpy(), eval_coefficients(cfg), cfg.guidance_w)
    np.testing.assert_allclose(seg_in, seen["seg_in"].numpy(), rtol=0, atol=2e-6)
    x0_ng = seg_in[:, cfg.channels:]
    assert x0_ng.min() >= -1 and x0_ng.max() <= 1 and (np.abs(x0_ng) == 1).any()  # the clamps were exercised
    # The same reference runs on torch tensors, and there it is the model's combine step to the bit.
    seg_t = combine_ref(torch.from_numpy(x), seen["eps"], model.noise, eval_coefficients(cfg), cfg.guidance_w)
    np.testing.assert_allclose(seg_t.numpy(), seg_in, rtol=0, atol=1e-6)
    assert torch.equal(seg_t, seen["seg_in"])


def test_score_ref_is_the_map_and_score_of_forward(run):
    cfg, model, _, _, out, seen = run
    with torch.no_grad():
        raw = torch.sigmoid(model.segnet(seen["seg_in"])).numpy()  # before smoothing
    result = score_ref(raw, cfg.top_k, cfg.smoothing_sigma)
    np.testing.assert_allclose(result.maps, out.anomaly_map.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.scores, out.score.numpy(), rtol=0, atol=1e-6)
    assert result.masks is None and result.maps.shape == raw.shape


def test_gaussian_taps_equal_the_pipeline_kernel():
    for sigma in (0.5, 1.0, 2.5, 4.0):
        np.testing.assert_array_equal(gaussian_taps(sigma), gaussian_kernel(sigma).numpy())


def test_smooth_and_topk_refs_against_torch():
    rng = np.random.default_rng(1)
    m = rng.random((2, 19, 23), dtype=np.float32)
    model = DiffusionAD(preset("tiny", smoothing_sigma=1.5))
    expect = model.smooth(torch.from_numpy(m)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(smooth_ref(m, gaussian_taps(1.5)), expect, rtol=0, atol=1e-6)
    for k in (1, 7, 19 * 23):
        expect = torch.from_numpy(m).flatten(1).topk(k, dim=1).values.mean(dim=1).numpy()
        np.testing.assert_allclose(topk_mean_ref(m, k), expect, rtol=0, atol=1e-6)


def test_score_ref_thresholds():
    rng = np.random.default_rng(2)
    m = rng.random((5, 1, 8, 8), dtype=np.float32)
    r = score_ref(m, 3, 0.0, image_threshold=0.9, pixel_threshold=0.5)
    np.testing.assert_allclose(r.normalized, normalize_score(r.scores, 0.9), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(r.masks, m >= 0.5)
    assert r.masks.dtype == bool and r.masks.shape == m.shape
    np.testing.assert_array_equal(score_ref(m, 3).normalized, r.scores)  # no threshold: raw scores


def test_preprocess_ref_pixels_match_to_pixels():
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (9, 14), dtype=np.uint8), rng.integers(0, 256, (30, 7, 4), dtype=np.uint8)]
    got = preprocess_ref(frames, 16, 3, "RGB", normalize=False)
    np.testing.assert_array_equal(got, np.stack([to_pixels(f, 16, 3, "RGB") for f in frames]))


def test_groupnorm_silu_ref_is_the_resblock_normalisation():
    model = perturbed_model(preset("tiny"))
    block = model.unet.down[0].res
    h = torch.randn(2, block.norm2.num_channels, 8, 8)
    emb = torch.randn(2, block.norm2.num_channels)
    n = block.norm2
    expect = F.silu(n(h + emb[:, :, None, None]))
    got = groupnorm_silu_ref(h, n.num_groups, n.weight, n.bias, n.eps, emb)
    torch.testing.assert_close(got, expect, rtol=0, atol=0)
