"""A residual MLP denoiser eps_theta(x_t, t) for low-dimensional data (2-D toy points).

The image U-Net of DDPM (Ho et al. 2020, Appendix B) reduced to what points need: the same
sinusoidal timestep embedding (Vaswani et al. 2017) and timestep MLP, and residual blocks in
which the embedding is added to the hidden features, as in the U-Net's residual blocks, with
linear layers in place of convolutions.

    x_t -> Linear -> depth x [LayerNorm, SiLU, Linear, + emb, SiLU, Linear, + residual]
        -> LayerNorm, SiLU, Linear -> eps

With ``num_classes = K > 0`` the network is class-conditional, eps_theta(x_t, t, y): a
learned class embedding (K classes and a "no class" entry, :class:`ClassEmbedding`) is
added to the timestep embedding (chapter 9). With K = 0, the default, there is no label
input and the network is the unconditional one, parameter for parameter.
"""

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import ClassEmbedding, check_timesteps, timestep_embedding


@dataclass(frozen=True)
class MLPConfig:
    """Hyperparameters of the MLP denoiser. The defaults suit 2-D toy data.

    Sized for a DDPM on swiss roll or 8 gaussians trained for about two minutes on two CPU
    cores. The defaults (175k parameters) take ~22 ms of one core for a training step on a
    batch of 512, and 3000 such steps (Adam, lr 5e-3 decayed to 0) give samples as close to
    the data, by MMD and nearest-neighbour distance, as a second draw of the data.
    """

    dim: int = 2  # dimension of the data points
    hidden: int = 128  # 256 costs 3x more per step and fits the toys no better in two minutes
    depth: int = 3  # residual blocks: 4 did no better on the toys; LayerNorm in each matters
    time_embed_dim: int = 64  # sinusoid width: 32 frequencies tell apart T = 1000 steps
    dropout: float = 0.0  # toy data is sampled afresh each batch: nothing to overfit
    num_classes: int = 0  # K > 0: class-conditional, model(x_t, t, y) with y in 0..K (K: none)

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "depth", "time_embed_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MLPConfig.{name} must be an int >= 1, got {value!r}")
        n = self.num_classes
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"MLPConfig.num_classes must be an int >= 0, got {n!r}")
        if self.time_embed_dim % 2 != 0:
            raise ValueError(
                f"MLPConfig.time_embed_dim must be positive and even, got {self.time_embed_dim}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MLPConfig.dropout must be in [0, 1), got {self.dropout}")


class ResidualMLPBlock(nn.Module):
    """x + Linear(Dropout(SiLU(Linear(SiLU(LayerNorm(x))) + proj(emb)))): the U-Net's
    residual block (Ho et al. 2020, App. B) with linear layers for convolutions."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: (B, hidden); emb: (B, hidden), the timestep embedding after its SiLU."""
        h = self.fc1(F.silu(self.norm(x))) + self.emb_proj(emb)  # (B, hidden)
        return x + self.fc2(self.dropout(F.silu(h)))  # (B, hidden)


class MLPDenoiser(nn.Module):
    """Noise-prediction MLP for points: model(x_t, t) -> eps, both of shape (B, dim);
    model(x_t, t, y) when conditional (``config.num_classes > 0``)."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = cfg = config
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.time_embed_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden)
        )
        self.fc_in = nn.Linear(cfg.dim, cfg.hidden)
        self.blocks = nn.ModuleList(
            ResidualMLPBlock(cfg.hidden, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm_out = nn.LayerNorm(cfg.hidden)
        self.fc_out = nn.Linear(cfg.hidden, cfg.dim)
        if cfg.num_classes:   # registered last: an unconditional network keeps its state dict
            self.class_embed = ClassEmbedding(cfg.num_classes, cfg.hidden)

    @property
    def num_classes(self) -> int:
        """K, the number of classes (label K is "no class"); 0 for an unconditional network."""
        return self.config.num_classes

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Predict the noise in x_t.

        Args:
            x: noisy points x_t, shape (B, dim).
            t: timesteps, shape (B,): integers 0..T-1, t = 0 the first diffusion step (floats
                are accepted and embedded as they are).
            y: class labels, shape (B,), integers 0..K with K = "no class"; None is "no
                class" for every sample. Only for a conditional network (num_classes > 0).

        Returns:
            Shape (B, dim).
        """
        cfg = self.config
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != cfg.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"MLPDenoiser: x must have shape (B, {cfg.dim}), got {shape}")
        check_timesteps(t, x.shape[0], "MLPDenoiser")
        emb = timestep_embedding(t, cfg.time_embed_dim)  # (B, time_embed_dim), float32
        emb = self.time_mlp(emb.to(self.time_mlp[0].weight.dtype))  # (B, hidden)
        if cfg.num_classes:
            emb = emb + self.class_embed(y, x.shape[0], "MLPDenoiser")  # (B, hidden)
        elif y is not None:
            raise ValueError("MLPDenoiser: y given, but this network is unconditional "
                             "(num_classes=0)")
        emb = F.silu(emb)  # (B, hidden)
        h = self.fc_in(x)  # (B, hidden)
        for block in self.blocks:
            h = block(h, emb)  # (B, hidden)
        return self.fc_out(F.silu(self.norm_out(h)))  # (B, dim)
