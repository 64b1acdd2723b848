"""The closed-form denoiser against independent computations: scipy densities,
autograd of the log-density, and self-normalised importance sampling."""

import math

import numpy as np
import pytest
import torch
from conftest import gen
from scipy.stats import multivariate_normal

from diffusion_lib import GaussianMixture, GaussianMixtureOracle, NoiseSchedule, l_simple

MIX = GaussianMixture([0.25, 0.75], [[-1.0, 0.5], [1.2, -0.3]],
                      [[[0.3, 0.1], [0.1, 0.2]], [[0.15, -0.05], [-0.05, 0.4]]])


def test_log_prob_matches_scipy():
    x = torch.randn(50, 2, generator=gen(), dtype=torch.float64) * 1.5
    ref = np.log(sum(w * multivariate_normal(m, c).pdf(x.numpy())
                     for w, m, c in zip(MIX.weights.numpy(), MIX.means.numpy(),
                                        MIX.covariances.numpy())))
    np.testing.assert_allclose(MIX.log_prob(x).numpy(), ref, rtol=1e-10)


def test_score_is_the_gradient_of_log_prob():
    x = torch.randn(20, 2, generator=gen(1), dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(MIX.log_prob(x).sum(), x)
    assert torch.allclose(MIX.score(x.detach()), grad, atol=1e-12)


def test_moments_and_sampling():
    x = MIX.sample(100000, gen(2))
    assert torch.allclose(x.mean(0), MIX.mean(),
                          atol=5 * (MIX.covariance().diagonal() / 1e5).sqrt().max())
    assert torch.allclose(torch.cov(x.T), MIX.covariance(), atol=0.02)


@pytest.mark.parametrize("t", [40, 100, 400, 900])
def test_oracle_eps_matches_importance_sampling(t):
    """E[eps | x_t = y] = sum_i w_i (y - a x0_i) / s with w_i proportional to N(y; a x0_i, s^2 I),
    x0_i drawn from the data: no formula of the oracle is used."""
    s = NoiseSchedule.linear(dtype=torch.float64)
    oracle = GaussianMixtureOracle(s, MIX)
    x0 = MIX.sample(200000, gen(3))                                   # (N, 2)
    a, sd = s.sqrt_alpha_bars[t], s.sqrt_one_minus_alpha_bars[t]
    y = torch.tensor([[0.0, 0.0], [1.0, -0.5], [-1.2, 0.8]], dtype=torch.float64)
    logw = -0.5 * (((y[:, None, :] - a * x0[None]) / sd) ** 2).sum(-1)   # (3, N)
    w = torch.softmax(logw, dim=1)
    ess = 1.0 / (w ** 2).sum(1)
    eps_is = (w[:, :, None] * (y[:, None, :] - a * x0[None]) / sd).sum(1)
    eps = oracle(y, torch.full((3,), t))
    # importance-sampling error ~ 1 / sqrt(effective sample size)
    assert ((eps - eps_is).abs().max(dim=1).values < 5 / ess.sqrt()).all()
    assert ess.min() > 100


def test_oracle_minimises_l_simple_and_hits_the_exact_minimum():
    """For Gaussian data N(0, v I) the optimal MSE at step t is 1 - s^2 / (a^2 v + s^2) per
    dimension, an independent formula; the oracle reaches it, and perturbing it costs."""
    s = NoiseSchedule.linear(dtype=torch.float64)
    v, D, N, t = 0.2, 3, 40000, 300
    mix = GaussianMixture([1.0], [[0.0] * D], [v])
    oracle = GaussianMixtureOracle(s, mix)
    x0 = mix.sample(N, gen(4))
    tt = torch.full((N,), t)
    noise = torch.randn(N, D, generator=gen(5), dtype=torch.float64)
    loss = l_simple(s, oracle, x0, tt, noise)
    ab = s.alpha_bars[t].item()
    exact = 1 - (1 - ab) / (ab * v + 1 - ab)
    assert abs(loss.mean().item() - exact) < 5 * loss.std().item() / math.sqrt(N)
    worse = l_simple(s, lambda x, t_: 1.1 * oracle(x, t_), x0, tt, noise)
    diff = worse - loss
    assert diff.mean() > 5 * diff.std() / math.sqrt(N)


def test_prediction_types_agree():
    s = NoiseSchedule.cosine(dtype=torch.float64)
    y = torch.randn(10, 2, generator=gen(6), dtype=torch.float64)
    t = torch.arange(0, 1000, 100)
    eps = GaussianMixtureOracle(s, MIX, "epsilon")(y, t)
    x0 = GaussianMixtureOracle(s, MIX, "x0")(y, t)
    v = GaussianMixtureOracle(s, MIX, "v")(y, t)
    a = s.sqrt_alpha_bars[t][:, None]
    sd = s.sqrt_one_minus_alpha_bars[t][:, None]
    assert torch.allclose(a * x0 + sd * eps, y, atol=1e-10)      # Eq. (4) with the estimates
    assert torch.allclose(v, a * eps - sd * x0, atol=1e-10)


@pytest.mark.parametrize("args, words", [
    (([1.0], [[0.0, 1.0]], [[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
    (([1.0, -1.0], [[0.0], [1.0]], [1.0, 1.0]), "positive numbers"),
    (([1.0], [0.0, 1.0], [1.0]), r"\(K, D\)"),
    (([1.0], [[0.0, 1.0]], torch.ones(1, 3, 3)), r"\(K, D, D\)"),
])
def test_bad_mixtures(args, words):
    with pytest.raises(ValueError, match=words):
        GaussianMixture(*args)
