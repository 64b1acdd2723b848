"""Draw samples from a trained network and picture them: what a run folder's previews,
``python -m diffusion_lib sample`` and ``evaluate`` share.

Sampling is DDPM's Algorithm 2 (Ho et al. 2020) or DDIM (Song et al. 2021, Eq. 12) from
:mod:`diffusion_lib.samplers`; images clip the predicted x_0 to [-1, 1]
(``clip_denoised=True``), points do not. Pictures are drawn with matplotlib's
object-oriented API on an Agg canvas, imported only when a PNG is written, so a
notebook's pyplot backend is never changed.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..samplers import ddim_sample_loop, p_sample_loop
from ..schedules import NoiseSchedule

__all__ = ["generate", "to_data_space", "save_png", "image_grid"]


@torch.no_grad()
def generate(model: nn.Module, schedule: NoiseSchedule, sample_shape: tuple[int, ...],
             num_samples: int, *, kind: Literal["points", "images"],
             sampler: Literal["ddpm", "ddim"] = "ddpm", steps: int | None = None,
             eta: float = 0.0, seed: int = 0, batch_size: int | None = None,
             prediction_type: str = "epsilon", progress: bool = False) -> Tensor:
    """``num_samples`` samples in training space, (N, *sample_shape) float32 on the CPU.

    Args:
        model, schedule: on the same device; the model is put in eval mode.
        sampler: "ddpm" (Algorithm 2, all T steps) or "ddim" with ``steps`` steps and ``eta``.
        seed: seeds one generator on the model's device; the result depends on it and on
            ``batch_size`` (default: 1000 points or 256 images per batch).
    """
    was_training = model.training
    model.eval()
    device = schedule.betas.device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    batch_size = batch_size or (1000 if kind == "points" else 256)
    clip = kind == "images"
    out = []
    try:
        for start in range(0, num_samples, batch_size):
            shape = (min(batch_size, num_samples - start), *sample_shape)
            if sampler == "ddpm":
                x = p_sample_loop(schedule, model, shape, generator=generator,
                                  prediction_type=prediction_type, clip_denoised=clip,
                                  progress=progress)
            elif sampler == "ddim":
                x = ddim_sample_loop(schedule, model, shape, num_steps=steps or 50, eta=eta,
                                     generator=generator, prediction_type=prediction_type,
                                     clip_denoised=clip, progress=progress)
            else:
                raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
            out.append(x.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def to_data_space(x: Tensor, data: dict[str, Any]) -> np.ndarray:
    """Training space -> the data's own space, from a checkpoint's ``data`` entry.

    Points: x * std + mean, float32 (N, D). Images: round((x + 1) * 127.5) clamped to
    0..255, uint8 (N, H, W, C) -- the inverse of the datasets' x0 = u / 127.5 - 1.
    """
    x = x.detach().to("cpu", torch.float64)
    if data["kind"] == "points":
        mean = torch.tensor(data["mean"], dtype=torch.float64)
        std = torch.tensor(data["std"], dtype=torch.float64)
        return (x * std + mean).float().numpy()
    u = ((x + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)          # (N, C, H, W)
    return u.permute(0, 2, 3, 1).numpy()                                  # (N, H, W, C)


def image_grid(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """uint8 (N, H, W, C) -> one (rows * (H + pad) + pad, cols * (W + pad) + pad, C) grid."""
    N, H, W, C = images.shape
    cols = math.ceil(math.sqrt(N))
    rows = math.ceil(N / cols)
    grid = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, C), 255, dtype=np.uint8)
    for i in range(N):
        r, c = divmod(i, cols)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        grid[y:y + H, x:x + W] = images[i]
    return grid


def save_png(samples: np.ndarray, path: str | Path, *, kind: str, title: str = "",
             reference: np.ndarray | None = None) -> Path:
    """An image grid (images, uint8 N,H,W,C) or a scatter plot (points, N,D; first two dims).

    ``reference``: data points drawn in grey behind the samples. Written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .checkpoint import atomic_write_bytes

    path = Path(path)
    if kind == "points":
        fig = Figure(figsize=(5, 5), dpi=100)
        ax = fig.add_subplot()
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=2, c="0.75", label="data")
        y = samples[:, 1] if samples.shape[1] > 1 else np.zeros(len(samples))
        ax.scatter(samples[:, 0], y, s=2, c="C0", label="samples")
        if reference is not None:          # frame the data; say how many samples fall outside
            low, high = reference[:, :2].min(0), reference[:, :2].max(0)
            low, high = low - 0.15 * (high - low), high + 0.15 * (high - low)
            outside = int((~((samples[:, :2] >= low) & (samples[:, :2] <= high)).all(1)).sum())
            ax.set_xlim(low[0], high[0])
            ax.set_ylim(low[1], high[1])
            ax.legend(loc="upper right", markerscale=4,
                      title=f"{outside} samples outside" if outside else None)
        ax.set_aspect("equal", adjustable="box")
    else:
        grid = image_grid(samples)
        side = max(3.0, min(8.0, grid.shape[1] / 40))
        fig = Figure(figsize=(side, side * grid.shape[0] / grid.shape[1]), dpi=100)
        ax = fig.add_axes((0, 0, 1, 0.93 if title else 1))
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path
