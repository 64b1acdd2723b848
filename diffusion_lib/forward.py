"""The forward (diffusion) process q: data to noise.

* one Markov step q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), Ho et al.
  2020, Eq. (2) -- chapter 2;
* the whole chain q(x_{1:T} | x_0) = prod_t q(x_t | x_{t-1}), simulated one step after
  another -- chapter 3;
* the closed form q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), Eq. (4),
  which jumps to any t at once -- chapter 4.

t is 0-indexed everywhere: t = 0 is the first diffusion step, so ``q_sample(x0, 0)``
is the paper's x_1 and ``q_sample(x0, T - 1)`` is x_T.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gaussians import randn_like, reparameterize
from .schedules import NoiseSchedule, check_finite, extract

__all__ = ["q_step", "q_sample_chain", "q_mean_variance", "q_sample"]


def _full_t(t: int | Tensor, x: Tensor) -> Tensor:
    """Turn an int timestep into a (B,) long tensor on x's device."""
    if isinstance(t, Tensor):
        return t
    if isinstance(t, bool) or not isinstance(t, int):
        raise ValueError("t must be an int or an integer tensor of shape (B,), "
                         f"got {type(t).__name__}")
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def _check_data(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, ...) with B >= 1, got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    check_finite(x, name)


def q_step(schedule: NoiseSchedule, x_prev: Tensor, t: int | Tensor,
           noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """One forward step: sample x_t ~ q(x_t | x_{t-1}), Ho et al. 2020, Eq. (2).

    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps. The factor sqrt(1 - beta_t)
    keeps unit variance unchanged: Var x_t = (1 - beta_t) Var x_{t-1} + beta_t.

    Args:
        x_prev: x_{t-1}, shape (B, ...); for t = 0 this is the data x_0.
        t: 0-indexed step (int or (B,) long tensor): ``betas[t]`` is used.
        noise: optional eps of x_prev's shape; else drawn from ``generator``.
    Returns x_t, shape (B, ...).
    """
    _check_data(x_prev, "x_prev")
    t = _full_t(t, x_prev)
    beta = extract(schedule.betas, t, x_prev)                    # (B, 1, ...)
    return reparameterize((1.0 - beta).sqrt() * x_prev, beta.sqrt(), noise, generator)


def q_sample_chain(schedule: NoiseSchedule, x0: Tensor, num_steps: int | None = None,
                   generator: torch.Generator | None = None,
                   return_trajectory: bool = False) -> Tensor:
    """Run the Markov chain q(x_{1:T} | x_0) = prod_t q(x_t | x_{t-1}) step by step.

    The sequential simulation of Ho et al. 2020, Eq. (2): ``num_steps`` calls of
    :func:`q_step` (default T). Its cost grows linearly with the number of steps,
    which is why Eq. (4) (:func:`q_sample`, chapter 4) is used in practice.

    Returns x after ``num_steps`` steps, shape (B, ...), or with
    ``return_trajectory=True`` the whole path x_0, x_1, ..., shape
    (num_steps + 1, B, ...), whose entry k is the sample after k steps.
    """
    _check_data(x0, "x0")
    T = schedule.num_timesteps
    num_steps = T if num_steps is None else num_steps
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 0 <= num_steps <= T:
        raise ValueError(f"num_steps must be an int in [0, {T}], got {num_steps!r}")
    x = x0
    path = [x0] if return_trajectory else None
    for t in range(num_steps):
        x = q_step(schedule, x, t, generator=generator)
        if path is not None:
            path.append(x)
    return torch.stack(path) if path is not None else x


def q_mean_variance(schedule: NoiseSchedule, x0: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), Eq. (4).

    t is 0-indexed (t = 0 is the first step). Returns (mean of x0's shape,
    variance of shape (B, 1, ..., 1)).
    """
    _check_data(x0, "x0")
    t = _full_t(t, x0)
    mean = extract(schedule.sqrt_alpha_bars, t, x0) * x0
    variance = extract(schedule.one_minus_alpha_bars, t, x0)
    return mean, variance


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: int | Tensor, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """Sample x_t ~ q(x_t | x_0) in one jump, Ho et al. 2020, Eq. (4).

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (the reparameterized form
    that L_simple, Eq. 14, differentiates through). t is 0-indexed.

    Args:
        x0: data, shape (B, ...).
        t: int or (B,) long tensor of 0-indexed timesteps.
        noise: optional eps of x0's shape; else drawn from ``generator``.
    Returns x_t of x0's shape.
    """
    _check_data(x0, "x0")
    t = _full_t(t, x0)
    if noise is None:
        noise = randn_like(x0, generator)
    return reparameterize(extract(schedule.sqrt_alpha_bars, t, x0) * x0,
                          extract(schedule.sqrt_one_minus_alpha_bars, t, x0), noise)
