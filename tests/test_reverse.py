"""The posterior and the reverse model against brute-force Gaussian conditioning."""

import numpy as np
import pytest
import torch
from conftest import gen

from diffusion_lib import (
    NoiseSchedule,
    model_output_to_x0_eps,
    p_mean_variance,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_v,
    predict_x0_from_eps,
    predict_x0_from_v,
    q_posterior_mean_variance,
    q_sample,
)


def brute_force_posterior(betas, t, x0, xt):
    """q(x_{t-1} | x_t, x_0) by conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0.

    0-indexed t >= 1: x_{t-1} = sqrt(ab_{t-1}) x0 + sqrt(1 - ab_{t-1}) e1 and
    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) e2. Built with linear algebra only.
    """
    b = np.asarray(betas, dtype=np.float64)
    ab_prev = np.prod(1 - b[:t])                         # alpha_bar of the previous step
    a = np.sqrt(1 - b[t])
    # joint covariance of (x_{t-1}, x_t), per coordinate
    v_prev = 1 - ab_prev
    cov = np.array([[v_prev, a * v_prev], [a * v_prev, a * a * v_prev + b[t]]])
    m_prev = np.sqrt(ab_prev) * x0
    m_t = a * m_prev
    gain = np.linalg.solve(cov[1:, 1:], cov[1:, :1]).item()   # Sigma_22^{-1} Sigma_21
    mean = m_prev + gain * (xt - m_t)
    var = cov[0, 0] - cov[0, 1] * gain
    return mean, var


@pytest.mark.parametrize("make", [NoiseSchedule.linear, NoiseSchedule.cosine])
@pytest.mark.parametrize("t", [1, 2, 50, 500, 998, 999])
def test_posterior_matches_brute_force_conditioning(make, t):
    s = make(dtype=torch.float64)
    x0 = torch.randn(3, 4, generator=gen(t), dtype=torch.float64)
    xt = torch.randn(3, 4, generator=gen(t + 1), dtype=torch.float64)
    tt = torch.full((3,), t)
    mean, var, log_var = q_posterior_mean_variance(s, x0, xt, tt)
    ref_mean, ref_var = brute_force_posterior(s.betas.numpy(), t, x0.numpy(), xt.numpy())
    np.testing.assert_allclose(mean.numpy(), ref_mean, atol=1e-10, rtol=0)
    assert abs(var[0].item() - ref_var) < 1e-10
    assert abs(log_var[0].item() - np.log(ref_var)) < 1e-10


def test_posterior_at_first_step_returns_the_data(schedule64):
    x0 = torch.randn(2, 3, generator=gen(), dtype=torch.float64)
    xt = torch.randn(2, 3, generator=gen(1), dtype=torch.float64)
    mean, var, _ = q_posterior_mean_variance(schedule64, x0, xt, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(mean, x0, atol=1e-12) and (var == 0).all()


def test_posterior_by_monte_carlo(schedule64):
    """Sample (x_{t-1}, x_t) jointly and keep pairs near a fixed x_t: their x_{t-1} follows
    the posterior. Uses the chain with a rejection window (independent of Eq. 7)."""
    t, x0v, target, width, N = 300, 0.9, 0.2, 0.01, 400000
    x0 = torch.full((N, 1), x0v, dtype=torch.float64)
    prev = q_sample(schedule64, x0, t - 1, generator=gen(11))
    beta = schedule64.betas[t].item()
    xt = ((1 - beta) ** 0.5 * prev
          + beta ** 0.5 * torch.randn(N, 1, generator=gen(12), dtype=torch.float64))
    keep = (xt - target).abs().flatten() < width
    sel = prev[keep]
    mean, var, _ = q_posterior_mean_variance(schedule64, x0[:1], torch.full((1, 1), target,
                                             dtype=torch.float64), torch.tensor([t]))
    n = sel.numel()
    assert n > 500
    # window bias on the mean is ~ coef2 * width^2 / 3, far below 5 standard errors
    assert abs(sel.mean().item() - mean.item()) < 5 * (var.item() / n) ** 0.5
    assert abs(sel.var().item() - var.item()) < 5 * var.item() * (2 / n) ** 0.5


@pytest.mark.parametrize("t", [0, 1, 10, 500, 999])
def test_eps_mean_with_true_noise_equals_posterior_mean(schedule64, t):
    """Eq. (11) with the true eps is exactly mu_tilde_t(x_t, x_0), Eq. (7)."""
    x0 = torch.randn(5, 3, generator=gen(t), dtype=torch.float64)
    eps = torch.randn(5, 3, generator=gen(t + 100), dtype=torch.float64)
    tt = torch.full((5,), t)
    xt = q_sample(schedule64, x0, tt, noise=eps)
    p = p_mean_variance(schedule64, eps, xt, tt, "epsilon")
    post_mean, post_var, _ = q_posterior_mean_variance(schedule64, x0, xt, tt)
    assert torch.allclose(p.mean, post_mean, atol=1e-10, rtol=0)
    assert torch.allclose(p.variance, post_var, atol=0, rtol=0)
    for kind, out in [("x0", x0), ("v", predict_v(schedule64, x0, tt, eps))]:
        q = p_mean_variance(schedule64, out, xt, tt, kind)
        assert torch.allclose(q.mean, post_mean, atol=1e-9, rtol=0), kind
        assert torch.allclose(q.pred_eps, eps, atol=1e-7, rtol=0), kind


def test_conversions_round_trip(schedule64):
    x0 = torch.randn(6, 2, 2, generator=gen(1), dtype=torch.float64)
    eps = torch.randn(6, 2, 2, generator=gen(2), dtype=torch.float64)
    t = torch.tensor([0, 3, 100, 400, 800, 999])
    xt = q_sample(schedule64, x0, t, noise=eps)
    v = predict_v(schedule64, x0, t, eps)
    assert torch.allclose(predict_x0_from_eps(schedule64, xt, t, eps), x0, atol=1e-9)
    assert torch.allclose(predict_eps_from_x0(schedule64, xt, t, x0), eps, atol=1e-9)
    assert torch.allclose(predict_x0_from_v(schedule64, xt, t, v), x0, atol=1e-12)
    assert torch.allclose(predict_eps_from_v(schedule64, xt, t, v), eps, atol=1e-12)
    for kind, out in [("epsilon", eps), ("x0", x0), ("v", v)]:
        px0, peps = model_output_to_x0_eps(schedule64, out, xt, t, kind)
        assert torch.allclose(px0, x0, atol=1e-9) and torch.allclose(peps, eps, atol=1e-9)


def test_fixed_variances(schedule64):
    x = torch.zeros(3, 2, dtype=torch.float64)
    t = torch.tensor([0, 1, 999])
    small = p_mean_variance(schedule64, x, x, t, variance_type="fixed_small").variance.flatten()
    large = p_mean_variance(schedule64, x, x, t, variance_type="fixed_large").variance.flatten()
    b = schedule64.betas
    assert torch.allclose(large[1:], b[t[1:]], rtol=1e-12)             # sigma^2 = beta_t
    assert large[0] == schedule64.posterior_variance[1]                # released-code choice at t=0
    assert torch.allclose(small[1:], schedule64.posterior_variance[t[1:]])
    assert ((small <= large + 1e-15)).all()


def test_clipping_bounds_the_predicted_x0(schedule64):
    xt = torch.full((2, 3), 3.0, dtype=torch.float64)
    out = torch.full((2, 3), -5.0, dtype=torch.float64)
    p = p_mean_variance(schedule64, out, xt, torch.tensor([10, 900]), clip_denoised=True)
    assert p.pred_x0.abs().max() <= 1.0


@pytest.mark.parametrize("kw, words", [
    (dict(prediction_type="score"), "prediction_type"),
    (dict(variance_type="learned"), "variance_type"),
])
def test_bad_options(schedule64, kw, words):
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=words):
        p_mean_variance(schedule64, x, x, torch.tensor([1, 2]), **kw)


def test_shape_mismatch(schedule64):
    with pytest.raises(ValueError, match="shape"):
        p_mean_variance(schedule64, torch.zeros(2, 3, dtype=torch.float64),
                        torch.zeros(2, 2, dtype=torch.float64), torch.tensor([1, 2]))
