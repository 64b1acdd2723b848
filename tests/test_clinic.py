"""Numbers chapter 10 (the clinic) relies on, each against an independent computation."""

import math

import numpy as np
import torch

import diffusion_lib as dl
from diffusion_lib import load_dataset
from diffusion_lib.metrics import frechet_distance


def test_frechet_distance_bias_of_two_gaussian_samples():
    """E FD(two samples of N points of N(0, I_D)) ~ 2D/N + D(D+1)/(2(N-1)), by Monte Carlo
    within 5 standard errors plus the formula's own O(1/N^2) error."""
    g = torch.Generator().manual_seed(0)
    D, n, reps = 6, 400, 300
    values = np.array([frechet_distance(torch.randn(n, D, generator=g, dtype=torch.float64),
                                        torch.randn(n, D, generator=g, dtype=torch.float64))
                       for _ in range(reps)])
    formula = 2 * D / n + D * (D + 1) / (2 * (n - 1))
    se = values.std(ddof=1) / math.sqrt(reps)
    assert abs(values.mean() - formula) < 5 * se + 0.05 * formula, (values.mean(), formula)


def test_mixture_negative_log_likelihood_by_numerical_integration():
    """The chapter's exact -log p(x_0) (an average of -mixture.log_prob over draws) against
    the differential entropy -integral p log p computed on a fine grid."""
    mixture = load_dataset("8gaussians", split="test").training_mixture
    g = torch.Generator().manual_seed(0)
    x = mixture.sample(200_000, generator=g)
    nll = -mixture.log_prob(x)
    se = nll.std().item() / math.sqrt(len(nll))
    grid = torch.linspace(-3.5, 3.5, 1401, dtype=torch.float64)
    h = (grid[1] - grid[0]).item()
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([gx.flatten(), gy.flatten()], 1)
    log_p = torch.cat([mixture.log_prob(chunk) for chunk in points.split(200_000)])
    p = log_p.exp()
    assert abs(p.sum().item() * h * h - 1) < 1e-4           # the grid holds all the mass
    entropy = -(p * log_p).sum().item() * h * h
    assert abs(nll.mean().item() - entropy) < 5 * se


def test_prior_term_of_wide_data():
    """L_T = KL(N(sqrt(ab_T) x0, (1 - ab_T) I) || N(0, I)) per dimension, in bits, by the
    closed form of two Gaussians, against the library's prior_bpd."""
    schedule = dl.NoiseSchedule.linear(dtype=torch.float64)
    x0 = torch.tensor([[150.0, -300.0], [0.5, 0.0]], dtype=torch.float64)
    ab = schedule.alpha_bars[-1].item()
    m, v = math.sqrt(ab) * x0, 1 - ab
    kl = 0.5 * (v + m ** 2 - 1 - math.log(v))                 # nats per dimension
    expected = (kl / math.log(2)).mean(1)
    assert torch.allclose(dl.prior_bpd(schedule, x0), expected, rtol=1e-6, atol=1e-9)


def test_ddim_with_eta_0_is_an_euler_step_in_sigma():
    """Chapter 10: x_t' / sqrt(ab_t') = x_t / sqrt(ab_t) + (sigma_t' - sigma_t) eps with
    sigma = sqrt((1 - ab) / ab), the alphas recomputed here from the betas in float64;
    t_prev = -1 (the data) has ab = 1, sigma = 0."""
    schedule = dl.NoiseSchedule.linear(dtype=torch.float64)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    sigma = ((1 - ab) / ab).sqrt()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([999, 999, 500, 120, 10, 3])
    t_prev = torch.tensor([979, 899, 480, 20, 0, -1])
    stepped = dl.ddim_step(schedule, eps, x, t, t_prev, eta=0.0)
    ab_prev = torch.where(t_prev >= 0, ab[t_prev.clamp(min=0)], 1.0)[:, None]
    sigma_prev = torch.where(t_prev >= 0, sigma[t_prev.clamp(min=0)], 0.0)[:, None]
    y = x / ab[t, None].sqrt() + (sigma_prev - sigma[t, None]) * eps
    assert torch.allclose(stepped, ab_prev.sqrt() * y, rtol=1e-9, atol=1e-12)


def test_sigma_at_the_ends_of_the_linear_schedule():
    """The figures chapter 10 quotes: sigma_T = 157 and sigma_1 = 0.01 for the paper's
    linear betas (1e-4 to 0.02, T = 1000), from the product of (1 - beta) in float64."""
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    sigma = np.sqrt((1 - ab) / ab)
    assert round(sigma[-1]) == 157 and round(sigma[0], 4) == 0.01
    schedule = dl.NoiseSchedule.linear(dtype=torch.float64)
    assert math.isclose(schedule.alpha_bars[-1].item(), ab[-1], rel_tol=1e-9)
