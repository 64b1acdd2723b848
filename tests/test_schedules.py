"""Schedules against independent float64 numpy computations, and the index convention."""

import math

import numpy as np
import pytest
import torch

from diffusion_lib import NoiseSchedule, cosine_betas, linear_betas, q_mean_variance


def numpy_derived(betas):
    """Every derived quantity from the formulas of Ho et al. 2020, written with a loop."""
    b = np.asarray(betas, dtype=np.float64)
    ab, prod = [], 1.0
    for beta in b:
        prod *= 1.0 - beta
        ab.append(prod)
    ab = np.array(ab)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    post_var = b * (1 - ab_prev) / (1 - ab)
    return dict(
        alphas=1 - b, alpha_bars=ab, alpha_bars_prev=ab_prev,
        sqrt_alpha_bars=np.sqrt(ab), sqrt_one_minus_alpha_bars=np.sqrt(1 - ab),
        snr=ab / (1 - ab), posterior_variance=post_var,
        posterior_mean_coef1=np.sqrt(ab_prev) * b / (1 - ab),
        posterior_mean_coef2=np.sqrt(1 - b) * (1 - ab_prev) / (1 - ab),
    )


def test_linear_defaults_follow_the_paper():
    s = NoiseSchedule.linear()
    assert s.num_timesteps == 1000
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-6)
    assert np.allclose(np.diff(s.betas.double().numpy()), (0.02 - 1e-4) / 999, rtol=1e-3)


@pytest.mark.parametrize("make", [lambda: linear_betas(1000), lambda: cosine_betas(1000),
                                  lambda: torch.rand(17, dtype=torch.float64) * 0.5 + 0.01])
def test_derived_quantities_match_numpy(make):
    betas = make()
    s = NoiseSchedule(betas, dtype=torch.float64)
    ref = numpy_derived(betas.numpy())
    for name, expected in ref.items():
        np.testing.assert_allclose(getattr(s, name).numpy(), expected, rtol=1e-12, atol=1e-15,
                                   err_msg=name)
    # clipped log-variance: first entry replaced by the second
    lv = s.posterior_log_variance_clipped.numpy()
    assert lv[0] == pytest.approx(math.log(ref["posterior_variance"][1]), rel=1e-12)
    np.testing.assert_allclose(lv[1:], np.log(ref["posterior_variance"][1:]), rtol=1e-12)


def test_cosine_schedule_against_its_formula():
    T, s_off = 1000, 0.008
    f = lambda t: math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2  # noqa: E731
    betas = cosine_betas(T)
    for t in [0, 1, 10, 500, 998]:   # 0-indexed: entry t is the paper's beta_{t+1}
        expected = min(1 - f(t + 1) / f(t), 0.999)
        assert betas[t].item() == pytest.approx(expected, rel=1e-10)
    assert betas[-1].item() == pytest.approx(0.999)          # clipped at the end
    ab = NoiseSchedule(betas, dtype=torch.float64).alpha_bars
    assert ab[499].item() == pytest.approx(f(500) / f(0), rel=1e-9)


def test_buffers_are_float32_and_move_with_to():
    s = NoiseSchedule.linear()
    names = [n for n, _ in s.named_buffers()]
    assert {"betas", "alpha_bars", "snr", "posterior_log_variance_clipped"} <= set(names)
    assert all(b.dtype == torch.float32 for b in s.buffers())
    moved = s.to("meta")
    assert all(b.device.type == "meta" for b in moved.buffers())
    # computed in float64 before rounding: float32 alpha_bars equal the rounded float64 ones
    s64 = NoiseSchedule.linear(dtype=torch.float64)
    assert torch.equal(NoiseSchedule.linear().alpha_bars, s64.alpha_bars.float())


def test_index_convention_t0_is_the_first_step(schedule64):
    """Pin: t is 0-indexed, t = 0 is the paper's x_1, t = T-1 its x_T."""
    x0 = torch.ones(1, 1, dtype=torch.float64)
    mean, var = q_mean_variance(schedule64, x0, 0)
    assert var.item() == pytest.approx(1e-4, rel=1e-12)          # Var x_1 = beta_1
    assert mean.item() == pytest.approx(math.sqrt(1 - 1e-4), rel=1e-12)
    _, var_T = q_mean_variance(schedule64, x0, 999)
    assert var_T.item() == pytest.approx(1 - np.prod(1 - np.linspace(1e-4, 0.02, 1000)), rel=1e-12)
    assert schedule64.alpha_bars_prev[0].item() == 1.0
    assert schedule64.posterior_variance[0].item() == 0.0


def test_snr_decreases_and_alpha_bars_in_unit_interval():
    for s in [NoiseSchedule.linear(), NoiseSchedule.cosine()]:
        assert (s.alpha_bars > 0).all() and (s.alpha_bars < 1).all()
        assert (s.snr[1:] < s.snr[:-1]).all()


@pytest.mark.parametrize("betas, words", [
    ([0.1, 1.0], "strictly between 0 and 1"),
    ([0.0, 0.1], "strictly between 0 and 1"),
    ([-0.1], "strictly between 0 and 1"),
    ([0.1, float("nan")], "NaN"),
    ([[0.1, 0.2]], "1-D"),
    ([], "at least one step"),
    ("abc", "1-D array of floats"),
])
def test_invalid_betas_raise_clear_errors(betas, words):
    with pytest.raises(ValueError, match=words):
        NoiseSchedule(betas)


@pytest.mark.parametrize("T", [0, -3, 2.5, True])
def test_invalid_num_timesteps(T):
    with pytest.raises(ValueError, match="num_timesteps"):
        linear_betas(T)


def test_from_name_and_unknown_name():
    assert NoiseSchedule.from_name("cosine", 50).num_timesteps == 50
    with pytest.raises(ValueError, match="'linear' or 'cosine'"):
        NoiseSchedule.from_name("quadratic")


def test_single_step_schedule_is_valid():
    s = NoiseSchedule([0.5], dtype=torch.float64)
    assert s.posterior_log_variance_clipped.isfinite().all()


def test_float32_variance_is_exact_at_the_first_step():
    """1 - alpha_bar in float32 would cancel to 1.00017e-4 at t = 0;
    the buffer comes from float64."""
    x0 = torch.zeros(1, 1)
    _, var = q_mean_variance(NoiseSchedule.linear(), x0, 0)
    assert abs(var.item() - 1e-4) < 1e-10
