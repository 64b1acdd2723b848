"""L_simple and the variational bound against independent computations."""

import math

import numpy as np
import pytest
import torch
from conftest import gen
from scipy.stats import norm

from diffusion_lib import (
    GaussianMixture,
    GaussianMixtureOracle,
    NoiseSchedule,
    discretized_gaussian_log_likelihood,
    l_simple,
    normal_kl,
    prior_bpd,
    variational_bound,
    vb_term_bpd,
)


def test_normal_kl_matches_torch_distributions():
    g = gen()
    m1, m2 = (torch.randn(100, generator=g, dtype=torch.float64),
              torch.randn(100, generator=g, dtype=torch.float64))
    lv1, lv2 = (torch.randn(100, generator=g, dtype=torch.float64),
                torch.randn(100, generator=g, dtype=torch.float64))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    kl = normal_kl(m1, lv1, m2, lv2)
    assert torch.allclose(kl, ref, rtol=1e-10)
    assert (kl >= 0).all() and normal_kl(m1, lv1, m1, lv1).abs().max() < 1e-12


def test_discretized_likelihood_against_scipy_and_sums_to_one():
    grid = torch.linspace(-1, 1, 256, dtype=torch.float64)          # the 8-bit values
    for mean, std in [(0.0, 0.5), (0.93, 0.01), (-0.999, 0.003), (0.2, 3.0), (0.5, 1e-4)]:
        logp = discretized_gaussian_log_likelihood(grid, torch.tensor(mean, dtype=torch.float64),
                                                   torch.tensor(math.log(std), dtype=torch.float64))
        edges = np.concatenate([[-np.inf], (grid[:-1].numpy() + grid[1:].numpy()) / 2, [np.inf]])
        ref = norm.cdf(edges[1:], mean, std) - norm.cdf(edges[:-1], mean, std)
        ok = ref > 1e-10            # where the mass is representable, agree closely
        np.testing.assert_allclose(logp.exp().numpy()[ok], ref[ok], rtol=1e-7, atol=1e-12)
        assert abs(logp.exp().sum().item() - 1.0) < 1e-6


def test_prior_term_is_negligible_for_the_default_schedule():
    s = NoiseSchedule.linear(dtype=torch.float64)
    x0 = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64)
    lt = prior_bpd(s, x0).item()
    ab = float(np.prod(1 - np.linspace(1e-4, 0.02, 1000)))
    # KL(N(sqrt(ab) x, 1 - ab) || N(0, 1)) per dim, averaged, in bits (independent formula)
    ref = np.mean([0.5 * ((1 - ab) + ab * x * x - 1 - math.log(1 - ab)) for x in (-1, 0, 1)])
    assert lt == pytest.approx(ref / math.log(2), rel=1e-6)
    assert 0 < lt < 1e-4


def test_kl_terms_are_nonnegative_for_any_model():
    s = NoiseSchedule.linear(dtype=torch.float64)
    g = gen(1)
    x0 = torch.randint(0, 256, (64, 4), generator=g).double() / 127.5 - 1
    for step in [1, 10, 500, 999]:
        t = torch.full((64,), step)
        xt = torch.randn(64, 4, generator=g, dtype=torch.float64)
        out = 3 * torch.randn(64, 4, generator=g, dtype=torch.float64)
        for vt in ["fixed_small", "fixed_large"]:
            assert (vb_term_bpd(s, out, x0, xt, t, variance_type=vt) >= -1e-12).all()


def quantized_gaussian_data(n, D=3, std=0.3, seed=0):
    x = torch.randn(n, D, generator=gen(seed), dtype=torch.float64) * std
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1     # on the 8-bit grid


def test_oracle_bound_beats_perturbed_models():
    """On (quantised) Gaussian data the exact denoiser gives a lower bound than perturbed
    ones; paired on the same x_0, t and noise so the comparison is sharp."""
    s = NoiseSchedule.linear(100, 1e-3, 0.2, dtype=torch.float64)   # T = 100 keeps this fast
    std = 0.3
    oracle = GaussianMixtureOracle(s, GaussianMixture([1.0], [[0.0] * 3], [std ** 2]))
    x0 = quantized_gaussian_data(2000, std=std)
    best = variational_bound(s, oracle, x0, generator=gen(7))
    assert best.terms_bpd.shape == (2000, 100) and best.prior_bpd.shape == (2000,)
    assert (best.terms_bpd[:, 1:] >= 0).all()
    for name, model in [("scaled", lambda x, t: 1.05 * oracle(x, t)),
                        ("shifted", lambda x, t: oracle(x, t) + 0.03),
                        ("zero", lambda x, t: torch.zeros_like(x))]:
        worse = variational_bound(s, model, x0, generator=gen(7))
        diff = worse.total_bpd - best.total_bpd
        assert diff.mean() > 5 * diff.std() / math.sqrt(len(diff)), name


def test_bound_is_above_the_true_entropy_for_gaussian_data():
    """-E log p(x_0) <= E[bound]: for Gaussian data quantised to 8 bits the discrete entropy
    is known (differential entropy - log bin width) and the bound may not go below it."""
    s = NoiseSchedule.linear(dtype=torch.float64)
    std = 0.3
    oracle = GaussianMixtureOracle(s, GaussianMixture([1.0], [[0.0]], [std ** 2]))
    x0 = quantized_gaussian_data(4000, D=1, std=std, seed=3)
    bound = variational_bound(s, oracle, x0, generator=gen(8)).total_bpd
    entropy_bits = ((0.5 * math.log(2 * math.pi * math.e * std ** 2) - math.log(2 / 255))
                    / math.log(2))
    mean, se = bound.mean().item(), bound.std().item() / math.sqrt(len(bound))
    assert entropy_bits - 5 * se < mean < entropy_bits + 1.0


def test_kl_terms_match_their_closed_form_for_gaussian_data():
    """For x_0 ~ N(0, v) and the exact denoiser, E[L_t] = c1_t^2 Var(x_0 | x_t) / (2 beta_tilde_t)
    nats per dimension (both Gaussians of Eq. 5 share the variance; the means differ by
    c1_t (x_0 - E[x_0 | x_t])), with Var(x_0 | x_t) = v s_t^2 / (a_t^2 v + s_t^2)."""
    s = NoiseSchedule.linear(200, 5e-4, 0.1, dtype=torch.float64)
    v, N = 0.09, 3000
    oracle = GaussianMixtureOracle(s, GaussianMixture([1.0], [[0.0, 0.0]], [v]))
    x0 = torch.randn(N, 2, generator=gen(12), dtype=torch.float64) * math.sqrt(v)
    terms = variational_bound(s, oracle, x0, generator=gen(13)).terms_bpd[:, 1:]  # (N, T-1)
    b = np.linspace(5e-4, 0.1, 200)
    ab = np.cumprod(1 - b)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    c1 = np.sqrt(ab_prev) * b / (1 - ab)
    post_var = b * (1 - ab_prev) / (1 - ab)
    cond_var = v * (1 - ab) / (ab * v + 1 - ab)
    exact = (c1 ** 2 * cond_var)[1:] / (2 * post_var[1:]) / math.log(2)  # bits, per t >= 1
    total = terms.sum(1)
    assert abs(total.mean().item() - exact.sum()) < 5 * total.std().item() / math.sqrt(N)
    per_t = terms.mean(0).numpy()
    se_t = terms.std(0).numpy() / math.sqrt(N)
    assert (np.abs(per_t - exact) < 5 * se_t + 1e-12).mean() > 0.99


def test_l_simple_targets_are_related_exactly():
    """With the same model estimate, ||v - v_hat||^2 = ||eps - eps_hat||^2 / ab and
    ||x0 - x0_hat||^2 = (1 - ab) / ab ||eps - eps_hat||^2 (from Eq. 4)."""
    s = NoiseSchedule.cosine(dtype=torch.float64)
    mix = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [0.1, 0.2])
    x0 = mix.sample(256, gen(9))
    t = torch.randint(0, 1000, (256,), generator=gen(10))
    noise = torch.randn(256, 2, generator=gen(11), dtype=torch.float64)
    losses = {k: l_simple(s, GaussianMixtureOracle(s, mix, k), x0, t, noise, prediction_type=k)
              for k in ["epsilon", "x0", "v"]}
    ab = s.alpha_bars[t]
    assert torch.allclose(losses["v"], losses["epsilon"] / ab, rtol=1e-8)
    assert torch.allclose(losses["x0"], losses["epsilon"] * (1 - ab) / ab, rtol=1e-8)


def test_l_simple_draws_t_and_noise_from_the_generator():
    s = NoiseSchedule.linear()
    model = lambda x, t: x * 0.5  # noqa: E731
    x0 = torch.randn(8, 2, generator=gen(1))
    assert torch.equal(l_simple(s, model, x0, generator=gen(2)),
                       l_simple(s, model, x0, generator=gen(2)))
    assert not torch.equal(l_simple(s, model, x0, generator=gen(2)),
                           l_simple(s, model, x0, generator=gen(3)))
    with pytest.raises(ValueError, match="model output shape"):
        l_simple(s, lambda x, t: x[:, :1], x0)
    with pytest.raises(ValueError, match="prediction_type"):
        l_simple(s, model, x0, prediction_type="score")


def test_discretized_likelihood_rejects_shapes_that_do_not_broadcast_to_x():
    from diffusion_lib import discretized_gaussian_log_likelihood
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"broadcast to x's shape \(2, 3\)"):
        discretized_gaussian_log_likelihood(x, torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="broadcast"):
        discretized_gaussian_log_likelihood(x, torch.zeros(5, 2, 3), torch.zeros(1))
    out = discretized_gaussian_log_likelihood(x, torch.zeros(2, 3), torch.zeros(2, 1))
    assert out.shape == (2, 3)
