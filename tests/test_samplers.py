"""Samplers with the exact (oracle) denoiser reproduce Gaussian mixtures; DDIM with
eta = 1 is DDPM; seeds reproduce samples."""

import math

import numpy as np
import pytest
import torch
from conftest import gen

from diffusion_lib import (
    GaussianMixture,
    GaussianMixtureOracle,
    NoiseSchedule,
    ddim_sample_loop,
    ddim_step,
    ddim_timesteps,
    p_mean_variance,
    p_sample,
    p_sample_loop,
)

# Modes at least 14 standard deviations apart: assigning a sample to its nearest mean
# misplaces a fraction below 1e-9, so per-mode statistics are those of the components.
MIX_1D = GaussianMixture([0.3, 0.7], [[-2.0], [1.5]], [0.15 ** 2, 0.25 ** 2])
MIX_2D = GaussianMixture(
    [0.2, 0.3, 0.5],
    [[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]],
    [[[0.04, 0.01], [0.01, 0.02]], [[0.02, -0.005], [-0.005, 0.03]], [[0.03, 0.0], [0.0, 0.03]]])


def check_mixture(x, mix, allowance=0.0, weight_allowance=0.0):
    """Per-mode weight, mean and covariance within 5 standard errors (+ an allowance in
    units of the mode's standard deviation, for a sampler with discretization error)."""
    x = x.double()
    assign = torch.cdist(x, mix.means).argmin(dim=1)
    N = x.shape[0]
    for k in range(mix.num_components):
        w = mix.weights[k].item()
        sel = x[assign == k]
        n = sel.shape[0]
        assert abs(n / N - w) < 5 * math.sqrt(w * (1 - w) / N) + weight_allowance, ("weight", k)
        cov = mix.covariances[k]
        std = cov.diagonal().sqrt()
        err_mean = (sel.mean(0) - mix.means[k]).abs()
        assert (err_mean < 5 * std / math.sqrt(n) + allowance * std).all(), ("mean", k, err_mean)
        emp = torch.cov(sel.T).reshape(cov.shape)
        # SE of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n) for Gaussian data
        se = ((cov.diagonal()[:, None] * cov.diagonal()[None] + cov ** 2) / n).sqrt()
        scale = std[:, None] * std[None]
        assert ((emp - cov).abs() < 5 * se + 2 * allowance * scale).all(), ("cov", k, emp, cov)


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.linear(dtype=torch.float64)


@pytest.mark.parametrize("mix, n", [(MIX_1D, 6000), (MIX_2D, 4000)])
def test_ddpm_with_oracle_reproduces_mixture(schedule, mix, n):
    model = GaussianMixtureOracle(schedule, mix)
    x = p_sample_loop(schedule, model, (n, mix.dim), generator=gen(1), progress=False)
    check_mixture(x, mix)


@pytest.mark.parametrize("mix, n", [(MIX_1D, 6000), (MIX_2D, 4000)])
def test_ddim50_with_oracle_reproduces_mixture(schedule, mix, n):
    """DDIM with 50 steps has a real discretization error: on a single Gaussian of
    variance v it multiplies the standard deviation by prod_i (a_{i-1} a_i v + s_{i-1} s_i) / c_i
    (test_ddim_on_gaussian_data_is_the_predicted_linear_map), a few per cent here. The
    allowance below (10% of a mode's standard deviation) is that bound, not slack."""
    model = GaussianMixtureOracle(schedule, mix)
    x = ddim_sample_loop(schedule, model, (n, mix.dim), num_steps=50, generator=gen(2),
                         progress=False)
    check_mixture(x, mix, allowance=0.10, weight_allowance=0.01)


def test_ddim_on_gaussian_data_is_the_predicted_linear_map(schedule):
    """For x_0 ~ N(m, v) the oracle is affine in x_t, so each DDIM step maps the deviation
    x_t - a_t m by (a_prev a_t v + s_prev s_t) / (a_t^2 v + s_t^2) (Eq. 12 of the DDIM
    paper with the exact eps): the final spread is known in closed form."""
    m, v = 0.7, 0.09
    mix = GaussianMixture([1.0], [[m]], [v])
    x_T = torch.randn(20000, 1, generator=gen(3), dtype=torch.float64)
    ts = ddim_timesteps(1000, 50)
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    factor = 1.0
    for t, prev in zip(ts[::-1], ([-1] + ts[:-1])[::-1]):
        a, s = math.sqrt(ab[t]), math.sqrt(1 - ab[t])
        ap, sp = (math.sqrt(ab[prev]), math.sqrt(1 - ab[prev])) if prev >= 0 else (1.0, 0.0)
        factor *= (ap * a * v + sp * s) / (a * a * v + s * s)
    x = ddim_sample_loop(schedule, GaussianMixtureOracle(schedule, mix), x_T=x_T, num_steps=50,
                         progress=False)
    a_T = math.sqrt(ab[-1])
    expected = m + factor * (x_T - a_T * m)       # deterministic: exact per sample
    assert torch.allclose(x, expected, atol=1e-9)
    assert factor < 0.97 * math.sqrt(v)   # 50 DDIM steps shrink this Gaussian by over 3%


def test_ddim_eta1_full_sequence_equals_ddpm_step_for_step(schedule):
    mix = MIX_2D
    model = GaussianMixtureOracle(schedule, mix)
    x = torch.randn(64, 2, generator=gen(4), dtype=torch.float64)
    for step in [999, 700, 300, 10, 1, 0]:
        t = torch.full((64,), step)
        noise = torch.randn(64, 2, generator=gen(step), dtype=torch.float64)
        ddpm = p_sample(schedule, model, x, t, noise=noise)
        out = model(x, t)
        ddim = ddim_step(schedule, out, x, t, t - 1, eta=1.0, noise=noise)
        assert torch.allclose(ddpm, ddim, atol=1e-10, rtol=0), step
    # and the whole loops, from the same generator
    a = p_sample_loop(schedule, model, (32, 2), generator=gen(5), progress=False)
    b = ddim_sample_loop(schedule, model, (32, 2), timesteps=range(1000), eta=1.0,
                         generator=gen(5), progress=False)
    assert torch.allclose(a, b, atol=1e-8)


def test_last_ddpm_step_adds_no_noise(schedule):
    model = GaussianMixtureOracle(schedule, MIX_1D)
    x = torch.randn(8, 1, generator=gen(6), dtype=torch.float64)
    t = torch.zeros(8, dtype=torch.long)
    a = p_sample(schedule, model, x, t, generator=gen(7))
    b = p_sample(schedule, model, x, t, generator=gen(8))
    assert torch.equal(a, b)
    assert torch.allclose(a, p_mean_variance(schedule, model(x, t), x, t).mean)


def test_same_seed_same_samples_float32():
    s = NoiseSchedule.linear(100)
    model = GaussianMixtureOracle(s, MIX_1D)
    for loop in [p_sample_loop, ddim_sample_loop]:
        a = loop(s, model, (16, 1), generator=gen(9), progress=False)
        b = loop(s, model, (16, 1), generator=gen(9), progress=False)
        c = loop(s, model, (16, 1), generator=gen(10), progress=False)
        assert a.dtype == torch.float32 and torch.equal(a, b) and not torch.equal(a, c)


def test_trajectories_and_shapes():
    s = NoiseSchedule.linear(40)
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731  any callable model(x_t, t) works
    path = p_sample_loop(s, model, (3, 1, 4, 4), generator=gen(), return_trajectory=True,
                         progress=False)
    assert path.shape == (41, 3, 1, 4, 4)
    path = ddim_sample_loop(s, model, (3, 2), num_steps=7, generator=gen(),
                            return_trajectory=True, progress=False)
    assert path.shape == (8, 3, 2)
    assert ddim_timesteps(1000, 50)[0] == 0 and ddim_timesteps(1000, 50)[-1] == 999


def test_clip_denoised_keeps_images_in_range():
    s = NoiseSchedule.linear(50)
    model = lambda x, t: -3 * x  # noqa: E731  a bad model that would push x_0 out of [-1, 1]
    x = p_sample_loop(s, model, (4, 1, 2, 2), generator=gen(), clip_denoised=True, progress=False)
    assert x.abs().max() <= 1.0 + 1e-6
    x = ddim_sample_loop(s, model, (4, 1, 2, 2), num_steps=10, generator=gen(),
                         clip_denoised=True, progress=False)
    assert x.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("call, words", [
    (lambda s, m: ddim_sample_loop(s, m, (2, 1), num_steps=1001, progress=False), r"\[1, T=1000\]"),
    (lambda s, m: ddim_sample_loop(s, m, (2, 1), num_steps=0, progress=False), r"\[1, T=1000\]"),
    (lambda s, m: ddim_sample_loop(s, m, (2, 1), timesteps=[5, 3], progress=False), "increasing"),
    (lambda s, m: ddim_sample_loop(s, m, (2, 1), timesteps=[0, 1000], progress=False),
     r"\[0, 999\]"),
    (lambda s, m: ddim_sample_loop(s, m, (2, 1), eta=-1.0, progress=False), "eta"),
    (lambda s, m: p_sample_loop(s, m, (2, 0), progress=False), "positive ints"),
    (lambda s, m: p_sample_loop(s, lambda x, t: x[:, :1], (2, 3), progress=False),
     "returned shape"),
])
def test_sampler_bad_inputs(call, words):
    s = NoiseSchedule.linear()
    with pytest.raises(ValueError, match=words):
        call(s, lambda x, t: torch.zeros_like(x))


# ---------------------------------------------------------------- ddim_step's own checks

def _ddim_args(B=3, D=2):
    x = torch.randn(B, D, generator=gen(5))
    return x, torch.zeros_like(x), torch.full((B,), 10, dtype=torch.long)


@pytest.mark.parametrize("t_prev, eta, words", [
    (torch.full((3,), 11, dtype=torch.long), 0.0, r"t_prev < t.*t_prev = 11 at t = 10"),
    (torch.full((3,), 10, dtype=torch.long), 0.0, r"t_prev < t"),
    (torch.full((3,), -2, dtype=torch.long), 0.0, r">= -1"),
    (torch.full((3,), 5, dtype=torch.long), -0.5, r"eta must be a finite number >= 0"),
    (torch.full((3,), 5, dtype=torch.long), float("nan"), r"eta must be"),
    (torch.full((4,), 5, dtype=torch.long), 0.0, r"t_prev must have shape \(B,\) = \(3,\)"),
    (torch.full((3,), 5.0), 0.0, r"t_prev must be an integer tensor"),
])
def test_ddim_step_rejects_bad_t_prev_and_eta(t_prev, eta, words):
    x, out, t = _ddim_args()
    with pytest.raises(ValueError, match=words):
        ddim_step(NoiseSchedule.linear(), out, x, t, t_prev, eta=eta)


def test_ddim_step_takes_one_minus_alpha_bar_from_the_float64_buffer():
    """x_t = sqrt(1 - ab_t) eps gives x0_hat = 0, so a DDIM step to t_prev = 0 lands on
    sqrt(1 - ab_0) eps: 0.01 eps exactly. 1 - ab_0 formed in float32 is off by 1.7e-4."""
    s = NoiseSchedule.linear()                                       # float32 buffers
    eps = torch.ones(1, 1)
    t, t_prev = torch.tensor([1]), torch.tensor([0])
    x_t = s.sqrt_one_minus_alpha_bars[1] * eps
    x_prev = ddim_step(s, eps, x_t, t, t_prev, eta=0.0)
    exact = math.sqrt(1 - (1 - 1e-4))                                # float64: 0.01
    assert abs(x_prev.item() / exact - 1) < 1e-5
    assert abs(math.sqrt(1 - np.float32(1 - 1e-4)) / exact - 1) > 5e-5   # what float32 gave


def test_nan_inputs_and_nan_models_are_caught():
    """NaN in: ValueError on the CPU at every entry point; NaN out of a model: ValueError at
    the end of a sampling loop (one check per loop, no per-step sync on a GPU)."""
    from diffusion_lib import prior_bpd, q_sample
    s = NoiseSchedule.linear(20)
    x = torch.zeros(4, 2)
    x[1, 0] = float("nan")
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    t = torch.full((4,), 3, dtype=torch.long)
    with pytest.raises(ValueError, match="x0 holds 1 NaN or inf"):
        q_sample(s, x, t)
    with pytest.raises(ValueError, match="x_t holds 1 NaN"):
        p_sample(s, zero, x, t)
    with pytest.raises(ValueError, match="x0 holds 1 NaN"):
        prior_bpd(s, x)
    with pytest.raises(ValueError, match="x_t holds"):
        ddim_step(s, torch.zeros_like(x), x, t, t - 1)
    with pytest.raises(ValueError, match="x_T holds"):
        p_sample_loop(s, zero, x_T=x, progress=False)
    nan_model = lambda x, t: torch.full_like(x, float("nan"))  # noqa: E731
    with pytest.raises(ValueError, match="NaN"):
        p_sample_loop(s, nan_model, (4, 2), generator=gen(), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        ddim_sample_loop(s, nan_model, (4, 2), num_steps=1, generator=gen(), progress=False)
