"""Classifier-free guidance and the exact conditional answers of a labelled Gaussian mixture,
against independent computations: the guidance formula from two separate network calls,
autograd of the noised log-densities, scipy, numpy re-implementations of guided DDIM (by
quadrature) and DDPM, and sampling moments within 5 standard errors."""

import math

import numpy as np
import pytest
import torch
from conftest import gen
from scipy.stats import multivariate_normal

from diffusion_lib import (
    GaussianMixture,
    GaussianMixtureOracle,
    NoiseSchedule,
    build_model,
    ddim_sample_loop,
    model_output_to_x0_eps,
    p_sample_loop,
)
from diffusion_lib.guidance import ClassifierFreeGuidance
from diffusion_lib.oracle import ConditionalGaussianMixtureOracle, GuidedGaussianMixtureOracle

# two overlapping classes in 2-D, of unequal weight and shape
MIX = GaussianMixture([0.35, 0.65], [[-0.6, 0.2], [0.5, -0.1]],
                      [[[0.30, 0.08], [0.08, 0.20]], [[0.25, -0.05], [-0.05, 0.40]]])


def perturbed(model, seed=0):
    """A network with every parameter nudged: fresh U-Nets output 0 (zero-init last layer)."""
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


class CountingModel(torch.nn.Module):
    """Wraps a conditional network and records the batch size of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.num_classes, self.calls = model, model.num_classes, []

    def forward(self, x, t, y=None):
        self.calls.append(x.shape[0])
        return self.model(x, t, y)


# ---------------------------------------------------------------- the guidance wrapper

@pytest.mark.parametrize("preset, shape", [("mlp", (6, 2)), ("tiny", (6, 1, 8, 8))])
def test_zero_guidance_is_the_conditional_model_and_no_class_the_unconditional(preset, shape):
    model = perturbed(build_model(preset, num_classes=4))
    x = torch.randn(shape, generator=gen(1))
    t = torch.tensor([0, 5, 100, 400, 800, 999])
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    with torch.no_grad():
        assert torch.equal(ClassifierFreeGuidance(model, y, 0.0)(x, t), model(x, t, y))
        unconditional = model(x, t)                                    # y=None: "no class"
        assert torch.equal(unconditional, model(x, t, torch.full((6,), 4)))
        for w in (0.0, 2.5):             # the label K is "no class": guidance changes nothing
            assert torch.allclose(ClassifierFreeGuidance(model, 4, w)(x, t), unconditional,
                                  atol=1e-6)


def test_guided_prediction_is_the_formula_from_two_separate_calls():
    """(1 + w) eps(x, y) - w eps(x), per sample, with per-sample labels and weights: the one
    batched call of the wrapper against two plain calls (float64)."""
    model = perturbed(build_model("mlp", num_classes=3, hidden=32)).double()
    x = torch.randn(5, 2, generator=gen(2), dtype=torch.float64)
    t = torch.tensor([3, 50, 300, 700, 999])
    y = torch.tensor([0, 2, 1, 1, 0])
    w = torch.tensor([0.0, 1.0, 3.0, 7.0, 0.5], dtype=torch.float64)
    with torch.no_grad():
        expected = ((1 + w)[:, None] * model(x, t, y) - w[:, None] * model(x, t))
        assert torch.allclose(ClassifierFreeGuidance(model, y, w)(x, t), expected, atol=1e-12)
        for k in range(3):                                        # one label, one weight
            expected = 4 * model(x, t, torch.full((5,), k)) - 3 * model(x, t)
            assert torch.allclose(ClassifierFreeGuidance(model, k, 3.0)(x, t), expected,
                                  atol=1e-12)


@pytest.mark.parametrize("w, calls", [(0.0, [8] * 10), (2.0, [16] * 10)])
def test_one_batched_network_call_per_sampling_step(w, calls):
    counting = CountingModel(perturbed(build_model("mlp", num_classes=2, hidden=16)))
    ddim_sample_loop(NoiseSchedule.linear(), ClassifierFreeGuidance(counting, 1, w), (8, 2),
                     num_steps=10, progress=False, generator=gen(3))
    assert counting.calls == calls


def test_guidance_works_for_every_prediction_type(schedule64):
    """x_0 and v are affine in eps given x_t, with weights summing to one: combining x_0 (or
    v) predictions gives the x_0 (or v) of the guided eps."""
    x = MIX.sample(6, gen(4))
    t = torch.tensor([1, 10, 100, 400, 800, 990])
    guided_eps = GuidedGaussianMixtureOracle(schedule64, MIX, 1, 2.0)(x, t)
    for prediction_type in ("x0", "v"):
        oracle = ConditionalGaussianMixtureOracle(schedule64, MIX, prediction_type)
        out = ClassifierFreeGuidance(oracle, 1, 2.0)(x, t)
        _, eps = model_output_to_x0_eps(schedule64, out, x, t, prediction_type)
        assert torch.allclose(eps, guided_eps, atol=1e-9)
        assert torch.allclose(out, GuidedGaussianMixtureOracle(schedule64, MIX, 1, 2.0,
                                                               prediction_type)(x, t), atol=1e-9)


@pytest.mark.parametrize("labels, scale, match", [
    (5, 1.0, "classes 0..2"), (-1, 1.0, "classes 0..2"), (1.5, 1.0, "integers"),
    (torch.tensor([[0]]), 1.0, "integers"), (True, 1.0, "integers"),
    (0, -1.0, ">= 0"), (0, float("nan"), ">= 0"), (0, "big", ">= 0"), (0, True, ">= 0"),
])
def test_bad_labels_and_weights(labels, scale, match):
    with pytest.raises(ValueError, match=match):
        ClassifierFreeGuidance(build_model("mlp", num_classes=3), labels, scale)


def test_guidance_needs_a_conditional_network_and_matching_batches():
    with pytest.raises(ValueError, match="not class-conditional"):
        ClassifierFreeGuidance(build_model("mlp"), 0, 1.0)
    guided = ClassifierFreeGuidance(build_model("mlp", num_classes=3), torch.tensor([0, 1]), 1.0)
    with pytest.raises(ValueError, match="2 entries, but the batch has 3"):
        guided(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------- exact answers

def test_posterior_is_bayes_rule_with_scipy_densities():
    x = torch.randn(40, 2, generator=gen(5), dtype=torch.float64)
    joint = np.stack([w * multivariate_normal(m, c).pdf(x.numpy()) for w, m, c in
                      zip(MIX.weights.numpy(), MIX.means.numpy(), MIX.covariances.numpy())], 1)
    np.testing.assert_allclose(MIX.posterior(x).numpy(), joint / joint.sum(1, keepdims=True),
                               rtol=1e-10)


def test_conditional_oracle_is_each_components_own_denoiser(schedule64):
    oracle = ConditionalGaussianMixtureOracle(schedule64, MIX)
    x = torch.randn(8, 2, generator=gen(6), dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 100, 300, 500, 800, 999])
    for k in range(2):
        single = GaussianMixture([1.0], MIX.means[k:k + 1], MIX.covariances[k:k + 1])
        assert torch.allclose(oracle(x, t, torch.full((8,), k)),
                              GaussianMixtureOracle(schedule64, single)(x, t), atol=1e-12)
    whole = GaussianMixtureOracle(schedule64, MIX)(x, t)
    assert torch.equal(oracle(x, t), whole) and torch.equal(oracle(x, t, torch.full((8,), 2)),
                                                            whole)
    mixed = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])                 # rows of different labels
    rows = [oracle(x[i:i + 1], t[i:i + 1], mixed[i:i + 1]) for i in range(8)]
    assert torch.allclose(oracle(x, t, mixed), torch.cat(rows), atol=1e-12)
    with pytest.raises(ValueError, match="0..2"):
        oracle(x, t, torch.full((8,), 3))


@pytest.mark.parametrize("w", [0.0, 1.0, 4.0])
def test_guided_oracle_is_the_score_of_the_tilted_density(schedule64, w):
    """-eps_w / s = grad [log p_t(x | k) + w log p_t(k | x)], by autograd of the noised
    mixture's log-densities; and the wrapper around the conditional oracle agrees."""
    for t in [5, 100, 400, 900]:
        ab = schedule64.alpha_bars[t]
        law = MIX.noised(ab.sqrt(), 1 - ab)                             # x_t's mixture
        x = law.sample(30, gen(t)).requires_grad_(True)
        tilted = law.component(1).log_prob(x) + w * law.posterior(x)[:, 1].log()
        (score,) = torch.autograd.grad(tilted.sum(), x)
        steps = torch.full((30,), t)
        eps = GuidedGaussianMixtureOracle(schedule64, MIX, 1, w)(x.detach(), steps)
        assert torch.allclose(eps, -(1 - ab).sqrt() * score, atol=1e-10)
        wrapped = ClassifierFreeGuidance(ConditionalGaussianMixtureOracle(schedule64, MIX), 1, w)
        assert torch.allclose(wrapped(x.detach(), steps), eps, atol=1e-10)


def test_standardized_mixture_is_the_law_of_the_standardized_data():
    mean, std = torch.tensor([0.3, -1.0]), torch.tensor([2.0, 0.5])
    z = MIX.standardized(mean, std)
    S = torch.diag(1 / std.double())
    assert torch.allclose(z.mean(), (MIX.mean() - mean) / std, atol=1e-12)
    assert torch.allclose(z.covariance(), S @ MIX.covariance() @ S, atol=1e-12)
    x = torch.randn(10, 2, generator=gen(7), dtype=torch.float64)
    # densities transform with the Jacobian |det S|
    assert torch.allclose(z.log_prob((x - mean) / std), MIX.log_prob(x) + std.log().sum(),
                          atol=1e-10)


# ---------------------------------------------------------------- sampling with the oracles

def moments_within_5_se(x, mean, cov):
    """Sample mean and covariance of x (N, D) against the exact ones, within 5 standard
    errors (those of the per-sample terms x_i and (x_i - m)(x_i - m)^T)."""
    N = x.shape[0]
    d = x - mean                                                         # (N, D)
    products = d[:, :, None] * d[:, None, :]                             # (N, D, D)
    mean_ok = ((x.mean(0) - mean).abs() < 5 * x.std(0) / math.sqrt(N)).all()
    cov_ok = ((products.mean(0) - cov).abs() < 5 * products.std(0) / math.sqrt(N)).all()
    return bool(mean_ok and cov_ok)


@pytest.mark.slow
def test_ddpm_with_the_exact_oracle_samples_each_class_and_the_mixture(schedule64):
    """DDPM-1000 with label k reproduces component k; without a label, the mixture."""
    oracle = ConditionalGaussianMixtureOracle(schedule64, MIX)
    for k in range(2):
        x = p_sample_loop(schedule64, ClassifierFreeGuidance(oracle, k, 0.0), (2000, 2),
                          generator=gen(10 + k), progress=False)
        assert moments_within_5_se(x, MIX.means[k], MIX.covariances[k]), k
    x = p_sample_loop(schedule64, oracle, (2000, 2), generator=gen(12), progress=False)
    assert moments_within_5_se(x, MIX.mean(), MIX.covariance())


# 1-D: two overlapping classes, the second pushed away from the first by guidance
W1, M1, S1 = np.array([0.5, 0.5]), np.array([-0.4, 0.6]), np.array([0.4, 0.6])
MIX_1D = GaussianMixture(W1, M1[:, None], S1**2)


def numpy_guided_eps(x, ab, k, w):
    """eps_w = (1 + w) eps(x | k) - w eps(x) for the 1-D mixture, written out in numpy."""
    a, s2 = np.sqrt(ab), 1 - ab
    C = a**2 * S1**2 + s2                                              # (2,) variances of x_t
    log_joint = (np.log(W1) - 0.5 * (x[:, None] - a * M1) ** 2 / C
                 - 0.5 * np.log(2 * np.pi * C))                       # (n, 2)
    r = np.exp(log_joint - log_joint.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    eps_j = np.sqrt(s2) * (x[:, None] - a * M1) / C                    # (n, 2)
    return (1 + w) * eps_j[:, k] - w * (r * eps_j).sum(1)


NUMPY_AB = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))               # alpha_bar, 0-indexed


def numpy_guided_ddim_moments(k, w, num_steps):
    """Mean and variance of x_0 from deterministic DDIM (eta = 0), a function f of
    x_T ~ N(0, 1), by Gauss-Hermite quadrature: E f(x_T) and E (f(x_T) - mean)^2."""
    taus = np.round(np.linspace(0, 999, num_steps)).astype(int)
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)          # weight exp(-x^2/2)
    weights = weights / math.sqrt(2 * math.pi)
    x = nodes.copy()
    for t, prev in zip(taus[::-1], np.r_[-1, taus[:-1]][::-1]):
        ab, ab_prev = NUMPY_AB[t], (NUMPY_AB[prev] if prev >= 0 else 1.0)
        eps = numpy_guided_eps(x, ab, k, w)
        x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)                 # DDIM, Eq. 12
        x = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps
    mean = float(weights @ x)
    return mean, float(weights @ (x - mean) ** 2)


def test_guided_ddim_moves_samples_as_the_numpy_quadrature_predicts(schedule64):
    """The library's guided DDIM samples (50 steps) have the mean and variance of a numpy
    DDIM integrated by quadrature, within 5 standard errors, at w = 0 and w = 3; guidance
    shifts class 1 away from class 0 and narrows it."""
    k, S, N = 1, 50, 20000
    oracle = ConditionalGaussianMixtureOracle(schedule64, MIX_1D)
    exact = {}
    for w in (0.0, 3.0):
        mean, var = exact[w] = numpy_guided_ddim_moments(k, w, S)
        samples = ddim_sample_loop(schedule64, ClassifierFreeGuidance(oracle, k, w), (N, 1),
                                   num_steps=S, eta=0.0, generator=gen(20), progress=False)
        samples = samples[:, 0]
        d2 = (samples - mean) ** 2
        assert abs(samples.mean().item() - mean) < 5 * samples.std().item() / math.sqrt(N), w
        assert abs(d2.mean().item() - var) < 5 * d2.std().item() / math.sqrt(N), w
    # w = 0 is class 1 itself, up to DDIM's 50-step discretization (it narrows by ~10%)
    assert abs(exact[0.0][0] - M1[k]) < 0.02 and abs(exact[0.0][1] / S1[k] ** 2 - 1) < 0.15
    # w = 3: pushed away from class 0 (mean -0.4), and narrower
    assert exact[3.0][0] > exact[0.0][0] + 0.1 and exact[3.0][1] < 0.8 * exact[0.0][1]


@pytest.mark.slow
def test_guided_ddpm_matches_a_numpy_simulation(schedule64):
    """Guided DDPM (Algorithm 2 with eps_w), simulated in numpy with its own random numbers:
    the two samples' means and variances agree within 5 standard errors of the difference."""
    k, w, N = 1, 3.0, 10000
    betas = np.linspace(1e-4, 0.02, 1000)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N)
    for t in range(999, -1, -1):
        ab, ab_prev = NUMPY_AB[t], (NUMPY_AB[t - 1] if t > 0 else 1.0)
        eps = numpy_guided_eps(x, ab, k, w)
        x = (x - betas[t] / np.sqrt(1 - ab) * eps) / np.sqrt(1 - betas[t])      # Eq. 11
        if t > 0:
            x = x + np.sqrt((1 - ab_prev) / (1 - ab) * betas[t]) * rng.standard_normal(N)
    guided = ClassifierFreeGuidance(ConditionalGaussianMixtureOracle(schedule64, MIX_1D), k, w)
    samples = p_sample_loop(schedule64, guided, (N, 1), generator=gen(21),
                            progress=False)[:, 0].numpy()
    se = math.sqrt((samples.var() + x.var()) / N)
    assert abs(samples.mean() - x.mean()) < 5 * se
    d_lib, d_np = (samples - samples.mean()) ** 2, (x - x.mean()) ** 2
    assert abs(d_lib.mean() - d_np.mean()) < 5 * math.sqrt((d_lib.var() + d_np.var()) / N)
    assert x.mean() > M1[k] + 0.1                          # guidance moved it, as above
