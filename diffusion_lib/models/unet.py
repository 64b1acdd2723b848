"""The DDPM U-Net: the noise-prediction network eps_theta(x_t, t) of Ho et al. 2020.

"Denoising Diffusion Probabilistic Models", Sec. 4 and Appendix B: the U-Net backbone of
PixelCNN++ (a Wide-ResNet U-Net) with group normalization in place of weight normalization,
two residual blocks per resolution, self-attention at the 16x16 resolution, and the diffusion
time t added into every residual block through the Transformer sinusoidal embedding. With
the CIFAR-10 settings (the defaults of UNetConfig) it has the paper's 35.7M parameters.

Layout, as in the paper's implementation:

    conv_in -> [levels: num_res_blocks x (res block [+ attention]), downsample]
            -> middle: res block, attention, res block
            -> [levels, reversed: (num_res_blocks + 1) x (res block [+ attention]), upsample]
            -> GroupNorm, SiLU, conv_out

Every activation saved on the way down (conv_in's output, each block's, each downsample's)
is concatenated to the input of one block on the way up, hence the extra block per level.

The network knows nothing of the noise schedule: it maps (x_t, t) to a tensor shaped like
x_t, and a sampler may call it as any `model(x_t, t)`.

With `num_classes = K > 0` it is class-conditional, eps_theta(x_t, t, y): a learned class
embedding (K classes and a "no class" entry) is added to the timestep embedding, as in the
class-conditional U-Net of Dhariwal & Nichol 2021 (chapter 9). K = 0, the default, is the
unconditional network above, parameter for parameter.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import ClassEmbedding, check_timesteps, timestep_embedding

GROUPNORM_EPS = 1e-6  # as in the paper's TensorFlow code; PyTorch's default is 1e-5


class Conv1x1(nn.Conv2d):
    """A 1x1 convolution (a linear map of the channels at every pixel), computed as a matmul.

    Same parameters (weight (out, in, 1, 1), bias (out,)) and the same math as nn.Conv2d with
    kernel_size=1. A contiguous (NCHW) input runs as one batched matmul of the weight's
    (out, in) view with x's (in, H*W) view, with no copy: PyTorch's CPU convolution sends
    1x1 kernels at small batch on one thread to a slow im2col path. A channels_last input
    keeps the convolution, which cuDNN (GPU) and oneDNN handle well in that layout.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(in_ch, out_ch, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_contiguous():
            return super().forward(x)
        return self.forward_bcn(x.flatten(2)).unflatten(2, x.shape[2:])  # (B, out, H, W)

    def forward_bcn(self, x: Tensor) -> Tensor:
        """Channels first: x of shape (B, in, N), any strides, to (B, out, N)."""
        B, _, N = x.shape
        w = self.weight.flatten(1).expand(B, -1, -1)  # (B, out, in), a view
        b = self.bias[:, None].expand(B, -1, N)  # (B, out, N), a view
        return torch.baddbmm(b, w, x)

    def forward_bnc(self, x: Tensor) -> Tensor:
        """Channels last: x of shape (B, N, in), any strides, to (B, N, out)."""
        if x.is_contiguous():  # one (B*N, in) @ (in, out) matmul
            return F.linear(x, self.weight.flatten(1), self.bias)
        B, N, _ = x.shape
        w = self.weight.flatten(1).t().expand(B, -1, -1)  # (B, in, out), a view
        b = self.bias.expand(B, N, -1)  # (B, N, out), a view
        return torch.baddbmm(b, x, w)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class UNetConfig:
    """Hyperparameters of the DDPM U-Net. The defaults are the paper's CIFAR-10 model."""

    image_size: int = 32  # side of the training images; fixes which levels get attention
    in_channels: int = 3
    out_channels: int | None = None  # None: same as in_channels (eps is shaped like x_t)
    channels: int = 128  # width of the first level
    # Level i has width channels * channel_mults[i]; one level per resolution: 32, 16, 8, 4.
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2  # per level on the way down; the way up has one more (skips)
    # Feature-map sides with self-attention: 16 only in the paper; at 32x32 the attention
    # matrix is 16x larger for little gain.
    attention_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1  # the paper's CIFAR-10 value, against overfitting 50k images
    num_heads: int = 1  # the paper's attention is single-head
    norm_groups: int = 32  # GroupNorm(32) as in the paper; every level's width must divide by it
    num_classes: int = 0  # K > 0: class-conditional, model(x_t, t, y) with y in 0..K (K: none)

    def __post_init__(self) -> None:
        n = self.num_classes
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"UNetConfig.num_classes must be an int >= 0, got {n!r}")
        for name in ("image_size", "in_channels", "channels", "num_res_blocks", "num_heads",
                     "norm_groups"):
            value = getattr(self, name)
            if not _positive_int(value):
                raise ValueError(f"UNetConfig.{name} must be an int >= 1, got {value!r}")
        if self.out_channels is not None and not _positive_int(self.out_channels):
            raise ValueError(
                f"UNetConfig.out_channels must be an int >= 1 or None, got {self.out_channels!r}"
            )
        for name in ("channel_mults", "attention_resolutions"):
            values = getattr(self, name)
            ok = isinstance(values, (tuple, list)) and all(_positive_int(v) for v in values)
            if not ok or (name == "channel_mults" and not values):
                raise ValueError(f"UNetConfig.{name} must be a tuple of ints >= 1, got {values!r}")
            # Configs saved as JSON come back with lists: store tuples, so that configs compare.
            object.__setattr__(self, name, tuple(values))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout}")
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size % factor != 0:
            raise ValueError(
                f"UNetConfig.image_size={self.image_size} must be divisible by {factor} "
                f"(2 ** (levels - 1), one halving per level after the first)"
            )
        for mult in self.channel_mults:
            width = self.channels * mult
            if width % self.norm_groups != 0:
                raise ValueError(
                    f"UNetConfig: level width channels * mult = {width} is not divisible by "
                    f"norm_groups={self.norm_groups}"
                )
            if width % self.num_heads != 0:
                raise ValueError(
                    f"UNetConfig: level width {width} not divisible by num_heads={self.num_heads}"
                )
        unknown = sorted(set(self.attention_resolutions) - set(self.resolutions))
        if unknown:
            raise ValueError(
                f"UNetConfig.attention_resolutions {unknown} match no level; the feature-map "
                f"sides of this U-Net are {self.resolutions}"
            )

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map side at each level, e.g. (32, 16, 8, 4) for CIFAR-10."""
        return tuple(self.image_size // 2**i for i in range(len(self.channel_mults)))


class ResidualBlock(nn.Module):
    """Residual block with the timestep added in (Ho et al. 2020, App. B; PixelCNN++ style).

    GroupNorm, SiLU, 3x3 conv, + projection of the timestep embedding, GroupNorm, SiLU,
    dropout, 3x3 conv (zero-initialised, so the block starts as its skip path), plus a 1x1
    conv on the skip path when the number of channels changes.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=GROUPNORM_EPS)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=GROUPNORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = Conv1x1(in_ch, out_ch) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: (B, in_ch, H, W); emb: (B, emb_dim), the timestep embedding after its SiLU."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        h = h + self.emb_proj(emb)[:, :, None, None]  # one bias per channel, per sample
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (B, out_ch, H, W)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Self-attention over the H*W positions of a feature map, with a residual connection.

    GroupNorm, 1x1 projection to queries, keys and values, scaled dot-product attention
    (Vaswani et al. 2017), 1x1 output projection (zero-initialised: starts as the identity).
    """

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels, eps=GROUPNORM_EPS)
        self.qkv = Conv1x1(channels, 3 * channels)
        self.proj = Conv1x1(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C), a view
        # Positions first, channels last, straight out of the matmul (no copy): it gives
        # q, k, v a unit stride on their last dim, which the fused kernels want.
        qkv = self.qkv.forward_bnc(h)  # (B, HW, 3C)
        qkv = qkv.unflatten(2, (3, self.num_heads, C // self.num_heads))  # (B, HW, 3, heads, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, HW, d), d = C / heads
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d), scaled by 1/sqrt(d)
        h = h.transpose(1, 2).reshape(B, H * W, C)  # (B, HW, C), a view when heads = 1
        if x.is_contiguous():  # NCHW: project back to channels first, the layout of x
            h = self.proj.forward_bcn(h.transpose(1, 2))  # (B, C, HW)
        else:  # channels_last: stay positions first, a channels_last view of (B, C, H, W)
            h = self.proj.forward_bnc(h).transpose(1, 2)  # (B, C, HW)
        return x + h.unflatten(2, (H, W))  # (B, C, H, W)


class ResAttnBlock(nn.Module):
    """A residual block, followed by self-attention at the resolutions that have it."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, attention: bool, cfg: UNetConfig):
        super().__init__()
        self.res = ResidualBlock(in_ch, out_ch, emb_dim, cfg.dropout, cfg.norm_groups)
        self.attn = SelfAttention(out_ch, cfg.num_heads, cfg.norm_groups) if attention else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.res(x, emb)
        return h if self.attn is None else self.attn(h)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution.

    Padded by one pixel on every side; the paper's TensorFlow code pads only the bottom and
    right ("SAME"). The parameters are the same; the sampling grid is shifted by half a pixel.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class Level(nn.Module):
    """One resolution of the U-Net: its blocks, then the resampling to the next (or None)."""

    def __init__(self, blocks: list[ResAttnBlock], resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample


class UNet(nn.Module):
    """The DDPM noise-prediction U-Net, eps_theta(x_t, t) (Ho et al. 2020, Appendix B);
    eps_theta(x_t, t, y) when class-conditional (``config.num_classes > 0``)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        ch = cfg.channels
        emb_dim = 4 * ch  # the paper's timestep MLP widens to 4x the base width
        levels = len(cfg.channel_mults)
        self.time_mlp = nn.Sequential(
            nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        # Way down: record the width of every activation that is saved for a skip.
        skip_widths = [ch]
        width = ch
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.channel_mults):
            attention = cfg.resolutions[i] in cfg.attention_resolutions
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResAttnBlock(width, ch * mult, emb_dim, attention, cfg))
                width = ch * mult
                skip_widths.append(width)
            resample = Downsample(width) if i < levels - 1 else None
            if resample is not None:
                skip_widths.append(width)
            self.down.append(Level(blocks, resample))

        self.mid_res1 = ResidualBlock(width, width, emb_dim, cfg.dropout, cfg.norm_groups)
        self.mid_attn = SelfAttention(width, cfg.num_heads, cfg.norm_groups)
        self.mid_res2 = ResidualBlock(width, width, emb_dim, cfg.dropout, cfg.norm_groups)

        # Way up: each block takes one saved activation, last saved first.
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.channel_mults))):
            attention = cfg.resolutions[i] in cfg.attention_resolutions
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                in_width = width + skip_widths.pop()
                blocks.append(ResAttnBlock(in_width, ch * mult, emb_dim, attention, cfg))
                width = ch * mult
            self.up.append(Level(blocks, Upsample(width) if i > 0 else None))

        self.norm_out = nn.GroupNorm(cfg.norm_groups, width, eps=GROUPNORM_EPS)
        self.conv_out = nn.Conv2d(width, cfg.out_channels or cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the paper's code: the network starts by predicting 0
        nn.init.zeros_(self.conv_out.bias)
        if cfg.num_classes:   # registered last: an unconditional network keeps its state dict
            self.class_embed = ClassEmbedding(cfg.num_classes, emb_dim)

    @property
    def num_classes(self) -> int:
        """K, the number of classes (label K is "no class"); 0 for an unconditional network."""
        return self.config.num_classes

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Predict the noise in x_t.

        Args:
            x: noisy images x_t, shape (B, in_channels, H, W). H and W must be divisible by
                2 ** (levels - 1); they need not equal image_size, which only fixed, at
                construction, the levels that have attention.
            t: timesteps, shape (B,): integers 0..T-1, t = 0 the first diffusion step (floats
                are accepted and embedded as they are).
            y: class labels, shape (B,), integers 0..K with K = "no class"; None is "no
                class" for every sample. Only for a conditional network (num_classes > 0).

        Returns:
            Shape (B, out_channels, H, W).
        """
        self._check_inputs(x, t)
        emb = timestep_embedding(t, self.config.channels)  # (B, ch), float32
        emb = self.time_mlp(emb.to(self.time_mlp[0].weight.dtype))  # (B, 4ch)
        if self.config.num_classes:
            emb = emb + self.class_embed(y, x.shape[0], "UNet")  # (B, 4ch)
        elif y is not None:
            raise ValueError("UNet: y given, but this network is unconditional (num_classes=0)")
        emb = F.silu(emb)  # every block applies SiLU before its projection: do it once here

        h = self.conv_in(x)  # (B, ch, H, W)
        saved = [h]
        for level in self.down:
            for block in level.blocks:
                h = block(h, emb)  # (B, ch * mult, H_i, W_i)
                saved.append(h)
            if level.resample is not None:
                h = level.resample(h)  # (B, ch * mult, H_i / 2, W_i / 2)
                saved.append(h)

        h = self.mid_res1(h, emb)  # (B, ch * mults[-1], H_last, W_last), as are the next two
        h = self.mid_attn(h)
        h = self.mid_res2(h, emb)

        for level in self.up:
            for block in level.blocks:
                h = torch.cat([h, saved.pop()], dim=1)  # (B, C + C_skip, H_i, W_i)
                h = block(h, emb)  # (B, ch * mult, H_i, W_i)
            if level.resample is not None:
                h = level.resample(h)  # (B, ch * mult, 2 H_i, 2 W_i)

        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)

    def _check_inputs(self, x: Tensor, t: Tensor) -> None:
        cfg = self.config
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"UNet: x must have shape (B, {cfg.in_channels}, H, W), got {shape}")
        B, C, H, W = x.shape
        if C != cfg.in_channels:
            raise ValueError(
                f"UNet: x has {C} channels, the model was built for in_channels={cfg.in_channels}"
            )
        factor = 2 ** (len(cfg.channel_mults) - 1)
        if H % factor != 0 or W % factor != 0:
            raise ValueError(
                f"UNet: spatial size {H}x{W} must be divisible by {factor} "
                f"(2 ** (levels - 1) for {len(cfg.channel_mults)} levels)"
            )
        check_timesteps(t, B, "UNet")
