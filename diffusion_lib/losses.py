"""Training objectives: L_simple (Ho et al. 2020, Eq. 14) and the full variational
bound L = L_T + sum_{t>1} L_{t-1} + L_0 (Eq. 5 and 13), reported in bits per
dimension (chapter 6; chapter 7 evaluates image models with it).

t is 0-indexed: index t = 0 is the first diffusion step, so the decoder term
L_0 = -log p(x_0 | x_1) sits at index 0 and the KL term at index t >= 1 is the
paper's L_t = KL(q(x_t | x_{t+1}, x_0) || p(x_t | x_{t+1})) in 1-indexed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .forward import q_mean_variance, q_sample
from .gaussians import discretized_gaussian_log_likelihood, normal_kl, randn_like
from .reverse import (
    PredictionType,
    VarianceType,
    check_prediction_type,
    p_mean_variance,
    predict_v,
    q_posterior_mean_variance,
)
from .schedules import NoiseSchedule

__all__ = [
    "Model",
    "sample_timesteps",
    "loss_target",
    "l_simple",
    "prior_bpd",
    "vb_term_bpd",
    "VariationalBound",
    "variational_bound",
]

Model = Callable[[Tensor, Tensor], Tensor]
"""Any callable ``model(x_t, t)`` with t a (B,) long tensor, returning x_t's shape."""


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch: (B, ...) -> (B,)."""
    return x.flatten(1).mean(dim=1)


def sample_timesteps(schedule: NoiseSchedule, batch_size: int, device: torch.device | str,
                     generator: torch.Generator | None = None) -> Tensor:
    """t ~ Uniform{0, ..., T-1} (Algorithm 1, line 3, 0-indexed), shape (B,)."""
    return torch.randint(0, schedule.num_timesteps, (batch_size,), generator=generator,
                         device=device)


def loss_target(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor,
                prediction_type: PredictionType = "epsilon") -> Tensor:
    """What the network regresses onto: eps, x_0, or v = sqrt(ab) eps - sqrt(1 - ab) x_0."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "x0":
        return x0
    return predict_v(schedule, x0, t, noise)


def l_simple(schedule: NoiseSchedule, model: Model, x0: Tensor, t: Tensor | None = None,
             noise: Tensor | None = None, prediction_type: PredictionType = "epsilon",
             generator: torch.Generator | None = None) -> Tensor:
    """L_simple, Ho et al. 2020, Eq. (14): || target - model(x_t, t) ||^2, per example.

    With the default eps target this is Algorithm 1: t ~ U{0..T-1}, eps ~ N(0, I),
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, loss on eps. The x_0 and
    v targets are the same regression with another target.

    Args:
        x0: data, shape (B, ...).
        t, noise: optional; drawn from ``generator`` when None.
    Returns the mean squared error over all non-batch dims, shape (B,): call
    ``.mean()`` for the training loss.
    """
    if t is None:
        t = sample_timesteps(schedule, x0.shape[0], x0.device, generator)
    if noise is None:
        noise = randn_like(x0, generator)
    x_t = q_sample(schedule, x0, t, noise)
    output = model(x_t, t)
    if output.shape != x0.shape:
        raise ValueError(f"model output shape {tuple(output.shape)} differs from the data's "
                         f"{tuple(x0.shape)}")
    target = loss_target(schedule, x0, t, noise, prediction_type)
    return mean_flat((target - output.to(target.dtype)) ** 2)


def prior_bpd(schedule: NoiseSchedule, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits per dimension, per example (B,).

    Has no parameters (Ho et al. 2020, Sec. 3.1); for the default schedule it is
    below 1e-4 bits/dim on data in [-1, 1]. NaN or inf in a CPU ``x0`` is a ValueError.
    """
    t = torch.full((x0.shape[0],), schedule.num_timesteps - 1, dtype=torch.long, device=x0.device)
    mean, variance = q_mean_variance(schedule, x0, t)
    kl = normal_kl(mean, variance.log(), torch.zeros_like(mean), torch.zeros_like(mean))
    return mean_flat(kl) / math.log(2.0)


def vb_term_bpd(schedule: NoiseSchedule, model_output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor,
                prediction_type: PredictionType = "epsilon",
                variance_type: VarianceType = "fixed_small",
                clip_denoised: bool = False) -> Tensor:
    """One term of the bound, in bits per dimension, per example (B,).

    For t >= 1 (0-indexed), KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)), Eq. (5);
    for t = 0, the decoder -log p_theta(x_0 | x_1) of 8-bit data, Eq. (13).
    """
    true_mean, _, true_log_var = q_posterior_mean_variance(schedule, x0, x_t, t)
    p = p_mean_variance(schedule, model_output, x_t, t, prediction_type, variance_type,
                        clip_denoised)
    kl = mean_flat(normal_kl(true_mean, true_log_var, p.mean, p.log_variance)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, p.mean, 0.5 * p.log_variance))
    nll = nll / math.log(2.0)
    return torch.where(t == 0, nll, kl)


@dataclass
class VariationalBound:
    """The bound -log p(x_0) <= L_T + sum_t L_t + L_0, in bits per dimension."""

    total_bpd: Tensor   # (B,) the whole bound
    prior_bpd: Tensor   # (B,) L_T
    terms_bpd: Tensor   # (B, T) entry t: decoder L_0 at t = 0, else the KL term at step t
    mse: Tensor         # (B, T) mean squared error of the predicted eps at every t


@torch.no_grad()
def variational_bound(schedule: NoiseSchedule, model: Model, x0: Tensor,
                      prediction_type: PredictionType = "epsilon",
                      variance_type: VarianceType = "fixed_small",
                      clip_denoised: bool = False,
                      generator: torch.Generator | None = None) -> VariationalBound:
    """Every term of the variational bound, Ho et al. 2020, Eq. (5) and (13).

    Each L_t is estimated with one draw x_t ~ q(x_t | x_0) per example (an unbiased
    estimate of the bound); T network calls.

    Args:
        x0: 8-bit data scaled to [-1, 1], shape (B, ...).
    """
    B, T = x0.shape[0], schedule.num_timesteps
    terms = x0.new_zeros(B, T)
    mse = x0.new_zeros(B, T)
    for step in range(T):
        t = torch.full((B,), step, dtype=torch.long, device=x0.device)
        noise = randn_like(x0, generator)
        x_t = q_sample(schedule, x0, t, noise)
        output = model(x_t, t)
        terms[:, step] = vb_term_bpd(schedule, output, x0, x_t, t, prediction_type,
                                     variance_type, clip_denoised)
        p = p_mean_variance(schedule, output, x_t, t, prediction_type, variance_type)
        mse[:, step] = mean_flat((p.pred_eps - noise) ** 2)
    prior = prior_bpd(schedule, x0)
    return VariationalBound(terms.sum(dim=1) + prior, prior, terms, mse)
