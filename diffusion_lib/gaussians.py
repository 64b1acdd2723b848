"""Gaussian building blocks: drawing noise, the reparameterization trick, KL
divergences and the discretized Gaussian likelihood of 8-bit data.

The reparameterization z = mu + sigma * eps (Kingma & Welling 2014) is the subject
of chapter 5; the KL and discretized likelihood make up the variational bound of
Ho et al. 2020, Eq. (5) and (13), in chapter 6.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "randn_like",
    "reparameterize",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
]


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise with x's shape, dtype and device, drawn from ``generator``.

    ``torch.randn_like`` takes no generator; this does, so every draw in the
    library is reproducible from a seed.
    """
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def reparameterize(mean: Tensor, std: Tensor | float, eps: Tensor | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
    """Sample z ~ N(mean, std^2 I) as z = mean + std * eps, eps ~ N(0, I).

    The randomness is moved into eps, which does not depend on mean or std, so
    gradients flow from z back to both (chapter 5). Used by the forward process
    in the form x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
    (Ho et al. 2020, Eq. 4 and the line above Eq. 9).

    Args:
        mean: shape (...).
        std: standard deviation, broadcastable to mean (not the variance).
        eps: optional fixed noise of mean's shape; drawn from ``generator`` if None.
    """
    if eps is None:
        eps = randn_like(mean, generator)
    elif eps.shape != mean.shape:
        raise ValueError(f"eps must have mean's shape {tuple(mean.shape)}, got {tuple(eps.shape)}")
    return mean + std * eps


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL( N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)) ), elementwise, in nats.

    The closed form used for every L_{t-1} term of the bound (Ho et al. 2020, Eq. 5):
    0.5 * (logvar2 - logvar1 + (exp(logvar1) + (mean1 - mean2)^2) / exp(logvar2) - 1).
    Arguments broadcast against each other.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _log_gaussian_mass(lower: Tensor, upper: Tensor) -> Tensor:
    """log(Phi(upper) - Phi(lower)) for standard-normal bounds, stable in both tails."""
    # In the upper tail Phi is close to 1 and the difference cancels: use symmetry,
    # Phi(b) - Phi(a) = Phi(-a) - Phi(-b).
    flip = lower > 0
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp((log_a - log_b).clamp(max=0.0)).clamp(max=1 - 1e-12))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor,
                                        num_bins: int = 256) -> Tensor:
    """log p(x) of data on a grid of ``num_bins`` values in [-1, 1] (nats, elementwise).

    The decoder L_0 of Ho et al. 2020, Eq. (13): the Gaussian N(mean, exp(log_scale)^2)
    integrated over the bin of width 2 / (num_bins - 1) around x, with the edge bins
    extended to -inf and +inf. Computed with the exact normal CDF in log space.

    Args:
        x: data already scaled to [-1, 1] on the 8-bit grid, shape (...).
        mean, log_scale: the decoder's mean and log standard deviation, broadcastable.
    """
    try:
        shape = torch.broadcast_shapes(x.shape, mean.shape, log_scale.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and log_scale {tuple(log_scale.shape)} must "
                         f"broadcast to x's shape {tuple(x.shape)}")
    half_bin = 1.0 / (num_bins - 1)
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + half_bin) * inv_std
    lower = (x - mean - half_bin) * inv_std
    log_mass = _log_gaussian_mass(lower, upper)
    log_cdf_upper = torch.special.log_ndtr(upper)          # bin at -1 reaches -inf
    log_one_minus_cdf_lower = torch.special.log_ndtr(-lower)  # bin at +1 reaches +inf
    edge = 1.0 - half_bin
    out = torch.where(x < -edge, log_cdf_upper,
                      torch.where(x > edge, log_one_minus_cdf_lower, log_mass))
    return out.clamp(min=math.log(1e-12))
