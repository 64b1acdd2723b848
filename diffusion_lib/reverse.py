"""The reverse process: the forward posterior q(x_{t-1} | x_t, x_0) and the model
p_theta(x_{t-1} | x_t) built from a network's output (chapter 6).

* q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I), Ho et al. 2020, Eq. (6)-(7);
* conversions among the three things a network may predict -- the noise eps
  (Ho et al. 2020, Eq. 11), the clean data x_0, and the velocity
  v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022);
* p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I) with sigma_t^2 fixed to
  beta_tilde_t ("fixed_small") or beta_t ("fixed_large"), Sec. 3.2.

t is 0-indexed: t = 0 is the first diffusion step, whose "previous" sample is the
data itself (the posterior at t = 0 has variance 0 and mean x_0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .schedules import NoiseSchedule, extract

__all__ = [
    "PredictionType",
    "VarianceType",
    "q_posterior_mean_variance",
    "predict_x0_from_eps",
    "predict_eps_from_x0",
    "predict_v",
    "predict_x0_from_v",
    "predict_eps_from_v",
    "model_output_to_x0_eps",
    "PMeanVariance",
    "p_mean_variance",
]

PredictionType = Literal["epsilon", "x0", "v"]
VarianceType = Literal["fixed_small", "fixed_large"]
PREDICTION_TYPES = ("epsilon", "x0", "v")
VARIANCE_TYPES = ("fixed_small", "fixed_large")


def q_posterior_mean_variance(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor,
                              t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0), Eq. (6)-(7).

    mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
    beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.

    Args: x0, x_t of shape (B, ...); t of shape (B,), 0-indexed.
    Returns (mean (B, ...), variance (B, 1, ...), log_variance_clipped (B, 1, ...)).
    """
    _check_pair(x0, x_t, "x0", "x_t")
    mean = (extract(schedule.posterior_mean_coef1, t, x_t) * x0
            + extract(schedule.posterior_mean_coef2, t, x_t) * x_t)
    variance = extract(schedule.posterior_variance, t, x_t)
    log_variance = extract(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, variance, log_variance


def predict_x0_from_eps(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): Eq. (4) solved for x_0."""
    _check_pair(eps, x_t, "eps", "x_t")
    return (extract(schedule.sqrt_recip_alpha_bars, t, x_t) * x_t
            - extract(schedule.sqrt_recipm1_alpha_bars, t, x_t) * eps)


def predict_eps_from_x0(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t): Eq. (4) solved for eps."""
    _check_pair(x0, x_t, "x0", "x_t")
    return ((extract(schedule.sqrt_recip_alpha_bars, t, x_t) * x_t - x0)
            / extract(schedule.sqrt_recipm1_alpha_bars, t, x_t))


def predict_v(schedule: NoiseSchedule, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """The velocity target v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0
    (Salimans & Ho 2022, Sec. 4)."""
    _check_pair(x0, eps, "x0", "eps")
    return (extract(schedule.sqrt_alpha_bars, t, x0) * eps
            - extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * x0)


def predict_x0_from_v(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v."""
    _check_pair(v, x_t, "v", "x_t")
    return (extract(schedule.sqrt_alpha_bars, t, x_t) * x_t
            - extract(schedule.sqrt_one_minus_alpha_bars, t, x_t) * v)


def predict_eps_from_v(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v."""
    _check_pair(v, x_t, "v", "x_t")
    return (extract(schedule.sqrt_one_minus_alpha_bars, t, x_t) * x_t
            + extract(schedule.sqrt_alpha_bars, t, x_t) * v)


def model_output_to_x0_eps(schedule: NoiseSchedule, model_output: Tensor, x_t: Tensor, t: Tensor,
                           prediction_type: PredictionType = "epsilon") -> tuple[Tensor, Tensor]:
    """Read a network output under ``prediction_type`` as (predicted x_0, predicted eps)."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return predict_x0_from_eps(schedule, x_t, t, model_output), model_output
    if prediction_type == "x0":
        return model_output, predict_eps_from_x0(schedule, x_t, t, model_output)
    return (predict_x0_from_v(schedule, x_t, t, model_output),
            predict_eps_from_v(schedule, x_t, t, model_output))


@dataclass
class PMeanVariance:
    """p_theta(x_{t-1} | x_t) = N(mean, variance I) and the predictions it came from."""

    mean: Tensor          # (B, ...)
    variance: Tensor      # (B, 1, ..., 1)
    log_variance: Tensor  # (B, 1, ..., 1)
    pred_x0: Tensor       # (B, ...)
    pred_eps: Tensor      # (B, ...)


def p_mean_variance(schedule: NoiseSchedule, model_output: Tensor, x_t: Tensor, t: Tensor,
                    prediction_type: PredictionType = "epsilon",
                    variance_type: VarianceType = "fixed_small",
                    clip_denoised: bool = False) -> PMeanVariance:
    """The reverse step p_theta(x_{t-1} | x_t) from a network output, Ho et al. 2020, Sec. 3.2.

    Mean: with an eps prediction and no clipping, Eq. (11) directly,
    mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t);
    otherwise the posterior mean mu_tilde_t(x_t, x0_hat) of Eq. (7) at the predicted
    x_0 (clipped to [-1, 1] if ``clip_denoised``, for image data). The two agree
    when nothing is clipped.

    Variance: "fixed_small" is beta_tilde_t (Eq. 7), "fixed_large" is beta_t; at
    t = 0 "fixed_large" uses beta_tilde at the second step instead, as in the
    paper's released code, so the decoder is not made needlessly wide.

    Args:
        model_output: the network's output for (x_t, t), x_t's shape.
        x_t: shape (B, ...); t: shape (B,), 0-indexed.
    """
    check_prediction_type(prediction_type)
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"unknown variance_type {variance_type!r}; "
                         f"expected one of {VARIANCE_TYPES}")
    _check_pair(model_output, x_t, "model_output", "x_t")
    # 1. predicted x_0 and eps from the network output
    pred_x0, pred_eps = model_output_to_x0_eps(schedule, model_output, x_t, t, prediction_type)
    # 2. mean: Eq. (11) for eps, else the posterior mean at the predicted x_0, Eq. (7)
    if clip_denoised:
        pred_x0 = pred_x0.clamp(-1.0, 1.0)
        pred_eps = predict_eps_from_x0(schedule, x_t, t, pred_x0)
    if prediction_type == "epsilon" and not clip_denoised:
        coef = extract(schedule.betas, t, x_t) / extract(schedule.sqrt_one_minus_alpha_bars, t, x_t)
        mean = (x_t - coef * pred_eps) / extract(schedule.alphas, t, x_t).sqrt()
    else:
        mean, _, _ = q_posterior_mean_variance(schedule, pred_x0, x_t, t)
    # 3. fixed variance, Sec. 3.2
    if variance_type == "fixed_small":
        variance = extract(schedule.posterior_variance, t, x_t)
        log_variance = extract(schedule.posterior_log_variance_clipped, t, x_t)
    else:
        large = torch.cat([schedule.posterior_variance[1:2], schedule.betas[1:]])
        if schedule.num_timesteps == 1:
            large = schedule.betas
        variance = extract(large, t, x_t)
        log_variance = variance.log()
    return PMeanVariance(mean, variance, log_variance, pred_x0, pred_eps)


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; "
                         f"expected one of {PREDICTION_TYPES}")


def _check_pair(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise ValueError(f"{name_a} and {name_b} must be torch.Tensors")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} must have {name_b}'s shape {tuple(b.shape)}, "
                         f"got {tuple(a.shape)}")
