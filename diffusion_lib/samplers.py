"""Samplers: from noise x_T to data with any denoiser ``model(x_t, t)``.

* DDPM ancestral sampling, Ho et al. 2020, Algorithm 2 (chapters 6-7);
* DDIM, Song, Meng & Ermon 2021, Eq. (12), on any increasing sub-sequence of
  timesteps, deterministic at eta = 0 and equal to DDPM at eta = 1 on the full
  sequence (chapter 8).

Both take a ``torch.Generator`` for every random draw, clip the predicted x_0 to
[-1, 1] only when asked (images), and can return the whole trajectory. t is
0-indexed: the loop runs t = T-1, ..., 0, and t = 0 is the first diffusion step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .gaussians import randn_like
from .losses import Model
from .reverse import (
    PredictionType,
    VarianceType,
    model_output_to_x0_eps,
    p_mean_variance,
    predict_eps_from_x0,
)
from .schedules import NoiseSchedule, check_finite, extract

__all__ = ["p_sample", "p_sample_loop", "ddim_timesteps", "ddim_step", "ddim_sample_loop"]


def _call_model(model: Model, x: Tensor, t: Tensor) -> Tensor:
    out = model(x, t)
    if out.shape != x.shape:
        raise ValueError(f"model(x_t, t) returned shape {tuple(out.shape)}, "
                         f"expected {tuple(x.shape)}")
    return out.to(x.dtype)


def _check_result(x: Tensor) -> Tensor:
    """Once per sampling loop, on any device (one sync at the end, none per step; on the
    CPU each step already checks its x_t)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError("sampling produced NaN or inf values: the model's output is not "
                         "finite somewhere along the chain")
    return x


def _start(schedule: NoiseSchedule, shape: Sequence[int] | None, x_T: Tensor | None,
           generator: torch.Generator | None) -> Tensor:
    if x_T is not None:
        if not isinstance(x_T, Tensor) or not x_T.dtype.is_floating_point or x_T.ndim < 1:
            raise ValueError("x_T must be a floating-point tensor of shape (B, ...)")
        check_finite(x_T, "x_T")
        return x_T
    if shape is None:
        raise ValueError("give either shape or x_T")
    shape = tuple(shape)
    if len(shape) < 1 or any((not isinstance(s, int)) or s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints (B, ...), got {shape}")
    ref = schedule.betas
    return torch.randn(shape, generator=generator, dtype=ref.dtype, device=ref.device)


@torch.no_grad()
def p_sample(schedule: NoiseSchedule, model: Model, x_t: Tensor, t: Tensor,
             prediction_type: PredictionType = "epsilon",
             variance_type: VarianceType = "fixed_small", clip_denoised: bool = False,
             noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """One reverse step x_{t-1} ~ p_theta(x_{t-1} | x_t), Algorithm 2, line 4.

    x_{t-1} = mu_theta(x_t, t) + sigma_t z, with z = 0 at the last step (t = 0,
    0-indexed), where the mean is returned as the sample. NaN or inf in a CPU ``x_t`` is
    a ValueError (:func:`~diffusion_lib.schedules.check_finite`).
    """
    check_finite(x_t, "x_t")
    out = _call_model(model, x_t, t)
    p = p_mean_variance(schedule, out, x_t, t, prediction_type, variance_type, clip_denoised)
    if noise is None:
        noise = randn_like(x_t, generator)
    nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))   # (B, 1, ...)
    return p.mean + nonzero * (0.5 * p.log_variance).exp() * noise


@torch.no_grad()
def p_sample_loop(schedule: NoiseSchedule, model: Model, shape: Sequence[int] | None = None,
                  x_T: Tensor | None = None, generator: torch.Generator | None = None,
                  prediction_type: PredictionType = "epsilon",
                  variance_type: VarianceType = "fixed_small", clip_denoised: bool = False,
                  return_trajectory: bool = False, progress: bool = True) -> Tensor:
    """DDPM ancestral sampling, Ho et al. 2020, Algorithm 2.

    Starts from x_T ~ N(0, I) of ``shape`` (on the schedule's device and dtype) or
    from the given ``x_T``, and applies :func:`p_sample` for t = T-1, ..., 0.

    Returns x_0 of shape (B, ...), or with ``return_trajectory`` the path
    x_T, ..., x_0 of shape (T + 1, B, ...).
    """
    x = _start(schedule, shape, x_T, generator)
    path = [x] if return_trajectory else None
    T = schedule.num_timesteps
    for step in tqdm(range(T - 1, -1, -1), desc="DDPM sampling", disable=not progress):
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        x = p_sample(schedule, model, x, t, prediction_type, variance_type, clip_denoised,
                     generator=generator)
        if path is not None:
            path.append(x)
    _check_result(x)
    return torch.stack(path) if path is not None else x


def ddim_timesteps(num_timesteps: int, num_steps: int) -> list[int]:
    """``num_steps`` evenly spaced 0-indexed timesteps from 0 to T-1, increasing.

    The sub-sequence tau of Song et al. 2021, Sec. 4.2; both ends are included so the
    first step starts at the real x_T and the last one lands on x_0.
    """
    if (isinstance(num_steps, bool) or not isinstance(num_steps, int)
            or not 1 <= num_steps <= num_timesteps):
        raise ValueError(f"DDIM num_steps must be an int in [1, T={num_timesteps}], "
                         f"got {num_steps!r}")
    if num_steps == 1:
        return [num_timesteps - 1]
    grid = torch.linspace(0, num_timesteps - 1, num_steps, dtype=torch.float64).round().long()
    return grid.tolist()


def _check_timesteps_sequence(timesteps: Sequence[int], num_timesteps: int) -> list[int]:
    ts = [int(s) for s in timesteps]
    if not ts:
        raise ValueError("DDIM timesteps must not be empty")
    if any(b <= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"DDIM timesteps must be strictly increasing, got {ts[:10]}...")
    if ts[0] < 0 or ts[-1] >= num_timesteps:
        raise ValueError(f"DDIM timesteps must lie in [0, {num_timesteps - 1}], "
                         f"got {ts[0]}..{ts[-1]}")
    return ts


def _check_ddim_args(model_output: Tensor, x_t: Tensor, t: Tensor, t_prev: Tensor,
                     eta: float) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < float("inf"):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    if not isinstance(model_output, Tensor) or model_output.shape != x_t.shape:
        shape = tuple(model_output.shape) if isinstance(model_output, Tensor) else model_output
        raise ValueError(f"model_output must have x_t's shape {tuple(x_t.shape)}, got {shape}")
    check_finite(x_t, "x_t")
    if (not isinstance(t_prev, Tensor) or t_prev.dtype.is_floating_point
            or t_prev.dtype == torch.bool):
        raise ValueError("t_prev must be an integer tensor of shape (B,)")
    if t_prev.shape != (x_t.shape[0],):
        raise ValueError(f"t_prev must have shape (B,) = ({x_t.shape[0]},) to match x_t of shape "
                         f"{tuple(x_t.shape)}, got {tuple(t_prev.shape)}")
    if t_prev.device != x_t.device:
        raise ValueError(f"t_prev is on {t_prev.device} but x_t is on {x_t.device}")
    if t_prev.device.type == "cpu" and isinstance(t, Tensor) and t.shape == t_prev.shape:
        if bool((t_prev < -1).any()):
            raise ValueError(f"t_prev must be >= -1 (-1 means the data x_0), got "
                             f"{int(t_prev.min())}")
        if bool((t_prev >= t).any()):
            i = int((t_prev >= t).nonzero()[0])
            raise ValueError(f"t_prev must be earlier than t (t_prev < t): got t_prev = "
                             f"{int(t_prev[i])} at t = {int(t[i])}")


@torch.no_grad()
def ddim_step(schedule: NoiseSchedule, model_output: Tensor, x_t: Tensor, t: Tensor,
              t_prev: Tensor, eta: float = 0.0, prediction_type: PredictionType = "epsilon",
              clip_denoised: bool = False, noise: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """One DDIM update from step t to an earlier step t_prev, Song et al. 2021, Eq. (12).

    x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)  (Eq. 16).
    ``t_prev = -1`` means "the data": ab_prev = 1, and the result is x0_hat.

    Args:
        model_output: the network's output at (x_t, t), x_t's shape.
        t, t_prev: (B,) long tensors, 0-indexed, -1 <= t_prev < t (values are checked for
            CPU tensors, where that costs no device sync).
        eta: >= 0; 0 is deterministic, 1 is DDPM's posterior variance on the full sequence.

    ``1 - alpha_bar`` comes from the schedule's float64-derived buffer, not from a float32
    subtraction (which loses 1.7e-4 of it at t = 0).
    """
    _check_ddim_args(model_output, x_t, t, t_prev, eta)
    # 1. predicted x_0 and eps, Eq. (9) of the DDIM paper
    pred_x0, pred_eps = model_output_to_x0_eps(schedule, model_output, x_t, t, prediction_type)
    if clip_denoised:
        pred_x0 = pred_x0.clamp(-1.0, 1.0)
        pred_eps = predict_eps_from_x0(schedule, x_t, t, pred_x0)
    # 2. 1 - alpha_bar at t; alpha_bar, 1 - alpha_bar at t_prev (1, 0 for t_prev = -1): (B, 1, ..)
    data = t_prev.reshape(-1, *([1] * (x_t.ndim - 1))) < 0
    prev = t_prev.clamp(min=0)
    one_minus_ab_t = extract(schedule.one_minus_alpha_bars, t, x_t)
    ab_prev = torch.where(data, 1.0, extract(schedule.alpha_bars, prev, x_t))
    one_minus_ab_prev = torch.where(data, 0.0, extract(schedule.one_minus_alpha_bars, prev, x_t))
    # 3. sigma, Eq. (16); 1 - ab_t / ab_prev = ((1 - ab_t) - (1 - ab_prev)) / ab_prev
    sigma = eta * (one_minus_ab_prev / one_minus_ab_t
                   * (one_minus_ab_t - one_minus_ab_prev) / ab_prev).clamp(min=0).sqrt()
    # 4. the update, Eq. (12)
    direction = (one_minus_ab_prev - sigma ** 2).clamp(min=0).sqrt() * pred_eps
    x_prev = ab_prev.sqrt() * pred_x0 + direction
    if eta > 0:
        if noise is None:
            noise = randn_like(x_t, generator)
        x_prev = x_prev + sigma * noise
    return x_prev


@torch.no_grad()
def ddim_sample_loop(schedule: NoiseSchedule, model: Model, shape: Sequence[int] | None = None,
                     num_steps: int = 50, timesteps: Sequence[int] | None = None,
                     eta: float = 0.0, x_T: Tensor | None = None,
                     generator: torch.Generator | None = None,
                     prediction_type: PredictionType = "epsilon", clip_denoised: bool = False,
                     return_trajectory: bool = False, progress: bool = True) -> Tensor:
    """DDIM sampling, Song et al. 2021, Sec. 4, on a sub-sequence of the T timesteps.

    Uses ``timesteps`` (any strictly increasing 0-indexed sequence in [0, T)) or
    ``num_steps`` evenly spaced ones (:func:`ddim_timesteps`); runs them from the
    largest down, the last step landing on x_0. ``eta = 0`` is deterministic;
    ``eta = 1`` on the full sequence is DDPM with the posterior variance.

    Returns x_0 (B, ...), or with ``return_trajectory`` the path of shape
    (len(timesteps) + 1, B, ...).
    """
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    T = schedule.num_timesteps
    ts = (_check_timesteps_sequence(timesteps, T) if timesteps is not None
          else ddim_timesteps(T, num_steps))
    x = _start(schedule, shape, x_T, generator)
    path = [x] if return_trajectory else None
    prevs = [-1] + ts[:-1]
    for step, prev in tqdm(list(zip(ts, prevs))[::-1], desc="DDIM sampling", disable=not progress):
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        t_prev = torch.full((x.shape[0],), prev, dtype=torch.long, device=x.device)
        out = _call_model(model, x, t)
        x = ddim_step(schedule, out, x, t, t_prev, eta, prediction_type, clip_denoised,
                      generator=generator)
        if path is not None:
            path.append(x)
    _check_result(x)
    return torch.stack(path) if path is not None else x
