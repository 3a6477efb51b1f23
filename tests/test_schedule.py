import math

import numpy as np
import pytest

from dad_edge.model.config import preset
from dad_edge.model.schedule import NoiseSchedule


@pytest.fixture(scope="module")
def sched():
    return NoiseSchedule(1000, 1e-4, 0.02)


def test_betas_are_linear_with_the_paper_endpoints(sched):
    b = sched.betas
    assert b.dtype == np.float64 and b.shape == (1000,)
    assert b[0] == 1e-4
    assert b[-1] == pytest.approx(0.02, abs=1e-15)
    steps = np.diff(b)
    np.testing.assert_allclose(steps, (0.02 - 1e-4) / 999, rtol=1e-9)
    assert b[500] == pytest.approx(1e-4 + 500 * (0.02 - 1e-4) / 999, rel=1e-12)


def test_alphas_cumprod_closed_form(sched):
    a = sched.alphas_cumprod
    assert a.dtype == np.float64
    assert a[0] == 1 - 1e-4
    assert np.all(np.diff(a) < 0) and 0 < a[-1] < 1e-4
    for t in (0, 1, 10, 199, 200, 400, 999):
        prod = 1.0
        for s in range(t + 1):
            prod *= 1.0 - (1e-4 + s * (0.02 - 1e-4) / 999)
        assert a[t] == pytest.approx(prod, rel=1e-12), t
    # Known values of the standard DDPM schedule at the paper's evaluation steps.
    assert a[200] == pytest.approx(0.6563, abs=1e-4)
    assert a[400] == pytest.approx(0.1936, abs=1e-4)


def test_coefficients(sched):
    for t in (0, 200, 400, 999):
        c = sched.coefficients(t)
        abar = sched.alphas_cumprod[t]
        assert c.t == t
        assert c.sqrt_abar == pytest.approx(math.sqrt(abar), rel=1e-14)
        assert c.sqrt_one_minus_abar == pytest.approx(math.sqrt(1 - abar), rel=1e-14)
        assert c.sqrt_recip_abar == pytest.approx(1 / math.sqrt(abar), rel=1e-14)
        assert c.sqrt_recip_abar_minus_one == pytest.approx(math.sqrt(1 / abar - 1), rel=1e-14)
        assert c.sqrt_abar ** 2 + c.sqrt_one_minus_abar ** 2 == pytest.approx(1.0, rel=1e-14)


@pytest.mark.parametrize("t", [-1, 1000])
def test_timestep_out_of_range(sched, t):
    with pytest.raises(ValueError, match=str(t)):
        sched.coefficients(t)


@pytest.mark.parametrize("t", [0, 50, 200, 400, 999])
def test_q_sample_and_predict_x0_invert_each_other(sched, t):
    rng = np.random.default_rng(t)
    x0 = rng.uniform(-1, 1, (2, 3, 8, 8))
    eps = rng.standard_normal((2, 3, 8, 8))
    x_t = sched.q_sample(x0, t, eps)
    assert x_t.dtype == np.float64
    tol = 1e-12 * max(1.0, sched.coefficients(t).sqrt_recip_abar)
    np.testing.assert_allclose(sched.predict_x0(x_t, t, eps), x0, rtol=0, atol=tol)
    # And the forward formula itself, written out.
    abar = sched.alphas_cumprod[t]
    np.testing.assert_allclose(x_t, np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps, rtol=0, atol=1e-14)
    # predict_x0 is unclamped: it can leave [-1, 1] with the wrong noise.
    if t > 0:
        assert np.abs(sched.predict_x0(x_t, t, -eps)).max() > 1


def test_from_config_uses_the_config_fields():
    cfg = preset("tiny").replace(num_timesteps=50, beta_start=1e-3, beta_end=0.05,
                                        t_small=10, t_large=40)
    s = NoiseSchedule.from_config(cfg)
    assert s.num_timesteps == 50 and s.betas.shape == (50,)
    assert s.betas[0] == 1e-3 and s.betas[-1] == pytest.approx(0.05, abs=1e-15)


@pytest.mark.parametrize("t", [0, 200, 400, 999])
def test_add_noise_is_the_closed_form_for_every_way_of_giving_t(sched, t):
    """NoiseSchedule.add_noise: an int t, its Coefficients, a float pair, or tensors: all (3)."""
    import torch

    from dad_edge.model.schedule import add_noise

    rng = np.random.default_rng(t)
    x0 = rng.uniform(-1, 1, (2, 3, 4, 4))
    eps = rng.standard_normal((2, 3, 4, 4))
    abar = 1.0
    for s in range(t + 1):  # abar_t from the betas, independently of the library
        abar *= 1.0 - (1e-4 + s * (0.02 - 1e-4) / 999)
    expect = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
    c = sched.coefficients(t)
    for given in (t, np.int64(t), c, (c.sqrt_abar, c.sqrt_one_minus_abar)):
        np.testing.assert_allclose(sched.add_noise(x0, given, eps), expect, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sched.q_sample(x0, t, eps), sched.add_noise(x0, t, eps))
    np.testing.assert_array_equal(add_noise(x0, (c.sqrt_abar, c.sqrt_one_minus_abar), eps),
                                  sched.add_noise(x0, c, eps))
    # torch tensors, with per-sample coefficient tensors as in training
    a = torch.full((2, 1, 1, 1), abar, dtype=torch.float64)
    got = sched.add_noise(torch.from_numpy(x0), (a.sqrt(), (1 - a).sqrt()), torch.from_numpy(eps))
    np.testing.assert_allclose(got.numpy(), expect, rtol=0, atol=1e-12)


def test_eval_coefficients_at_the_config_timesteps():
    from dad_edge.model.schedule import EvalCoefficients, eval_coefficients

    cfg = preset("tiny").replace(num_timesteps=50, beta_start=1e-3, beta_end=0.05, t_small=10, t_large=40)
    s = NoiseSchedule.from_config(cfg)
    got = eval_coefficients(cfg)
    cs, cl = s.coefficients(10), s.coefficients(40)
    assert isinstance(got, EvalCoefficients)
    assert got == (cs.sqrt_abar, cs.sqrt_one_minus_abar, cl.sqrt_abar, cl.sqrt_one_minus_abar)
    assert got.small == got[:2] and got.large == got[2:]
    assert all(type(v) is float for v in got)  # Python floats: constants of an exported graph
    assert eval_coefficients(cfg.replace(t_small=11)) != got
