"""How close are samples of a 2-D toy to the data? Chapters 6 and 8.

:func:`toy_report` compares N model samples with N fresh data points by two distances
(:mod:`.distances`), nearest-neighbour and energy, each next to the distance between
two data samples of size N -- the floor a perfect model would reach at this size. For
``8gaussians``, whose density is known exactly, it also reports a KL divergence and
how many of the eight modes the samples cover.

Fresh data never comes from the training stream: a toy's points are drawn from its
``test`` split (``get_batch`` of ``load_dataset(name, split="test")``), whose random
stream is apart from the training split's.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..data import TOY_NAMES, Dataset, load_dataset
from ..oracle import GaussianMixture
from .distances import _energy_from_sums, _energy_sums, as_samples, nearest_neighbour_distance

__all__ = ["toy_report", "reference_points", "fitted_mixture_kl", "near_modes", "mode_counts",
           "mode_statistics", "KL_POINTS", "MODE_STDS", "MODE_MIN_SHARE"]

KL_POINTS = 100_000     # Monte Carlo points of the KL: standard error ~5e-4 nats for data
MODE_STDS = 3.0         # a sample belongs to a mode within 3 std of its centre (Mahalanobis)
MODE_MIN_SHARE = 0.25   # a mode is covered with >= 1/4 of its expected share of samples


def reference_points(dataset: Dataset | str, n: int, seed: int = 0,
                     num_sets: int = 1) -> list[Tensor]:
    """``num_sets`` independent samples of n data points each, float64 (n, D), data space.

    For a toy, fresh draws: batches 0, 1, ... of seed ``seed`` of its test split. For
    other point data (a .npy file), disjoint random subsets of ``all_data()``, of size
    min(n, num_examples // num_sets).
    """
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, split="test", seed=seed)
    if dataset.name in TOY_NAMES:
        test = load_dataset(dataset.name, split="test", seed=seed)
        return [as_samples(test.to_output(test.get_batch(step, n, seed=seed)))
                for step in range(num_sets)]
    if dataset.kind != "points":
        raise ValueError(f"{dataset.name}: toy_report needs point data, not {dataset.kind}")
    size = min(n, dataset.num_examples // num_sets)
    if size < 2:
        raise ValueError(f"{dataset.name}: {dataset.num_examples} points are too few for "
                         f"{num_sets} reference samples")
    order = torch.randperm(dataset.num_examples, generator=torch.Generator().manual_seed(seed))
    points = as_samples(dataset.to_output(dataset.all_data()))
    return [points[order[i * size:(i + 1) * size]] for i in range(num_sets)]


def near_modes(samples: Tensor, mixture: GaussianMixture, num_stds: float = MODE_STDS) -> Tensor:
    """Whether sample i lies within ``num_stds`` of component k's mean: (N, K) bool.

    "Within r std" is the Mahalanobis distance sqrt((x - m_k)^T S_k^-1 (x - m_k)) <= r:
    for isotropic components, a disc of radius r * std around the centre.
    """
    x = as_samples(samples, "samples", torch.device("cpu"))
    precisions = torch.linalg.inv(mixture.covariances)                      # (K, D, D)
    inside = torch.zeros(x.shape[0], mixture.num_components, dtype=torch.bool)
    block = 65536                                                          # rows per (n, K, D)
    for start in range(0, x.shape[0], block):
        diff = x[start:start + block, None, :] - mixture.means[None]        # (n, K, D)
        maha_sq = torch.einsum("nkd,kde,nke->nk", diff, precisions, diff)   # (n, K)
        inside[start:start + block] = maha_sq <= num_stds**2
    return inside


def mode_counts(samples: Tensor, mixture: GaussianMixture, num_stds: float = MODE_STDS) -> Tensor:
    """How many samples lie within ``num_stds`` of each component's mean, (K,) int64."""
    return near_modes(samples, mixture, num_stds).sum(0)


def mode_statistics(samples: Tensor, mixture: GaussianMixture, num_stds: float = MODE_STDS,
                    min_share: float = MODE_MIN_SHARE) -> dict[str, float]:
    """Mode coverage and the share of samples near some mode.

    Under the data, a point falls within r std of component k with probability
    w_k P(chi^2_D <= r^2) (= w_k (1 - e^{-r^2/2}) in 2-D, 0.124 for the eight
    Gaussians at r = 3). Mode k is *covered* if it receives at least ``min_share``
    times that expected share of the N samples.

    Returns:
        mode_coverage: the fraction of the K modes covered (1.0 for data; 0.5 if the
            samples come from only half of them);
        in_mode_fraction: the share of samples within r std of some mode (0.989 for
            data in 2-D at r = 3).
    """
    inside = near_modes(samples, mixture, num_stds)                         # (N, K)
    counts, near_any = inside.sum(0), inside.any(1)
    D = mixture.dim
    p_inside = float(torch.special.gammainc(torch.tensor(D / 2), torch.tensor(num_stds**2 / 2)))
    expected = len(near_any) * mixture.weights * p_inside                   # (K,)
    covered = counts >= min_share * expected
    return {"mode_coverage": float(covered.double().mean()),
            "in_mode_fraction": float(near_any.double().mean())}


def fitted_mixture_kl(samples: Tensor, mixture: GaussianMixture, *, num_points: int = KL_POINTS,
                      seed: int = 0) -> tuple[float, float]:
    """KL(p_data || q_model) in nats, and its Monte Carlo standard error.

    Definition: q_model is the Gaussian mixture with as many components as the data's
    (8 for ``8gaussians``), full covariances, fitted to the samples by EM
    (scikit-learn ``GaussianMixture``, ``random_state=seed``, the best of 3 EM runs
    from k-means initialisations). Then

        KL(p || q) = E_{x ~ p}[log p(x) - log q(x)]

    is estimated with ``num_points`` exact draws x_i ~ p_data: both log-densities are
    exact, only the expectation is Monte Carlo, with standard error
    std(log p - log q) / sqrt(num_points). The same seed gives the same x_i, so two
    calls compare models on common points. The KL is forward ("mode-covering"): a
    model that misses a mode is punished heavily, one that puts a little mass
    between the modes only mildly. Even exact samples give a small positive value,
    the error of fitting the mixture to N points, about (number of parameters) / (2N)
    nats: 47 / (2N) for eight full-covariance components in 2-D, 0.008 at N = 3,000.
    Compare with the same for a fresh data sample of size N (``kl_floor`` of
    :func:`toy_report`).
    """
    from sklearn.mixture import GaussianMixture as SklearnMixture  # imported when used

    x = as_samples(samples, "samples", torch.device("cpu"))
    K = mixture.num_components
    if x.shape[0] < 2 * K:
        raise ValueError(f"fitting a {K}-component mixture needs at least {2 * K} samples, "
                         f"got {x.shape[0]}")
    q = SklearnMixture(n_components=K, covariance_type="full", n_init=3, random_state=seed)
    q.fit(x.numpy())
    points = mixture.sample(num_points, generator=torch.Generator().manual_seed(seed))  # (P, D)
    log_ratio = mixture.log_prob(points).numpy() - q.score_samples(points.numpy())     # (P,)
    return float(log_ratio.mean()), float(log_ratio.std(ddof=1) / math.sqrt(num_points))


def toy_report(samples: Tensor | np.ndarray, dataset: Dataset | str, seed: int = 0, *,
               kl_points: int = KL_POINTS) -> dict[str, float]:
    """Scores of N model samples (N, D) in data space against a toy's distribution.

    Two two-sample distances, each next to its *floor*, the value two data samples of
    the same size reach (a perfect model's), and their ratio (~1 for a perfect model,
    larger is worse):

    * the nearest-neighbour distance (:func:`~.distances.nearest_neighbour_distance`)
      between the samples and N fresh data points; its floor is the same distance
      between a second fresh sample and those points. Both are averages over 2N
      points, so the ratio is steady: within a few percent of 1 for exact samples at
      N = 2,000-5,000, and 1.4 for data blurred by noise of 10% of its std (swiss
      roll, measured). This is the headline: ``nn_ratio``.
    * the energy distance (V-statistic) to the same fresh points; its floor is its
      mean for two samples of one law, E|X - X'| (1/N + 1/M), computed from the
      formula. Its ratio scatters widely for a perfect model (0.3 to 3: the
      statistic's own noise at this N), so it shows gross failures only.

    Fresh data come from the toy's test split (for a .npy, disjoint subsets of its
    points, shrinking N when the file is small). Non-finite samples (a diverged
    sampler) are dropped and counted.

    Returns a dict of numbers:
        num_samples, num_nonfinite: the finite samples used, and those dropped;
        nn_distance, nn_floor, nn_ratio: the nearest-neighbour distance, its floor, and
            their ratio;
        energy_distance, energy_floor, energy_ratio: the same for the energy distance;
        energy_distance_unbiased: the U-statistic of d(samples, data), an unbiased
            estimate of the population distance (~0, possibly < 0, for a perfect model);
      and for a dataset with a ``mixture`` (``8gaussians``):
        kl, kl_se: KL(p_data || q_model) in nats and its standard error
            (:func:`fitted_mixture_kl`);
        kl_floor, kl_floor_se: the same for a fresh data sample of size N (these four
            need scikit-learn; without it they are left out, with a warning);
        mode_coverage, in_mode_fraction: see :func:`mode_statistics`.
    """
    x = as_samples(samples, "samples", torch.device("cpu"))
    finite = torch.isfinite(x).all(1)
    x = x[finite]
    N = x.shape[0]
    if N < 2:
        raise ValueError(f"toy_report needs at least 2 finite samples, got {N}")
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, split="test", seed=seed)
    mixture = getattr(dataset, "mixture", None)
    # 1. fresh data: the reference, and a second sample for the floors
    reference, second = reference_points(dataset, N, seed, num_sets=2)
    if reference.shape[0] < N:                     # point data too small: shrink to match
        x = x[torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:len(reference)]]
    n, m = x.shape[0], reference.shape[0]
    # 2. nearest-neighbour distance and its floor
    nn, nn_floor = nearest_neighbour_distance(x, reference), nearest_neighbour_distance(second,
                                                                                     reference)
    # 3. energy distance and its floor, Szekely & Rizzo (2013)
    xy, xx, yy = _energy_sums(x, reference)
    distance = _energy_from_sums(xy, xx, yy, n, m, unbiased=False)
    floor = yy / (m * (m - 1)) * (1 / n + 1 / m)                           # E|X - X'| (1/N + 1/M)
    report = {"num_samples": n, "num_nonfinite": int((~finite).sum()),
              "nn_distance": nn, "nn_floor": nn_floor,
              "nn_ratio": nn / nn_floor if nn_floor > 0 else float("nan"),
              "energy_distance": distance, "energy_floor": floor,
              "energy_ratio": distance / floor if floor > 0 else float("nan"),
              "energy_distance_unbiased": _energy_from_sums(xy, xx, yy, n, m, unbiased=True)}
    # 4. exact-density scores for a Gaussian-mixture toy
    if mixture is not None:
        report.update(mode_statistics(x, mixture))
    if mixture is not None:
        kl, kl_se = fitted_mixture_kl(x, mixture, num_points=kl_points, seed=seed)
        kl_floor, kl_floor_se = fitted_mixture_kl(second, mixture, num_points=kl_points,
                                                  seed=seed)
        report.update(kl=kl, kl_se=kl_se, kl_floor=kl_floor, kl_floor_se=kl_floor_se)
    return report

