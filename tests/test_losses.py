import math

import pytest
import torch
import torch.nn.functional as F

from dad_edge.model.losses import FOCAL_WEIGHT, clean_noise_target, diffusion_ad_loss, focal_loss, noise_mse


def _pair(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 8, 8, generator=g), torch.randn(b, 3, 8, 8, generator=g)


def test_noise_mse_is_zero_not_nan_without_normal_samples():
    pred, target = _pair()
    pred.requires_grad_(True)
    loss = noise_mse(pred, target, torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))  # finite, and no signal from anomalous samples


def test_noise_mse_is_the_mse_over_normal_samples_only():
    pred, target = _pair()
    normal = torch.tensor([True, False, True, False])
    expected = ((pred[[0, 2]] - target[[0, 2]]) ** 2).mean()
    assert noise_mse(pred, target, normal).item() == pytest.approx(expected.item(), rel=1e-6)
    # The anomalous samples do not matter at all.
    pred2 = pred.clone()
    pred2[[1, 3]] += 100
    assert noise_mse(pred2, target, normal).item() == pytest.approx(expected.item(), rel=1e-6)
    # All normal: the plain MSE.
    all_normal = torch.ones(4, dtype=torch.bool)
    assert noise_mse(pred, target, all_normal).item() == pytest.approx(F.mse_loss(pred, target).item(), rel=1e-6)
    # One normal sample.
    one = torch.tensor([False, False, False, True])
    assert noise_mse(pred, target, one).item() == pytest.approx(F.mse_loss(pred[3], target[3]).item(), rel=1e-6)


def test_noise_mse_in_half_precision_is_computed_in_float32():
    pred, target = _pair()
    normal = torch.tensor([True, True, False, True])
    loss = noise_mse(pred.half(), target.half(), normal)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(noise_mse(pred, target, normal).item(), rel=1e-2)


def _focal_by_hand(logit: float, target: float, alpha: float, gamma: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    p_t = p if target == 1 else 1 - p
    alpha_t = alpha if target == 1 else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


def test_focal_loss_two_pixels_by_hand():
    logits = torch.tensor([[[[2.0, -1.0]]]])  # (1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]]])
    # pixel 1: p = sigmoid(2) = 0.8808, true class 1: 0.5 * 0.1192**4 * -log(0.8808)
    # pixel 2: p = sigmoid(-1) = 0.2689, true class 0: 0.5 * 0.2689**4 * -log(0.7311)
    expected = (_focal_by_hand(2.0, 1, 0.5, 4) + _focal_by_hand(-1.0, 0, 0.5, 4)) / 2
    assert expected == pytest.approx((0.5 * 0.11920292 ** 4 * 0.12692801 + 0.5 * 0.26894142 ** 4 * 0.31326169) / 2,
                                     rel=1e-6)
    assert focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    # alpha weights the positive class, 1 - alpha the negative one.
    expected_a = (_focal_by_hand(2.0, 1, 0.25, 2) + _focal_by_hand(-1.0, 0, 0.25, 2)) / 2
    assert focal_loss(logits, target, alpha=0.25, gamma=2).item() == pytest.approx(expected_a, rel=1e-5)
    # gamma 0, alpha 0.5: half the binary cross-entropy.
    bce = F.binary_cross_entropy_with_logits(logits, target)
    assert focal_loss(logits, target, alpha=0.5, gamma=0).item() == pytest.approx(0.5 * bce.item(), rel=1e-6)


def test_focal_loss_is_stable_for_confident_logits():
    logits = torch.tensor([[[[60.0, -60.0, 60.0]]]], requires_grad=True)
    target = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    loss = focal_loss(logits.half(), target.half())
    assert torch.isfinite(loss)
    # Confidently wrong pixel 3: bce = 60, (1 - p_t)^4 ~ 1, alpha 0.5 -> 30, mean over 3 -> 10.
    assert loss.item() == pytest.approx(10.0, rel=1e-3)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_total_is_noise_plus_5_focal_plus_smooth_l1():
    g = torch.Generator().manual_seed(1)
    eps_s, eps_l = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    n_s, n_l = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    logits = torch.randn(2, 1, 4, 4, generator=g) * 3
    mask = (torch.rand(2, 1, 4, 4, generator=g) > 0.7).float()
    normal = torch.tensor([True, False])
    terms = diffusion_ad_loss(eps_s, eps_l, n_s, n_l, logits, mask, normal)
    assert FOCAL_WEIGHT == 5.0
    noise = ((eps_s[0] - n_s[0]) ** 2).mean() + ((eps_l[0] - n_l[0]) ** 2).mean()
    prob = torch.sigmoid(logits)
    d = (prob - mask).abs()
    smooth = torch.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()  # |d| < 1 always for probabilities
    focal = focal_loss(logits, mask)
    assert terms.noise.item() == pytest.approx(noise.item(), rel=1e-6)
    assert terms.smooth_l1.item() == pytest.approx(smooth.item(), rel=1e-6)
    assert terms.focal.item() == pytest.approx(focal.item(), rel=1e-6)
    assert terms.total.item() == pytest.approx(noise.item() + 5 * focal.item() + smooth.item(), rel=1e-6)


def test_total_without_normal_samples_has_no_noise_term_and_gradients_flow():
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    logits = torch.randn(2, 1, 4, 4, generator=g, requires_grad=True)
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, 1:3, 1:3] = 1
    terms = diffusion_ad_loss(eps, eps, torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), logits, mask,
                              torch.zeros(2, dtype=torch.bool))
    assert terms.noise.item() == 0.0
    assert terms.total.item() == pytest.approx(5 * terms.focal.item() + terms.smooth_l1.item(), rel=1e-6)
    terms.total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.equal(eps.grad, torch.zeros_like(eps))


def test_clean_noise_target_denoises_the_anomalous_image_into_the_clean_one():
    g = torch.Generator().manual_seed(3)
    clean = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    x = clean.clone()
    x[1:, :, 2:5, 2:5] = -0.9  # two samples with an anomaly, one normal
    noise = torch.randn(x.shape, generator=g)
    abar = torch.tensor([0.4, 0.2, 0.01])
    a = abar.reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x + (1 - a).sqrt() * noise
    target = clean_noise_target(noise, x, clean, abar)
    x0_hat = (x_t - (1 - a).sqrt() * target) / a.sqrt()  # one-step denoising with the target as prediction
    assert torch.allclose(x0_hat, clean, atol=1e-5)
    assert torch.equal(target[0], noise[0])  # normal sample: the drawn noise
    assert not torch.allclose(target[1], noise[1])


def test_large_target_on_all_samples_counts_the_anomalous_ones_at_the_large_scale_only():
    g = torch.Generator().manual_seed(4)
    eps_s, eps_l, n_s, n_l = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(4))
    logits, mask = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    normal = torch.tensor([True, False])
    terms = diffusion_ad_loss(eps_s, eps_l, n_s, n_l, logits, mask, normal, large_on_all=True)
    expected = ((eps_s[0] - n_s[0]) ** 2).mean() + ((eps_l - n_l) ** 2).mean()
    assert terms.noise.item() == pytest.approx(expected.item(), rel=1e-6)
    paper = diffusion_ad_loss(eps_s, eps_l, n_s, n_l, logits, mask, normal)
    assert paper.noise.item() != pytest.approx(terms.noise.item(), rel=1e-3)
