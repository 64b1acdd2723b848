"""Class-conditional training and sampling: label dropout, samples per class, class grids.

Classifier-free guidance (Ho & Salimans 2022) trains one network for both p(x | y) and
p(x): during training each label is replaced by "no class" (label K) with probability
``p_uncond`` (:func:`drop_labels`, 0.1 in the paper). At sampling time
:class:`diffusion_lib.guidance.ClassifierFreeGuidance` combines the two predictions.
:func:`generate_per_class` draws samples of given classes at a guidance weight, and
:func:`save_class_png` pictures them: rows of images, one per class, or points coloured
by class. Chapter 9 and ``python -m diffusion_lib sample --label`` use them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..guidance import ClassifierFreeGuidance
from ..schedules import NoiseSchedule
from .sampling import generate

__all__ = ["drop_labels", "generate_per_class", "save_class_png", "class_grid"]


def drop_labels(y: Tensor, p_uncond: float, num_classes: int,
                generator: torch.Generator | None = None) -> Tensor:
    """Label dropout: each label replaced by ``num_classes`` ("no class") with probability
    ``p_uncond``, independently (Ho & Salimans 2022, Algorithm 1).

    Args:
        y: (B,) int64 labels 0..K-1 on the generator's device.
    Returns:
        (B,) int64, a new tensor.
    """
    if not 0 <= p_uncond < 1:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond!r}")
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p_uncond     # (B,)
    return torch.where(drop, torch.full_like(y, num_classes), y)


@torch.no_grad()
def generate_per_class(model: nn.Module, schedule: NoiseSchedule, sample_shape: tuple[int, ...],
                       num_per_class: int, labels: Sequence[int], *,
                       guidance_scale: float = 0.0, kind: Literal["points", "images"],
                       sampler: Literal["ddpm", "ddim"] = "ddpm", steps: int | None = None,
                       eta: float = 0.0, seed: int = 0, batch_size: int | None = None,
                       prediction_type: str = "epsilon",
                       progress: bool = False) -> tuple[Tensor, Tensor]:
    """``num_per_class`` guided samples of each class in ``labels``, in training space.

    Each class is drawn by :func:`~.sampling.generate` from the same seed, so the rows
    of a class grid start from the same noise and differ by their label only.

    Returns:
        x: (len(labels) * num_per_class, *sample_shape) float32 on the CPU, class by class;
        y: (len(labels) * num_per_class,) int64, the class of each row.
    """
    xs, ys = [], []
    for label in labels:
        guided = ClassifierFreeGuidance(model, int(label), guidance_scale)
        xs.append(generate(guided, schedule, sample_shape, num_per_class, kind=kind,
                           sampler=sampler, steps=steps, eta=eta, seed=seed,
                           batch_size=batch_size, prediction_type=prediction_type,
                           progress=progress))
        ys.append(torch.full((num_per_class,), int(label), dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def save_class_png(samples: np.ndarray, labels: np.ndarray, path: str | Path, *, kind: str,
                   class_names: Sequence[str], title: str = "",
                   reference: np.ndarray | None = None) -> Path:
    """A picture of samples of several classes, written atomically.

    Images (uint8 N, H, W, C): one row per class, up to 16 images each, the class name
    on the left. Points (N, D; the first two dims): a scatter coloured by class, with
    ``reference`` data in grey behind.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .checkpoint import atomic_write_bytes

    labels = np.asarray(labels)
    classes = list(dict.fromkeys(labels.tolist()))                   # in order of appearance
    if kind == "points":
        fig = Figure(figsize=(5.5, 5), dpi=100)
        ax = fig.add_subplot()
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=2, c="0.8", label="data")
        for i, k in enumerate(classes):
            rows = labels == k
            y = samples[rows, 1] if samples.shape[1] > 1 else np.zeros(int(rows.sum()))
            ax.scatter(samples[rows, 0], y, s=2, color=f"C{i % 10}",
                       label=f"class {class_names[k]}")
        # frame the data, or the central 90% of the samples with a wide margin: a few
        # far-out samples of a coarse sampler would otherwise squeeze the rest into a dot
        if reference is not None:
            low, high = reference[:, :2].min(0), reference[:, :2].max(0)
            margin = 0.15
        else:
            low, high = np.percentile(samples[:, :2], [5, 95], axis=0)
            margin = 0.5
        low, high = low - margin * (high - low), high + margin * (high - low)
        outside = int((~((samples[:, :2] >= low) & (samples[:, :2] <= high)).all(1)).sum())
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.legend(loc="upper right", markerscale=4, fontsize=8,
                  title=f"{outside} samples outside" if outside else None)
        ax.set_aspect("equal", adjustable="box")
    else:
        grid = class_grid([samples[labels == k][:16] for k in classes])
        H = samples.shape[1]
        height = max(2.0, min(10.0, 0.45 * len(classes) + 0.6))
        fig = Figure(figsize=(height * grid.shape[1] / grid.shape[0] + 1.2, height), dpi=100)
        ax = fig.add_axes((0.18, 0, 0.8, 0.92 if title else 1))
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_yticks([1 + i * (H + 1) + (H - 1) / 2 for i in range(len(classes))],
                      [class_names[k] for k in classes], fontsize=8)
        ax.set_xticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def class_grid(rows: Sequence[np.ndarray], pad: int = 1) -> np.ndarray:
    """Rows of uint8 images, row r of shape (n_r, H, W, C), as one picture with white
    padding: (len(rows) * (H + pad) + pad, max n_r * (W + pad) + pad, C), rows left-aligned."""
    H, W, C = rows[0].shape[1:]
    cols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (H + pad) + pad, cols * (W + pad) + pad, C), 255, dtype=np.uint8)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            y, x = pad + r * (H + pad), pad + c * (W + pad)
            grid[y:y + H, x:x + W] = image
    return grid
