"""Two-dimensional toy distributions: swiss roll, two moons, eight Gaussians, checkerboard.

Small enough to train a DDPM on a CPU in minutes, and to look at: every sample is a
point of the plane. Each ``sample_<name>(n, generator)`` returns (n, 2) float32 points
in data space, deterministic given the generator. :func:`make_toy` wraps one in a
:class:`ToyDataset`, whose batches are fresh draws from a generator seeded by
(seed, step, rank): a toy never repeats a point, and its "epoch" of
:data:`TOY_EPOCH_SIZE` points is only nominal.

``8gaussians`` is a Gaussian mixture, so its density is known exactly
(:class:`EightGaussiansDataset`): the oracle of chapter 6 compares a trained network
with the exact denoiser of this mixture.

Two toys have a natural class label (:data:`TOY_CLASS_NAMES`), for class-conditional
models (chapter 9): the component 0..7 of ``8gaussians`` (component k centred at angle
2 pi k / 8) and the half circle of ``moons`` (0 the upper, 1 the lower). Their samplers
return it with ``return_labels=True``, from the same random draws.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from . import (
    DATASETS,
    SPLITS,
    TAG_TOY_ALL_DATA,
    TAG_TOY_BATCH,
    TAG_TOY_STATS,
    DataError,
    PointsDataset,
    check_batch_args,
    generator_for,
)

__all__ = ["TOY_EPOCH_SIZE", "TOY_SAMPLERS", "TOY_CLASS_NAMES", "sample_swissroll",
           "sample_moons",
           "sample_8gaussians", "sample_checkerboard", "eight_gaussians_parameters",
           "eight_gaussians_log_prob", "ToyDataset", "EightGaussiansDataset", "make_toy"]

TOY_EPOCH_SIZE = 100_000      # nominal epoch, and the size of all_data() and of the stats draw
SWISSROLL_NOISE = 0.5         # std of the noise around the spiral, whose arms are ~6 apart
MOONS_NOISE = 0.1             # std around the unit half circles, as in sklearn's examples
EIGHT_GAUSSIANS_RADIUS = 2.0  # the centres lie on this circle, 1.53 apart
EIGHT_GAUSSIANS_STD = 0.15    # 10 stds between neighbouring centres: clearly separate modes


def sample_swissroll(n: int, generator: torch.Generator | None = None) -> Tensor:
    """A 2-D swiss roll: the spiral (t cos t, t sin t), t in [1.5 pi, 4.5 pi], plus noise.

    Returns:
        (n, 2) float32, roughly in [-10, 13]^2.
    """
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    t = 1.5 * math.pi * (1 + 2 * u)                                        # (n,) angle
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)           # (n, 2)
    x = x + SWISSROLL_NOISE * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x.float()


def sample_moons(n: int, generator: torch.Generator | None = None,
                 return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Two interleaved half circles of radius 1, each point on either with probability 1/2.

    Returns:
        (n, 2) float32, roughly in [-1, 2] x [-0.5, 1]; with ``return_labels`` also the
        half circle of each point, (n,) int64: 0 the upper, 1 the lower.
    """
    upper = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5      # (n,)
    t = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)      # (n,)
    outer = torch.stack([torch.cos(t), torch.sin(t)], dim=1)                    # (n, 2)
    inner = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)          # (n, 2)
    x = torch.where(upper[:, None], outer, inner)
    x = x + MOONS_NOISE * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (x.float(), (~upper).long()) if return_labels else x.float()


def eight_gaussians_parameters() -> tuple[Tensor, Tensor, Tensor]:
    """The exact mixture behind ``8gaussians``, float64.

    Returns:
        weights (8,) all 1/8; means (8, 2) at angles 2 pi k / 8 on the circle of radius
        :data:`EIGHT_GAUSSIANS_RADIUS`; covariances (8, 2, 2) = std^2 I.
    """
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    covariances = EIGHT_GAUSSIANS_STD**2 * torch.eye(2, dtype=torch.float64).expand(8, 2, 2)
    return torch.full((8,), 1 / 8, dtype=torch.float64), means, covariances.clone()


def sample_8gaussians(n: int, generator: torch.Generator | None = None,
                      return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Eight equally likely isotropic Gaussians centred on a circle of radius 2.

    Returns:
        (n, 2) float32; with ``return_labels`` also the component of each point, (n,)
        int64 (component k is centred at angle 2 pi k / 8).
    """
    _, means, _ = eight_gaussians_parameters()
    k = torch.randint(0, 8, (n,), generator=generator)                       # (n,) component
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    x = (means[k] + EIGHT_GAUSSIANS_STD * noise).float()
    return (x, k) if return_labels else x


def eight_gaussians_log_prob(x: Tensor) -> Tensor:
    """Exact log density of ``8gaussians`` at data-space points x (N, 2).

    log p(x) = logsumexp_k [log w_k - |x - m_k|^2 / (2 std^2)] - log(2 pi std^2).

    Returns:
        (N,) in x's floating dtype (float64 for other inputs), computed in float64.
    """
    x = torch.as_tensor(x)
    out_dtype = x.dtype if x.is_floating_point() else torch.float64
    if x.ndim != 2 or x.shape[1] != 2:
        raise DataError(f"8gaussians: log_prob expects points of shape (N, 2), "
                        f"found {tuple(x.shape)}")
    weights, means, _ = eight_gaussians_parameters()
    var = EIGHT_GAUSSIANS_STD**2
    x64 = x.to(torch.float64)
    sq_dist = ((x64[:, None, :] - means.to(x.device)[None]) ** 2).sum(-1)    # (N, 8)
    log_components = weights.log().to(x.device) - sq_dist / (2 * var)       # (N, 8)
    return (torch.logsumexp(log_components, dim=1) - math.log(2 * math.pi * var)).to(out_dtype)


def sample_checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the 8 dark squares of a 4 x 4 checkerboard over [-2, 2]^2.

    Square (i, j), i the column and j the row, is dark when i + j is even.

    Returns:
        (n, 2) float32 in [-2, 2]^2.
    """
    i = torch.randint(0, 4, (n,), generator=generator)                        # (n,) column
    j = 2 * torch.randint(0, 2, (n,), generator=generator) + i % 2            # (n,) row, i + j even
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)            # within the square
    corner = torch.stack([i, j], dim=1).to(torch.float64) - 2                 # (n, 2)
    return (corner + u).float()


TOY_SAMPLERS: dict[str, Callable[[int, torch.Generator | None], Tensor]] = {
    "swissroll": sample_swissroll,
    "moons": sample_moons,
    "8gaussians": sample_8gaussians,
    "checkerboard": sample_checkerboard,
}

# The toys with a natural class label, and the names of their classes.
TOY_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "8gaussians": tuple(str(k) for k in range(8)),     # component k at angle 2 pi k / 8
    "moons": ("upper", "lower"),
}


@functools.lru_cache(maxsize=None)
def reference_stats(name: str) -> tuple[Tensor, Tensor]:
    """Mean and std (2,) float64 of a fixed draw of TOY_EPOCH_SIZE points of toy ``name``.

    The same for every seed and split, so a model's training space never depends on them.
    """
    x = TOY_SAMPLERS[name](TOY_EPOCH_SIZE, generator_for(TAG_TOY_STATS, DATASETS.index(name)))
    x = x.to(torch.float64)
    return x.mean(0), x.std(0, correction=0)


class ToyDataset(PointsDataset):
    """A toy distribution drawn on the fly, standardized by :func:`reference_stats`.

    ``get_batch`` draws fresh points from a generator seeded by (seed, step, rank,
    split); ``all_data()`` is a fixed draw of ``num_examples`` points seeded by the
    dataset's ``seed`` and split. The toys of :data:`TOY_CLASS_NAMES` have labels:
    ``labels()`` those of ``all_data()``, ``get_labelled_batch`` those of ``get_batch``.
    """

    def __init__(self, name: str, *, split: str = "train", seed: int = 0,
                 device: torch.device | str = "cpu", num_examples: int = TOY_EPOCH_SIZE):
        if name not in TOY_SAMPLERS:
            raise DataError(f"unknown toy {name!r}: expected one of {', '.join(TOY_SAMPLERS)}")
        self.sampler = TOY_SAMPLERS[name]
        self.seed = seed
        self._split_key = SPLITS.index(split)     # keeps the train and test draws apart
        generator = generator_for(TAG_TOY_ALL_DATA, seed, self._split_key)
        labels, class_names = None, TOY_CLASS_NAMES.get(name)
        if class_names is None:
            points = self.sampler(num_examples, generator)
        else:
            points, labels = self.sampler(num_examples, generator, return_labels=True)
        mean, std = reference_stats(name)
        super().__init__(name, points, split=split, device=device, mean=mean, std=std)
        if labels is not None:    # every class is drawn, but the names fix K regardless
            self.set_labels(labels, class_names)

    def get_batch(self, step: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                  world_size: int = 1) -> Tensor:
        """Fresh points (batch_size, 2) float32 in training space, seeded by (seed, step, rank)."""
        step, batch_size, seed, rank, world_size = check_batch_args(step, batch_size, seed, rank,
                                                                    world_size)
        generator = generator_for(TAG_TOY_BATCH, seed, step, rank, self._split_key)
        return self.standardize(self.sampler(batch_size, generator))

    def get_labelled_batch(self, step: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                           world_size: int = 1) -> tuple[Tensor, Tensor]:
        """``get_batch(...)``'s very points (same draws) and their labels (batch_size,) int64."""
        if self.class_names is None:
            raise DataError(f"{self.name}: this toy has no class labels; "
                            f"{', '.join(TOY_CLASS_NAMES)} have")
        step, batch_size, seed, rank, world_size = check_batch_args(step, batch_size, seed, rank,
                                                                    world_size)
        generator = generator_for(TAG_TOY_BATCH, seed, step, rank, self._split_key)
        points, labels = self.sampler(batch_size, generator, return_labels=True)
        return self.standardize(points), labels.to(self.device)

    def batch_indices(self, *args, **kwargs) -> Tensor:
        raise DataError(f"{self.name}: a toy draws fresh points every step; it has no indices")


class EightGaussiansDataset(ToyDataset):
    """``8gaussians`` with its exact density, for likelihoods and the oracle denoiser."""

    def __init__(self, **kwargs):
        super().__init__("8gaussians", **kwargs)

    def log_prob(self, x: Tensor | np.ndarray) -> Tensor:
        """Exact log density at data-space points x (N, 2); returns (N,)."""
        return eight_gaussians_log_prob(torch.as_tensor(x))

    @property
    def mixture(self):
        """The data distribution as a ``diffusion_lib.oracle.GaussianMixture`` in data space."""
        from ..oracle import GaussianMixture
        return GaussianMixture(*eight_gaussians_parameters())

    @property
    def training_mixture(self):
        """The same mixture in training space, x0 = (x - mean) / std: what the network sees."""
        return self.mixture.standardized(self.mean, self.std)


def make_toy(name: str, *, split: str = "train", seed: int = 0,
             device: torch.device | str = "cpu") -> ToyDataset:
    """The toy dataset ``name`` (one of TOY_SAMPLERS); ``8gaussians`` has ``log_prob``."""
    if name == "8gaussians":
        return EightGaussiansDataset(split=split, seed=seed, device=device)
    return ToyDataset(name, split=split, seed=seed, device=device)
