"""Classifier-free guidance (Ho & Salimans 2022): a conditional network as a plain
``model(x_t, t)`` for the samplers of :mod:`diffusion_lib.samplers` (chapter 9).

A class-conditional network eps(x_t, t, y), trained with the label dropped to "no class"
(label K) some of the time, predicts both eps(x_t, t, y) and eps(x_t, t, K) = eps(x_t, t).
Guidance with weight w extrapolates from the second to the first (Ho & Salimans 2022,
Eq. 6):

    eps_w(x_t, t, y) = (1 + w) eps(x_t, t, y) - w eps(x_t, t)
                     = -s [grad log p_t(x_t | y) + w grad log p_t(y | x_t)],   s = sqrt(1 - ab_t)

the second line by Bayes' rule on the scores, grad log p(y | x) = grad log p(x | y) -
grad log p(x): guidance adds w times the score of an implicit classifier, which pushes
samples to where the class is sure. w = 0 is the conditional model itself.

The same combination works for any prediction type: x_0 and v are affine in eps with
coefficients fixed by x_t and t, and (1 + w) - w = 1, so combining x_0 (or v)
predictions gives the prediction that goes with eps_w. Both branches go through the
network as one batch of 2B, one call per sampling step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ClassifierFreeGuidance", "num_classes_of"]


def num_classes_of(model: nn.Module) -> int:
    """K for a class-conditional network or oracle (its label K is "no class"); 0 otherwise."""
    return int(getattr(model, "num_classes", 0) or 0)


class ClassifierFreeGuidance(nn.Module):
    """A conditional ``model(x_t, t, y)`` with fixed labels and guidance weight, called as
    ``model(x_t, t)``: the guided prediction (1 + w) model(x_t, t, y) - w model(x_t, t, K).

    Args:
        model: a class-conditional network (``num_classes`` K > 0, label K = "no class"),
            or :class:`~diffusion_lib.oracle.ConditionalGaussianMixtureOracle`.
        labels: the class of every sample, 0..K-1: an int for the whole batch, or a (B,)
            tensor matching the batches the sampler passes. The label K samples from the
            unconditional model (no guidance then applies).
        guidance_scale: w >= 0, an int / float, or a (B,) tensor with one weight per sample
            (rows of a grid at several weights in one sampling loop). w = 0 calls the
            conditional branch alone, so it is exactly the conditional model.

    Being an ``nn.Module``, the wrapper follows the network through ``.eval()``; it holds
    no parameters of its own.
    """

    def __init__(self, model: nn.Module, labels: int | Tensor,
                 guidance_scale: float | Tensor = 0.0):
        super().__init__()
        K = num_classes_of(model)
        if K < 1:
            raise ValueError(f"{type(model).__name__} is not class-conditional (num_classes=0); "
                             f"guidance needs a network trained with labels")
        self.model = model
        self.num_classes = K
        self.labels = _check_labels(labels, K)
        self.guidance_scale = _check_scale(guidance_scale)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        B = x_t.shape[0]
        y = _per_sample(self.labels, B, "labels", x_t.device)                 # (B,)
        w = _per_sample(self.guidance_scale, B, "guidance_scale", x_t.device)  # (B,)
        if not bool((w != 0).any()):                 # w = 0: the conditional model, exactly
            return self.model(x_t, t, y)
        # 1. both branches in one call: rows 0..B-1 with the labels, B..2B-1 without
        null = torch.full_like(y, self.num_classes)
        out = self.model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null]))
        conditional, unconditional = out[:B], out[B:]                         # (B, ...) each
        # 2. Ho & Salimans 2022, Eq. 6: (1 + w) eps(x_t, y) - w eps(x_t)
        w = w.to(out.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))              # (B, 1, ...)
        return conditional + w * (conditional - unconditional)


def _check_labels(labels, K: int) -> Tensor:
    """Labels as an int64 CPU tensor, () or (B,), with values in 0..K; else ValueError."""
    if isinstance(labels, bool):
        raise ValueError(f"labels must be integers 0..{K - 1}, got {labels!r}")
    y = labels if isinstance(labels, Tensor) else torch.as_tensor(labels)
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool or y.ndim > 1:
        raise ValueError(f"labels must be an int or a (B,) tensor of integers 0..{K - 1}, "
                         f"got {labels!r}")
    y = y.cpu().long()
    if y.numel() == 0 or y.min() < 0 or y.max() > K:
        raise ValueError(f"labels must be classes 0..{K - 1} (or {K}, no class), got {labels!r}")
    return y


def _check_scale(scale) -> Tensor:
    """Guidance weights as a float64 CPU tensor, () or (B,), finite and >= 0; else ValueError."""
    if isinstance(scale, bool):
        raise ValueError(f"guidance_scale must be a number >= 0, got {scale!r}")
    try:
        w = (scale if isinstance(scale, Tensor) else torch.as_tensor(scale)).cpu().double()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"guidance_scale must be a number >= 0, got {scale!r}") from None
    if w.ndim > 1 or w.numel() == 0 or not bool((w.isfinite() & (w >= 0)).all()):
        raise ValueError(f"guidance_scale must be a finite number >= 0 (or a (B,) tensor of "
                         f"them), got {scale!r}")
    return w


def _per_sample(value: Tensor, B: int, name: str, device: torch.device) -> Tensor:
    """A () or (B,) tensor as (B,) on ``device``; ValueError for another batch size."""
    if value.ndim == 1 and value.shape[0] != B:
        raise ValueError(f"{name} has {value.shape[0]} entries, but the batch has {B} samples")
    return value.expand(B).to(device)
