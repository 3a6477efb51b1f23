"""DiffusionAD.forward / reconstruct against an independent numpy reading of the spec.

algorithm.md, "Norm-guided one-step denoising" (w = 1 by default):
1. x_s = q(x0, t_s, eps1), x_l = q(x0, t_l, eps2); eps_s = eps_theta(x_s, t_s), eps_l = eps_theta(x_l, t_l)
2. x0_l = x0_hat(x_l, t_l)                                  (clamped)
3. x_s~ = sqrt(abar_s) x0_l + sqrt(1 - abar_s) eps_s
4. eps~ = eps_s - sqrt(1 - abar_s) * w * (x_s~ - x_s)
5. x0_ng = sqrt(1/abar_s) x_s - sqrt(1/abar_s - 1) eps~      (clamped)
The U-Net's weights are perturbed first: its zero-initialised output convs would make
eps_theta == 0 and every check trivial.
"""
import numpy as np
import pytest
import torch

from dad_edge.model.config import preset
from dad_edge.model.diffusion_ad import DiffusionAD, fixed_noise

T = 1000
B_START, B_END = 1e-4, 0.02


def abar_np(t: int) -> float:
    """abar_t computed here, not by the library: prod_{s<=t} (1 - beta_s), linear betas."""
    betas = B_START + np.arange(T, dtype=np.float64) * (B_END - B_START) / (T - 1)
    return float(np.prod(1.0 - betas[: t + 1]))


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.15) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def make_model(cfg=None, seed: int = 0) -> DiffusionAD:
    torch.manual_seed(1234)
    return perturb(DiffusionAD(cfg or preset("tiny")), seed)


def images(n: int, seed: int = 0, size: int = 32, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + seed)
    # Smooth-ish images in [-1, 1]: a random field plus a gradient.
    x = torch.rand(n, channels, size, size, generator=g) * 1.6 - 0.8
    x += torch.linspace(-0.2, 0.2, size)[None, None, None, :]
    return x.clamp(-1, 1)


def unet_eps(model, x_s: np.ndarray, x_l: np.ndarray, t_s, t_l):
    """eps_theta at both scales by calling the U-Net directly (one pass per scale)."""
    b = x_s.shape[0]
    t_s = np.broadcast_to(np.asarray(t_s), (b,))
    t_l = np.broadcast_to(np.asarray(t_l), (b,))
    with torch.no_grad():
        eps_s = model.unet(torch.from_numpy(x_s.astype(np.float32)), torch.from_numpy(t_s.astype(np.float32)))
        eps_l = model.unet(torch.from_numpy(x_l.astype(np.float32)), torch.from_numpy(t_l.astype(np.float32)))
    return eps_s.double().numpy(), eps_l.double().numpy()


def spec_x0_ng(model, x, n_s, n_l, t_s, t_l, w: float, clamp: bool = True):
    """Spec steps 1-5 in float64 numpy; t_s, t_l ints or (B,) int arrays."""
    x = x.double().numpy() if isinstance(x, torch.Tensor) else x
    n_s = np.broadcast_to(np.asarray(n_s, np.float64), x.shape)
    n_l = np.broadcast_to(np.asarray(n_l, np.float64), x.shape)
    a_s = np.array([abar_np(int(t)) for t in np.broadcast_to(t_s, (x.shape[0],))]).reshape(-1, 1, 1, 1)
    a_l = np.array([abar_np(int(t)) for t in np.broadcast_to(t_l, (x.shape[0],))]).reshape(-1, 1, 1, 1)
    x_s = np.sqrt(a_s) * x + np.sqrt(1 - a_s) * n_s  # 1.
    x_l = np.sqrt(a_l) * x + np.sqrt(1 - a_l) * n_l
    eps_s, eps_l = unet_eps(model, x_s, x_l, t_s, t_l)
    x0_l = np.clip(np.sqrt(1 / a_l) * x_l - np.sqrt(1 / a_l - 1) * eps_l, -1, 1)  # 2.
    x_s_guide = np.sqrt(a_s) * x0_l + np.sqrt(1 - a_s) * eps_s  # 3.
    eps_guided = eps_s - np.sqrt(1 - a_s) * w * (x_s_guide - x_s)  # 4.
    x0_ng = np.sqrt(1 / a_s) * x_s - np.sqrt(1 / a_s - 1) * eps_guided  # 5.
    plain = np.sqrt(1 / a_s) * x_s - np.sqrt(1 / a_s - 1) * eps_s  # one-step x0 at t_s, unguided
    if clamp:
        x0_ng, plain = np.clip(x0_ng, -1, 1), np.clip(plain, -1, 1)
    return x0_ng, plain, eps_s, eps_l


def topk_mean(m: np.ndarray, k: int) -> np.ndarray:
    flat = m.reshape(m.shape[0], -1)
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def x():
    return images(3)


def test_perturbed_model_is_not_trivial(model, x):
    with torch.no_grad():
        out = model(x)
    m = out.anomaly_map
    assert m.shape == (3, 1, 32, 32) and out.score.shape == (3,)
    assert m.std() > 0.05 and 0 <= m.min() and m.max() <= 1


def test_reconstruct_matches_spec_steps_1_to_5(model, x):
    cfg = model.cfg
    b = x.shape[0]
    t_s, t_l = torch.full((b,), cfg.t_small), torch.full((b,), cfg.t_large)
    with torch.no_grad():
        rec = model.reconstruct(x, t_s, t_l, model.noise[0], model.noise[1])
    ref, plain, eps_s, eps_l = spec_x0_ng(model, x, model.noise[0].numpy(), model.noise[1].numpy(),
                                          cfg.t_small, cfg.t_large, w=1.0)
    np.testing.assert_allclose(rec.eps_small.numpy(), eps_s, atol=2e-5)
    np.testing.assert_allclose(rec.eps_large.numpy(), eps_l, atol=2e-5)
    np.testing.assert_allclose(rec.x0_guided.numpy(), ref, atol=1e-4)
    # The guidance matters here: the guided result is not the plain one-step x0.
    assert np.abs(ref - plain).max() > 0.05
    # Segmentation reads cat(x, x0_ng).
    with torch.no_grad():
        seg = model.segnet(torch.cat([x, torch.from_numpy(ref.astype(np.float32))], dim=1))
    np.testing.assert_allclose(rec.seg_logits.numpy(), seg.numpy(), atol=1e-3)


def test_reconstruct_per_sample_timesteps_and_noise(model, x):
    """The training path: every sample its own t_s, t_l and noise."""
    g = torch.Generator().manual_seed(5)
    t_s, t_l = torch.tensor([0, 120, 299]), torch.tensor([300, 650, 999])
    n_s, n_l = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    with torch.no_grad():
        rec = model.reconstruct(x, t_s, t_l, n_s, n_l)
    ref, _, eps_s, eps_l = spec_x0_ng(model, x, n_s.numpy(), n_l.numpy(), t_s.numpy(), t_l.numpy(), w=1.0)
    # Inputs rounded to float32 differently: eps agrees to float precision, not bit for bit.
    np.testing.assert_allclose(rec.eps_small.numpy(), eps_s, atol=5e-5)
    np.testing.assert_allclose(rec.eps_large.numpy(), eps_l, atol=5e-5)
    np.testing.assert_allclose(rec.x0_guided.numpy(), ref, atol=2e-4)


def test_forward_matches_reconstruct_and_numpy_score(model, x):
    cfg = model.cfg
    b = x.shape[0]
    with torch.no_grad():
        out = model(x)
        rec = model.reconstruct(x, torch.full((b,), cfg.t_small), torch.full((b,), cfg.t_large),
                                model.noise[0], model.noise[1])
    np.testing.assert_allclose(out.anomaly_map.numpy(), torch.sigmoid(rec.seg_logits).numpy(), atol=1e-5)
    m = out.anomaly_map.numpy()
    assert cfg.top_k == 4
    np.testing.assert_allclose(out.score.numpy(), topk_mean(m, cfg.top_k), rtol=1e-6)
    # The score is a mean of the top, so it lies between the k-th largest value and the max.
    assert np.all(out.score.numpy() <= m.reshape(b, -1).max(axis=1) + 1e-7)


def test_forward_uses_the_stored_noise(model, x):
    other = make_model()
    other.noise.copy_(torch.flip(model.noise, dims=[0]))
    with torch.no_grad():
        assert not torch.allclose(model(x).anomaly_map, other(x).anomaly_map, atol=1e-4)


def test_forward_is_bit_for_bit_deterministic(model, x):
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.score, b.score)
    # A second model from the same config + state_dict (different initial weights first).
    torch.manual_seed(999)
    twin = DiffusionAD(preset("tiny"))
    twin.load_state_dict(model.state_dict())
    twin.eval()
    with torch.no_grad():
        c = twin(x)
    assert torch.equal(a.anomaly_map, c.anomaly_map) and torch.equal(a.score, c.score)


def test_fixed_noise_depends_only_on_noise_seed():
    base = preset("tiny")
    n0 = fixed_noise(base)
    assert n0.shape == (2, 3, 32, 32) and n0.dtype == torch.float32
    assert torch.equal(n0, fixed_noise(base))
    # Other fields do not change it.
    assert torch.equal(n0, fixed_noise(base.replace(t_small=10, t_large=900, top_k=9, guidance_w=0.3)))
    # Another seed gives other noise.
    n1 = fixed_noise(base.replace(noise_seed=1))
    assert not torch.equal(n0, n1) and (n0 - n1).abs().mean() > 0.5
    assert torch.equal(n1, fixed_noise(base.replace(noise_seed=1)))
    # The two scales get different noise, and it is standard normal.
    assert not torch.equal(n0[0], n0[1])
    assert abs(float(n0.mean())) < 0.05 and abs(float(n0.std()) - 1) < 0.05
    # PCG64 from the seed: reproducible independently of torch's RNG.
    expect = np.random.Generator(np.random.PCG64(0)).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(n0.numpy(), expect)


def test_model_noise_buffer_is_the_fixed_noise_and_is_saved():
    torch.manual_seed(0)
    m = DiffusionAD(preset("tiny", noise_seed=11))
    assert torch.equal(m.noise, fixed_noise(m.cfg))
    torch.manual_seed(1)
    assert torch.equal(DiffusionAD(preset("tiny", noise_seed=11)).noise, m.noise)  # not torch's RNG
    assert "noise" in m.state_dict()
    assert "alphas_cumprod" not in m.state_dict()  # derived from the config


def test_batch_independence(model):
    x = images(4, seed=3)
    with torch.no_grad():
        full = model(x)
        for i in range(4):
            one = model(x[i:i + 1])
            np.testing.assert_allclose(one.anomaly_map.numpy(), full.anomaly_map[i:i + 1].numpy(), atol=1e-5)
            np.testing.assert_allclose(one.score.numpy(), full.score[i:i + 1].numpy(), atol=1e-5)
        # Changing the other images does not change image 0.
        y = x.clone()
        y[1:] = -y[1:]
        np.testing.assert_allclose(model(y).anomaly_map[0].numpy(), full.anomaly_map[0].numpy(), atol=1e-5)


def test_w_zero_gives_the_plain_one_step_x0(model, x):
    cfg0 = preset("tiny").replace(guidance_w=0.0)
    m0 = DiffusionAD(cfg0)
    m0.load_state_dict(model.state_dict())
    m0.eval()
    b = x.shape[0]
    t_s, t_l = torch.full((b,), cfg0.t_small), torch.full((b,), cfg0.t_large)
    with torch.no_grad():
        rec0 = m0.reconstruct(x, t_s, t_l, m0.noise[0], m0.noise[1])
        rec1 = model.reconstruct(x, t_s, t_l, model.noise[0], model.noise[1])
    ref_guided, plain, _, _ = spec_x0_ng(model, x, model.noise[0].numpy(), model.noise[1].numpy(),
                                         cfg0.t_small, cfg0.t_large, w=0.0)
    np.testing.assert_allclose(ref_guided, plain, atol=1e-12)  # the spec itself
    np.testing.assert_allclose(rec0.x0_guided.numpy(), plain, atol=1e-4)
    # And in torch terms: x0_hat(x_s, t_s) with the model's own eps_s.
    a = float(m0.alphas_cumprod[cfg0.t_small])
    x_s = a ** 0.5 * x + (1 - a) ** 0.5 * m0.noise[0]
    torch.testing.assert_close(rec0.x0_guided, ((x_s - (1 - a) ** 0.5 * rec0.eps_small) / a ** 0.5).clamp(-1, 1),
                               atol=1e-5, rtol=0)
    assert (rec0.x0_guided - rec1.x0_guided).abs().max() > 0.05


def numpy_blur(m: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian, radius ceil(4 sigma), edge replication; m (H, W)."""
    r = int(np.ceil(4 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(m.astype(np.float64), r, mode="edge")
    rows = sum(k[i] * p[:, i:i + m.shape[1]] for i in range(2 * r + 1))  # along W
    return sum(k[i] * rows[i:i + m.shape[0], :] for i in range(2 * r + 1))[:, :]  # along H


def test_smoothing_blurs_the_map(model, x):
    cfg = preset("tiny").replace(smoothing_sigma=1.5)
    ms = DiffusionAD(cfg)
    ms.load_state_dict(model.state_dict())  # the kernel is derived, not a weight
    ms.eval()
    with torch.no_grad():
        raw = model(x).anomaly_map.numpy()
        out = ms(x)
    sm = out.anomaly_map.numpy()
    assert sm.shape == raw.shape
    assert np.abs(sm - raw).max() > 1e-3  # it changes the map ...
    np.testing.assert_allclose(sm.sum(axis=(1, 2, 3)), raw.sum(axis=(1, 2, 3)), rtol=0.03)  # ... keeps its mass
    assert sm.std() < raw.std()  # ... and smooths it
    for i in range(raw.shape[0]):
        np.testing.assert_allclose(sm[i, 0], numpy_blur(raw[i, 0], 1.5), atol=1e-5)
    np.testing.assert_allclose(out.score.numpy(), topk_mean(sm, cfg.top_k), rtol=1e-6)


def test_smoothing_of_a_delta_spreads_and_keeps_the_sum():
    torch.manual_seed(0)
    ms = DiffusionAD(preset("tiny").replace(smoothing_sigma=1.0)).eval()
    delta = torch.zeros(1, 1, 32, 32)
    delta[0, 0, 16, 16] = 1.0
    out = ms.smooth(delta)[0, 0]
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-6)
    assert 0 < float(out[16, 16]) < 0.5
    assert float(out[16, 17]) > 0 and float(out[18, 16]) > 0 and float(out[16, 21]) == 0  # radius 4
    torch.testing.assert_close(out, out.T)  # isotropic
    patch = out[12:21, 12:21]  # centred on the delta
    torch.testing.assert_close(patch, torch.flip(patch, dims=[0, 1]))
    assert float(patch.sum()) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(out.numpy(), numpy_blur(delta[0, 0].numpy(), 1.0), atol=1e-7)


def test_reconstructions_stay_in_range(model, x):
    cfg = model.cfg
    b = x.shape[0]
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        rec = model.reconstruct(x * 1.0, torch.full((b,), cfg.t_small), torch.full((b,), cfg.t_large),
                                torch.randn(x.shape, generator=g) * 3, torch.randn(x.shape, generator=g) * 3)
    assert rec.x0_guided.min() >= -1 and rec.x0_guided.max() <= 1
    unclamped, _, _, _ = spec_x0_ng(model, x, model.noise[0].numpy(), model.noise[1].numpy(),
                                    cfg.t_small, cfg.t_large, w=1.0, clamp=False)
    assert np.abs(unclamped).max() > 1  # the clamp is doing work on this model
    with torch.no_grad():
        rec = model.reconstruct(x, torch.full((b,), cfg.t_small), torch.full((b,), cfg.t_large),
                                model.noise[0], model.noise[1])
    assert rec.x0_guided.min() >= -1 and rec.x0_guided.max() <= 1


def test_grayscale_and_compact_patch_path():
    """channels=1 and a patched U-Net (pixel-unshuffle) run and keep the shapes."""
    cfg = preset("compact", image_size=32, channels=1)
    m = make_model(cfg)
    with torch.no_grad():
        out = m(images(2, channels=1))
        rec = m.reconstruct(images(2, channels=1), torch.tensor([200, 200]), torch.tensor([400, 400]),
                            m.noise[0], m.noise[1])
    assert out.anomaly_map.shape == (2, 1, 32, 32) and out.score.shape == (2,)
    ref, _, _, _ = spec_x0_ng(m, images(2, channels=1), m.noise[0].numpy(), m.noise[1].numpy(), 200, 400, w=1.0)
    np.testing.assert_allclose(rec.x0_guided.numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("denoiser", ["two_pass", "single_pass"])
def test_half_precision_model_runs_and_matches_float32(denoiser):
    """Detector(half=True) casts the whole deploy graph to float16 (found on an H100: the float32
    timestep sinusoids then met half weights in the time MLP). Checked on the CPU, where torch has
    float16 kernels too: the half model runs and agrees with float32 to half precision."""
    from dad_edge.model.deploy_graph import DeployGraph

    model = make_model(preset("tiny", denoiser=denoiser))
    pixels = (images(2) + 1) * 127.5
    with torch.inference_mode():
        ref_map, ref_score = DeployGraph(model).eval()(pixels)
        half = DeployGraph(make_model(preset("tiny", denoiser=denoiser))).to(torch.float16).eval()
        maps, scores = half(pixels.half())
    assert maps.dtype == torch.float16 and torch.isfinite(maps).all()
    assert torch.allclose(maps.float(), ref_map, atol=2e-2)
    assert torch.allclose(scores.float(), ref_score, atol=2e-2)
