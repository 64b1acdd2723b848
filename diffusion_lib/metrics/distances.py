"""Distances between two samples: energy distance, MMD, and the Frechet distance.

* Energy distance (Szekely & Rizzo 2013, "Energy statistics: a class of statistics
  based on distances"): E(X, Y) = 2 E|X - Y| - E|X - X'| - E|Y - Y'| >= 0, zero exactly
  when X and Y have the same law. In one dimension it equals 2 * integral (F - G)^2 dx,
  F and G the two distribution functions. ``toy_report`` (chapters 6 and 8) scores
  toy samples with it.
* Nearest-neighbour (Chamfer) distance: the mean distance from each point of one
  sample to its nearest neighbour in the other, averaged over both directions. The
  first direction grows when samples fall off the data (blur, outliers), the second
  when data regions get no samples (missing modes). It is an average over 2N points,
  so for two samples of one law it concentrates tightly around its mean: a steadier
  yardstick against the data-vs-data floor than the energy distance, whose null
  distribution is a weighted chi-square with a few dominant terms. ``toy_report``
  (chapters 6 and 8) reports it first.
* MMD with a Gaussian kernel (Gretton et al. 2012, "A kernel two-sample test"), the
  unbiased estimate MMD_u^2.
* Frechet distance between the Gaussians fitted to two sets of features (Heusel et
  al. 2017, "GANs trained by a two time-scale update rule...", the FID formula):
  |m1 - m2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the squared 2-Wasserstein distance
  between the two Gaussians. Chapter 7 applies it to the features of a small classifier
  (:mod:`.features`).

Samples are (N, D) tensors or arrays; everything is computed in float64 on the
first sample's device, pairwise distances in row chunks so that 10k x 10k points fit
in a few tens of MB.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["energy_distance", "nearest_neighbour_distance", "mmd_rbf", "frechet_distance",
           "gaussian_frechet_distance"]

CHUNK_ELEMENTS = 2**22   # entries of one block of the distance matrix: 32 MB of float64


def as_samples(x: Tensor | np.ndarray, name: str = "x",
               device: torch.device | None = None) -> Tensor:
    """x as a float64 (N, D) tensor; 1-D input is read as N points of dimension 1."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    x = x.detach().to(device=device, dtype=torch.float64)
    if x.ndim == 1:
        x = x[:, None]                                                     # (N, 1)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty sample of shape (N, D), got "
                         f"{tuple(x.shape)}")
    return x


def _chunk_rows(num_columns: int, chunk_size: int | None) -> int:
    return chunk_size or max(1, CHUNK_ELEMENTS // max(num_columns, 1))


def _pairwise_sum(a: Tensor, b: Tensor, fn, chunk_size: int | None = None) -> Tensor:
    """sum_{i,j} fn(|a_i - b_j|^2) over all pairs, one block of rows of a at a time.

    |a|^2 + |b|^2 - 2 a.b is one matrix product per block; shifting both samples by a's
    mean first keeps its cancellation error small (distances do not change).
    """
    shift = a.mean(0)
    a, b = a - shift, b - shift
    b_sq = (b * b).sum(1)                                                  # (M,)
    total = a.new_zeros(())
    rows = _chunk_rows(b.shape[0], chunk_size)
    for start in range(0, a.shape[0], rows):
        block = a[start:start + rows]                                      # (n, D)
        sq = (block * block).sum(1)[:, None] + b_sq[None, :] - 2 * block @ b.T   # (n, M)
        total = total + fn(sq.clamp_min_(0)).sum()
    return total


def energy_distance(x: Tensor | np.ndarray, y: Tensor | np.ndarray, *, unbiased: bool = True,
                    chunk_size: int | None = None) -> float:
    """The (squared) energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| of two samples.

    Szekely & Rizzo (2013). Each expectation is an average of Euclidean distances:
    over all N M pairs for E|X - Y|, and over the N (N - 1) pairs i != j for E|X - X'|
    (the U-statistic, ``unbiased=True``: its mean is the population distance, so it is
    ~0, possibly slightly negative, for two samples of one law). With
    ``unbiased=False`` the within-sample averages run over all N^2 pairs (the
    V-statistic, >= 0); in one dimension it equals 2 * integral (F_N - G_M)^2 dx
    exactly, F_N and G_M the empirical distribution functions.

    Args:
        x: (N, D) sample; y: (M, D) sample. N, M >= 2 when unbiased.
        chunk_size: rows per block of the distance matrix (default: 2^22 / M).
    Returns:
        The distance as a float, in the units of the data (a distance, not squared).
    """
    x = as_samples(x, "x")
    y = as_samples(y, "y", x.device)
    xy, xx, yy = _energy_sums(x, y, chunk_size)
    return _energy_from_sums(xy, xx, yy, x.shape[0], y.shape[0], unbiased)


def _energy_sums(x: Tensor, y: Tensor, chunk_size: int | None = None) -> tuple[float, float, float]:
    """sum |x_i - y_j|, sum |x_i - x_j|, sum |y_i - y_j| over all ordered pairs."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    pairs = [(x, y), (x, x), (y, y)]
    return tuple(float(_pairwise_sum(a, b, torch.sqrt, chunk_size)) for a, b in pairs)


def _energy_from_sums(xy: float, xx: float, yy: float, N: int, M: int, unbiased: bool) -> float:
    if unbiased:
        if N < 2 or M < 2:
            raise ValueError(f"the unbiased energy distance needs at least 2 points per sample, "
                             f"got {N} and {M}")
        return 2 * xy / (N * M) - xx / (N * (N - 1)) - yy / (M * (M - 1))
    return 2 * xy / (N * M) - xx / N**2 - yy / M**2


def _nearest_distances(a: Tensor, b: Tensor, chunk_size: int | None = None) -> Tensor:
    """min_j |a_i - b_j| for every row i of a: (N,), one block of rows at a time."""
    shift = a.mean(0)
    a, b = a - shift, b - shift
    rows = _chunk_rows(b.shape[0], chunk_size)
    return torch.cat([torch.cdist(a[start:start + rows], b).amin(1)          # (rows,)
                      for start in range(0, a.shape[0], rows)])


def nearest_neighbour_distance(x: Tensor | np.ndarray, y: Tensor | np.ndarray, *,
                               chunk_size: int | None = None) -> float:
    """Symmetric mean nearest-neighbour (Chamfer) distance between two samples.

        d(X, Y) = 1/2 [ mean_i min_j |x_i - y_j| + mean_j min_i |y_j - x_i| ]

    Zero only when every point of each sample has a copy in the other; for two
    independent samples of one law it is positive and shrinks with the sample size (as
    N^(-1/D)), so read it against the same distance between two data samples of the
    same sizes (the floor of :func:`~diffusion_lib.metrics.toy_report`).

    Args:
        x: (N, D) sample; y: (M, D) sample.
    Returns:
        The distance as a float, in the units of the data.
    """
    x = as_samples(x, "x")
    y = as_samples(y, "y", x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    forward = _nearest_distances(x, y, chunk_size).mean()
    backward = _nearest_distances(y, x, chunk_size).mean()
    return float((forward + backward) / 2)


def median_distance(x: Tensor, max_points: int = 1000) -> float:
    """The median of the distances between distinct points among the first ``max_points``."""
    x = x[:max_points]
    d = torch.cdist(x, x)                                                  # (n, n)
    upper = torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)
    return float(d[upper].median())


def mmd_rbf(x: Tensor | np.ndarray, y: Tensor | np.ndarray, *, bandwidth: float | None = None,
            chunk_size: int | None = None) -> float:
    """Unbiased squared MMD with the kernel k(a, b) = exp(-|a - b|^2 / (2 h^2)).

    MMD_u^2 of Gretton et al. (2012): the mean of k over the pairs i != j within x,
    plus the same within y, minus twice the mean of k over all pairs (x_i, y_j).
    ~0 for two samples of one law.

    Args:
        x: (N, D), y: (M, D), N, M >= 2.
        bandwidth: h; default the median distance between points of the pooled
            sample (its first 500 + 500 points), the "median heuristic".
    """
    x = as_samples(x, "x")
    y = as_samples(y, "y", x.device)
    N, M = x.shape[0], y.shape[0]
    if N < 2 or M < 2:
        raise ValueError(f"mmd_rbf needs at least 2 points per sample, got {N} and {M}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    h = bandwidth if bandwidth is not None else median_distance(torch.cat([x[:500], y[:500]]))
    if not h > 0:
        raise ValueError(f"bandwidth must be positive, got {h}")

    def kernel(sq: Tensor) -> Tensor:
        return torch.exp(-sq / (2 * h * h))

    kxy = float(_pairwise_sum(x, y, kernel, chunk_size))
    kxx = float(_pairwise_sum(x, x, kernel, chunk_size)) - N               # drop k(x_i, x_i) = 1
    kyy = float(_pairwise_sum(y, y, kernel, chunk_size)) - M
    return kxx / (N * (N - 1)) + kyy / (M * (M - 1)) - 2 * kxy / (N * M)


def _sqrtm_psd(c: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def _cpu_float64(a: Tensor | np.ndarray) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def gaussian_frechet_distance(mean1: Tensor | np.ndarray, cov1: Tensor | np.ndarray,
                              mean2: Tensor | np.ndarray, cov2: Tensor | np.ndarray) -> float:
    """|m1 - m2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)): the squared 2-Wasserstein distance
    between N(m1, S1) and N(m2, S2), the FID formula of Heusel et al. (2017).

    Tr (S1 S2)^(1/2) is computed as Tr (S1^(1/2) S2 S1^(1/2))^(1/2) -- the two matrices
    have the same eigenvalues, and the second is symmetric -- with eigen-decompositions
    in float64, so no complex parts or ill-conditioned square roots arise.
    """
    m1, m2, s1, s2 = (_cpu_float64(a) for a in (mean1, mean2, cov1, cov2))
    D = m1.shape[0]
    if m2.shape != (D,) or s1.shape != (D, D) or s2.shape != (D, D):
        raise ValueError(f"expected means (D,) and covariances (D, D), got {tuple(m1.shape)}, "
                         f"{tuple(s1.shape)}, {tuple(m2.shape)}, {tuple(s2.shape)}")
    root1 = _sqrtm_psd((s1 + s1.T) / 2)
    inner = root1 @ s2 @ root1                                             # (D, D) symmetric PSD
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    fd = ((m1 - m2) ** 2).sum() + s1.trace() + s2.trace() - 2 * trace_sqrt
    return max(float(fd), 0.0)


def frechet_distance(feats_a: Tensor | np.ndarray, feats_b: Tensor | np.ndarray) -> float:
    """The Frechet distance between the Gaussians fitted to two sets of features.

    Means and covariances (with the 1 / (N - 1) normalisation, as in FID code) of
    feats_a (N, F) and feats_b (M, F), then :func:`gaussian_frechet_distance`. Heusel
    et al. (2017) use Inception features (FID); chapter 7 uses a small classifier's.
    The estimate is biased upwards for small N: compare it with a floor computed on
    real data of the same size.
    """
    a = as_samples(feats_a, "feats_a", torch.device("cpu"))
    b = as_samples(feats_b, "feats_b", torch.device("cpu"))
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"frechet_distance needs at least 2 feature vectors per set, got "
                         f"{a.shape[0]} and {b.shape[0]}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features must have the same dimension, got {a.shape[1]} and "
                         f"{b.shape[1]}")
    return gaussian_frechet_distance(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1),
                                     b.mean(0), torch.cov(b.T).reshape(b.shape[1], -1))
