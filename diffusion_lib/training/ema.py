"""Exponential moving average of the weights, the network DDPM samples with.

Ho et al. 2020 (App. B) sample from an EMA of the parameters with decay 0.9999. A decay
that high barely moves away from the random initialisation in a short run, so the decay
warms up as min(decay, (1 + k) / (10 + k)) at step k: 0.1 at the first step, 0.9 after 80
steps, 0.99 after 890 (chapters 6 and 7 train for a few thousand steps).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "ema_decay_at"]


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """The decay used at 0-indexed optimizer step ``step``: a pure function of the step."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


class EMA:
    """An averaged copy of a network: ema <- decay * ema + (1 - decay) * weights.

    Args:
        model: the network being trained (the plain module, not a DDP or compiled wrapper).
        decay: the long-run decay, e.g. 0.9999.
        warmup: use :func:`ema_decay_at`'s warm-up.

    ``self.model`` is the averaged network, in eval mode and without gradients.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs(model)    # checks the parameter lists line up

    def _pairs(self, model: nn.Module) -> tuple[list, list]:
        ema, live = list(self.model.parameters()), list(model.parameters())
        if len(ema) != len(live):
            raise ValueError("EMA and model have different parameter lists")
        return ema, live

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average in ``model``'s weights after optimizer step ``step`` (0-indexed)."""
        ema, live = self._pairs(model)
        weight = 1.0 - ema_decay_at(step, self.decay, self.warmup)
        torch._foreach_lerp_(ema, live, weight)       # ema += weight * (live - ema), all at once
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)                             # buffers (if any) are not averaged

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
