"""Sinusoidal timestep embedding, and the class embedding of conditional networks.

The positional encoding of the Transformer (Vaswani et al. 2017, "Attention Is All You
Need", Sec. 3.5), used by DDPM (Ho et al. 2020, Appendix B) to tell one shared network
which diffusion step t it is denoising: "Diffusion time t is specified by adding the
Transformer sinusoidal position embedding into each residual block."

For a step t and an even embedding width d = 2h, frequency i (0 <= i < h) is

    w_i = 1 / max_period ** (2 i / d)

and the embedding is the two halves

    [sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})].

Vaswani et al. interleave sin and cos; DDPM's implementation concatenates the halves, as
here, and divides by h - 1 instead of h in the exponent. Neither difference matters to the
network (the first layer after the embedding is linear), so we keep the formula of Vaswani et al.
"""

import math

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017, Sec. 3.5; Ho et al. 2020, App. B).

    Args:
        t: timesteps, shape (B,). Integer indices 0..T-1 (t = 0 is the first diffusion
            step), or floats, used as they are (no rescaling): fractional steps are allowed.
        dim: width of the embedding; must be even (half sines, half cosines).
        max_period: the longest wavelength, 10000 in both papers. Steps up to a few
            thousand then stay far from wrapping around.

    Returns:
        The embedding, shape (B, dim), float32 whatever the dtype of t: sin/cos of steps
        up to 1000 would lose most of their precision in bfloat16.
    """
    if dim <= 0 or dim % 2 != 0:
        raise ValueError(f"timestep_embedding: dim must be a positive even number, got {dim}")
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding: t must have shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float32) / half  # (h,) = 2i/d
    freqs = torch.exp(-math.log(max_period) * exponent)  # (h,) w_i = max_period^(-2i/d)
    args = t.to(torch.float32)[:, None] * freqs[None, :]  # (B, h)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, d)


def check_timesteps(t: Tensor, batch_size: int, who: str) -> None:
    """Raise ValueError unless t is a tensor of timesteps of shape (batch_size,).

    Only the shape and dtype are checked, never the values: reading values would force a
    device sync and break torch.compile graphs. The network does not know T anyway.
    """
    if not isinstance(t, Tensor):
        raise ValueError(f"{who}: t must be a torch.Tensor of shape (B,), got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{who}: t must hold integer or float timesteps, got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] != batch_size:
        raise ValueError(
            f"{who}: t must have shape (B,) = ({batch_size},), one timestep per sample, "
            f"got {tuple(t.shape)}"
        )


class ClassEmbedding(nn.Module):
    """A learned vector per class, plus one for "no class": the label input of a
    class-conditional network (chapter 9).

    Classes are 0..K-1 and label K is "no class" (the null label of classifier-free
    guidance, Ho & Salimans 2022): trained on labels replaced by K with probability
    p_uncond, one network learns both eps(x_t, t, y) and eps(x_t, t). The vector is added
    to the timestep embedding, as the class-conditional U-Net of Dhariwal & Nichol 2021
    does, so every residual block sees it.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)       # row K: "no class"

    def forward(self, y: Tensor | None, batch_size: int, who: str) -> Tensor:
        """y: (B,) integer labels 0..K, or None for "no class" everywhere -> (B, dim)."""
        if y is None:
            y = torch.full((batch_size,), self.num_classes, dtype=torch.long,
                           device=self.table.weight.device)
        check_labels(y, batch_size, who)
        return self.table(y.long())                           # (B, dim)


def check_labels(y: Tensor, batch_size: int, who: str) -> None:
    """Raise ValueError unless y is an integer tensor of shape (batch_size,).

    As for timesteps, only shape and dtype are checked, never the values (no device sync).
    """
    if not isinstance(y, Tensor):
        raise ValueError(f"{who}: y must be a torch.Tensor of shape (B,), got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{who}: y must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != batch_size:
        raise ValueError(f"{who}: y must have shape (B,) = ({batch_size},), one label per "
                         f"sample, got {tuple(y.shape)}")
