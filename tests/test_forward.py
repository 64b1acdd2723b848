"""The forward process: the sequential chain against the closed form, by Monte Carlo
with tolerances from the sample size (5 standard errors)."""

import math

import numpy as np
import pytest
import torch
from conftest import gen

from diffusion_lib import (
    NoiseSchedule,
    q_mean_variance,
    q_sample,
    q_sample_chain,
    q_step,
    reparameterize,
)


def test_chain_matches_closed_form_by_monte_carlo():
    s = NoiseSchedule.linear(dtype=torch.float64)
    N = 6000
    x0 = torch.tensor([1.5, -0.7, 0.0], dtype=torch.float64).repeat(N, 1)     # (N, 3)
    path = q_sample_chain(s, x0, generator=gen(1), return_trajectory=True)  # (T+1, N, 3)
    assert path.shape == (1001, N, 3)
    assert torch.equal(path[0], x0)
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))   # independent alpha_bar
    for k in [1, 10, 100, 500, 1000]:       # k steps taken = paper's x_k = 0-indexed t = k - 1
        xs = path[k]
        mean_expected = math.sqrt(ab[k - 1]) * x0[0]
        var_expected = 1 - ab[k - 1]
        se_mean = math.sqrt(var_expected / N)
        se_var = var_expected * math.sqrt(2 / (N - 1))
        assert (xs.mean(0) - mean_expected).abs().max() < 5 * se_mean, k
        assert (xs.var(0) - var_expected).abs().max() < 5 * se_var, k
        # the library's own closed form agrees with the independent numbers exactly
        m, v = q_mean_variance(s, x0[:1], k - 1)
        assert torch.allclose(m[0], mean_expected, rtol=1e-12)
        assert v.item() == pytest.approx(var_expected, rel=1e-12)


def test_closed_form_samples_have_the_closed_form_moments():
    s = NoiseSchedule.cosine(dtype=torch.float64)
    N = 20000
    x0 = torch.full((N, 1), 0.8, dtype=torch.float64)
    for t in [0, 250, 999]:
        xt = q_sample(s, x0, t, generator=gen(t))
        ab = s.alpha_bars[t].item()
        assert abs(xt.mean().item() - math.sqrt(ab) * 0.8) < 5 * math.sqrt((1 - ab) / N)
        assert abs(xt.var().item() - (1 - ab)) < 5 * (1 - ab) * math.sqrt(2 / (N - 1))


def test_step_preserves_unit_variance():
    """Why sqrt(1 - beta_t): Var x_t = (1 - beta_t) Var x_{t-1} + beta_t keeps 1 at 1."""
    s = NoiseSchedule([0.3, 0.5, 0.9], dtype=torch.float64)
    N = 40000
    x = torch.randn(N, 1, generator=gen(2), dtype=torch.float64)
    for t in range(3):
        x = q_step(s, x, t, generator=gen(10 + t))
        assert abs(x.var().item() - 1.0) < 5 * math.sqrt(2 / (N - 1))


def test_q_sample_formula_with_given_noise(schedule64):
    x0 = torch.randn(4, 2, 3, generator=gen(3), dtype=torch.float64)
    eps = torch.randn(4, 2, 3, generator=gen(4), dtype=torch.float64)
    t = torch.tensor([0, 5, 500, 999])
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t.numpy()]
    expected = (np.sqrt(ab)[:, None, None] * x0.numpy()
                + np.sqrt(1 - ab)[:, None, None] * eps.numpy())
    np.testing.assert_allclose(q_sample(schedule64, x0, t, noise=eps).numpy(), expected, rtol=1e-12)


def test_q_step_formula_with_given_noise(schedule64):
    x = torch.randn(3, 2, generator=gen(5), dtype=torch.float64)
    eps = torch.randn(3, 2, generator=gen(6), dtype=torch.float64)
    beta = 1e-4 + 7 * (0.02 - 1e-4) / 999            # betas[7], 0-indexed
    expected = math.sqrt(1 - beta) * x + math.sqrt(beta) * eps
    assert torch.allclose(q_step(schedule64, x, 7, noise=eps), expected, rtol=1e-12)


def test_same_generator_same_samples():
    s = NoiseSchedule.linear()
    x0 = torch.zeros(5, 2)
    a = q_sample_chain(s, x0, num_steps=20, generator=gen(7))
    b = q_sample_chain(s, x0, num_steps=20, generator=gen(7))
    c = q_sample_chain(s, x0, num_steps=20, generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(q_sample(s, x0, 3, generator=gen(9)), q_sample(s, x0, 3, generator=gen(9)))


def test_reparameterization_passes_gradients():
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    sigma = torch.tensor([2.0, 0.1], requires_grad=True)
    eps = torch.tensor([0.3, -1.2])
    z = reparameterize(mu, sigma, eps)
    z.sum().backward()
    assert torch.equal(mu.grad, torch.ones(2))      # dz/dmu = 1
    assert torch.equal(sigma.grad, eps)             # dz/dsigma = eps
    # a plain sample from torch.normal carries no gradient at all
    assert not torch.normal(mu.detach(), sigma.detach()).requires_grad


@pytest.mark.parametrize("call, words", [
    (lambda s: q_sample(s, torch.zeros(2, 3), torch.tensor([0, 1000])), r"\[0, 999\]"),
    (lambda s: q_sample(s, torch.zeros(2, 3), torch.tensor([0.0, 1.0])), "integer"),
    (lambda s: q_sample(s, torch.zeros(2, 3), torch.tensor([0, 1, 2])), r"shape \(B,\)"),
    (lambda s: q_sample(s, torch.zeros(2, 3, dtype=torch.long), 0), "floating-point"),
    (lambda s: q_sample(s, torch.zeros(2, 3), 0, noise=torch.zeros(2, 2)), "shape"),
    (lambda s: q_sample_chain(s, torch.zeros(2, 3), num_steps=1001), r"\[0, 1000\]"),
    (lambda s: q_step(s, torch.zeros(0, 3), 0), "B >= 1"),
    (lambda s: q_sample(s, torch.zeros(2, 3), -1), r"\[0, 999\]"),
])
def test_bad_inputs_raise_clear_errors(call, words):
    with pytest.raises(ValueError, match=words):
        call(NoiseSchedule.linear())


def test_trajectory_length_follows_num_steps():
    s = NoiseSchedule.linear()
    assert q_sample_chain(s, torch.zeros(2, 4), num_steps=7, return_trajectory=True,
                          generator=gen()).shape == (8, 2, 4)
