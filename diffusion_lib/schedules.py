"""Variance schedules beta_1..beta_T and every quantity derived from them.

Implements the forward-process variances of Ho et al. 2020 (Sec. 2 and 4: linear
betas from 1e-4 to 0.02 over T = 1000 steps) and the cosine schedule of Nichol &
Dhariwal 2021 (Eq. 17), plus any user-given array of betas. Used from chapter 2
(the forward process) onwards.

Timestep convention, used everywhere in `diffusion_lib` and pinned by a test:
**t is 0-indexed: index t = 0 is the first diffusion step.** The array entry
``betas[t]`` is the paper's beta_{t+1}, and ``alpha_bars[t]`` is the paper's
alpha_bar_{t+1}, the signal kept after t + 1 noising steps. A network is called
as ``model(x_t, t)`` with t in 0..T-1.

All derived quantities are computed in float64 and stored as buffers (float32 by
default) of a :class:`NoiseSchedule` module, so ``schedule.to(device)`` moves them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["NoiseSchedule", "linear_betas", "cosine_betas", "extract"]


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> Tensor:
    """Linearly increasing betas, the DDPM default (Ho et al. 2020, Sec. 4).

    Returns a float64 tensor of shape (T,); ``betas[0]`` is beta_1 (t is 0-indexed).
    """
    _check_num_timesteps(num_timesteps)
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int = 1000, s: float = 0.008,
                 max_beta: float = 0.999) -> Tensor:
    """Cosine schedule of Nichol & Dhariwal 2021, Eq. (17).

    alpha_bar(t) = f(t) / f(0) with f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2),
    and beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at ``max_beta``
    (0.999) to avoid a singularity at the end. Returns float64, shape (T,);
    ``betas[0]`` is beta_1 (t is 0-indexed).
    """
    _check_num_timesteps(num_timesteps)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"cosine schedule offset s must be in [0, 1), got {s}")
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2      # (T + 1,)
    alpha_bars = f / f[0]
    betas = 1 - alpha_bars[1:] / alpha_bars[:-1]                 # (T,)
    return betas.clamp(max=max_beta)


def _check_num_timesteps(num_timesteps: int) -> None:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int):
        raise ValueError(f"num_timesteps must be an int, got {type(num_timesteps).__name__}")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")


def _validate_betas(betas) -> Tensor:
    try:
        b = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"betas must be a 1-D array of floats: {err}") from None
    if b.ndim != 1:
        raise ValueError(f"betas must be 1-D with shape (T,), got shape {tuple(b.shape)}")
    if b.numel() < 1:
        raise ValueError("betas must hold at least one step (T >= 1), got an empty array")
    if torch.isnan(b).any():
        raise ValueError("betas contain NaN at indices "
                         f"{torch.nonzero(torch.isnan(b)).flatten().tolist()[:5]}")
    bad = (b <= 0) | (b >= 1)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise ValueError("every beta must lie strictly between 0 and 1; "
                         f"betas[{i}] = {b[i].item()}")
    return b


class NoiseSchedule(nn.Module):
    """The variance schedule and its derived quantities, as named buffers.

    Names read as the formula (Ho et al. 2020, Eq. 4-7 and 11):

    ============================== ===============================================
    ``betas``                      beta_t
    ``alphas``                     alpha_t = 1 - beta_t
    ``alpha_bars``                 alpha_bar_t = prod_{s <= t} alpha_s
    ``alpha_bars_prev``            alpha_bar_{t-1} (1 at the first step)
    ``sqrt_alpha_bars``            sqrt(alpha_bar_t)      (mean factor of Eq. 4)
    ``one_minus_alpha_bars``       1 - alpha_bar_t        (variance of Eq. 4; from float64,
                                   so exact at small t where float32 1 - x cancels)
    ``sqrt_one_minus_alpha_bars``  sqrt(1 - alpha_bar_t)  (std of Eq. 4)
    ``sqrt_recip_alpha_bars``      1 / sqrt(alpha_bar_t)
    ``sqrt_recipm1_alpha_bars``    sqrt(1 / alpha_bar_t - 1)
    ``snr``                        alpha_bar_t / (1 - alpha_bar_t)
    ``posterior_variance``         beta_tilde_t (Eq. 7); 0 at the first step
    ``posterior_log_variance_clipped``  log beta_tilde_t, with the first entry
                                   replaced by the second (log 0 is -inf)
    ``posterior_mean_coef1``       coefficient of x_0 in mu_tilde_t (Eq. 7)
    ``posterior_mean_coef2``       coefficient of x_t in mu_tilde_t (Eq. 7)
    ============================== ===============================================

    t is 0-indexed: entry t belongs to the paper's step t + 1.

    Args:
        betas: shape (T,), every value in (0, 1).
        dtype: dtype of the stored buffers (computation is always float64).
    """

    def __init__(self, betas: Tensor | Sequence[float], dtype: torch.dtype = torch.float32):
        super().__init__()
        b = _validate_betas(betas)
        alphas = 1.0 - b
        alpha_bars = torch.cumprod(alphas, dim=0)
        alpha_bars_prev = torch.cat([b.new_ones(1), alpha_bars[:-1]])
        posterior_variance = b * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)
        # log(0) at t = 0 is -inf: use the t = 1 value there, as the DDPM code does.
        # With a single step there is no t = 1: fall back to beta_1 itself.
        first = posterior_variance[1:2] if len(b) > 1 else b[:1]
        posterior_log_variance_clipped = torch.log(torch.cat([first, posterior_variance[1:]]))
        derived = {
            "betas": b,
            "alphas": alphas,
            "alpha_bars": alpha_bars,
            "alpha_bars_prev": alpha_bars_prev,
            "sqrt_alpha_bars": alpha_bars.sqrt(),
            "one_minus_alpha_bars": 1.0 - alpha_bars,
            "sqrt_one_minus_alpha_bars": (1.0 - alpha_bars).sqrt(),
            "log_one_minus_alpha_bars": torch.log1p(-alpha_bars),
            "sqrt_recip_alpha_bars": alpha_bars.rsqrt(),
            "sqrt_recipm1_alpha_bars": (1.0 / alpha_bars - 1.0).sqrt(),
            "snr": alpha_bars / (1.0 - alpha_bars),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_log_variance_clipped,
            "posterior_mean_coef1": b * alpha_bars_prev.sqrt() / (1.0 - alpha_bars),
            "posterior_mean_coef2": (1.0 - alpha_bars_prev) * alphas.sqrt() / (1.0 - alpha_bars),
        }
        for name, value in derived.items():
            self.register_buffer(name, value.to(dtype))

    # Buffers are declared for type checkers; register_buffer sets them.
    betas: Tensor
    alphas: Tensor
    alpha_bars: Tensor
    alpha_bars_prev: Tensor
    sqrt_alpha_bars: Tensor
    one_minus_alpha_bars: Tensor
    sqrt_one_minus_alpha_bars: Tensor
    log_one_minus_alpha_bars: Tensor
    sqrt_recip_alpha_bars: Tensor
    sqrt_recipm1_alpha_bars: Tensor
    snr: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
               dtype: torch.dtype = torch.float32) -> "NoiseSchedule":
        """The DDPM default: linear betas from 1e-4 to 0.02 over T = 1000 steps."""
        return cls(linear_betas(num_timesteps, beta_start, beta_end), dtype=dtype)

    @classmethod
    def cosine(cls, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999,
               dtype: torch.dtype = torch.float32) -> "NoiseSchedule":
        """The cosine schedule of Nichol & Dhariwal 2021 (Eq. 17)."""
        return cls(cosine_betas(num_timesteps, s, max_beta), dtype=dtype)

    @classmethod
    def from_name(cls, name: str, num_timesteps: int = 1000,
                  dtype: torch.dtype = torch.float32) -> "NoiseSchedule":
        """``"linear"`` or ``"cosine"`` with their paper defaults."""
        if name == "linear":
            return cls.linear(num_timesteps, dtype=dtype)
        if name == "cosine":
            return cls.cosine(num_timesteps, dtype=dtype)
        raise ValueError(f"unknown schedule {name!r}; expected 'linear' or 'cosine'")

    @property
    def num_timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return self.betas.shape[0]

    def extra_repr(self) -> str:
        b = self.betas
        return (f"T={self.num_timesteps}, beta_1={b[0].item():.3g}, beta_T={b[-1].item():.3g}, "
                f"dtype={b.dtype}")


def extract(buffer: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """Gather ``buffer[t]`` and shape it to broadcast against ``x``.

    Args:
        buffer: a schedule buffer of shape (T,).
        t: integer timesteps of shape (B,), 0-indexed, each in [0, T).
        x: the batch the result multiplies, shape (B, ...).

    Returns a tensor of shape (B, 1, ..., 1) with ``x.ndim`` dimensions and x's
    dtype (the result follows the data's dtype: no hidden promotion).
    """
    check_timesteps(t, x, buffer.shape[0])
    if buffer.device != x.device:
        raise ValueError(f"the schedule is on {buffer.device} but x is on {x.device}; "
                         "move one of them with .to(device)")
    out = buffer[t]                                              # (B,)
    return out.to(x.dtype).reshape(x.shape[0], *([1] * (x.ndim - 1)))


def check_finite(x: Tensor, name: str) -> None:
    """Raise ValueError if a CPU tensor holds NaN or inf.

    Where NaNs are caught: reading a value back costs a device sync on a GPU, so the
    per-step functions (``q_sample``, ``p_sample``, ``ddim_step``, the bound's terms)
    check their inputs only when they are CPU tensors, where the check is a cheap pass
    over memory. On any device the sampling loops check their result once, at the end,
    and training checks the loss once per log window (:mod:`diffusion_lib.training`).
    """
    if x.device.type == "cpu" and x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} NaN or inf value(s) of {x.numel()}; "
                         f"expected finite numbers")


def check_timesteps(t: Tensor, x: Tensor, num_timesteps: int) -> None:
    """Raise ValueError unless t is an integer tensor of shape (B,) in [0, T).

    The range check runs only for CPU tensors, where it costs no device sync.
    """
    if not isinstance(t, Tensor):
        raise ValueError(f"t must be a torch.Tensor of integer timesteps, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"t must hold integer timesteps (e.g. torch.long), got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape (B,) = ({x.shape[0]},) to match x of shape "
                         f"{tuple(x.shape)}, got {tuple(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"t is on {t.device} but x is on {x.device}")
    if t.device.type == "cpu" and t.numel() and (t.min() < 0 or t.max() >= num_timesteps):
        raise ValueError(f"timesteps must lie in [0, {num_timesteps - 1}] (0-indexed), "
                         f"got values from {int(t.min())} to {int(t.max())}")
