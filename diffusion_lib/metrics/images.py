"""How good are generated images? Chapter 7.

Two numbers, each next to a floor that real data reaches:

* the Frechet distance (Heusel et al. 2017) between the features of generated and
  test images, the features coming from a small classifier trained on the dataset
  (:mod:`.features`); its floor is the distance between an equally large subset of
  the training images and the test images;
* the negative log-likelihood bound of the model on test images in bits per
  dimension (Ho et al. 2020, Eq. 5 and 13, Table 2), from
  :func:`diffusion_lib.losses.variational_bound`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import Dataset
from ..losses import Model, variational_bound
from ..reverse import PredictionType, VarianceType
from ..schedules import NoiseSchedule
from .distances import frechet_distance
from .features import (
    FeatureClassifier,
    classifier_accuracy,
    extract_features,
    train_feature_classifier,
)

__all__ = ["bits_per_dim", "image_report", "pixel_histogram_bpd"]


def bits_per_dim(model: Model, schedule: NoiseSchedule, x0_test: Tensor, batch_size: int = 64,
                 generator: torch.Generator | None = None,
                 prediction_type: PredictionType = "epsilon", *,
                 variance_type: VarianceType = "fixed_small", clip_denoised: bool = False,
                 progress: bool = False) -> tuple[float, float]:
    """The variational bound on -log2 p(x_0) per dimension, averaged over test images.

    Ho et al. (2020) report it on CIFAR-10's test set (Table 2: <= 3.70 bits/dim,
    Eq. 5 and 13). Per image, :func:`diffusion_lib.losses.variational_bound` sums the
    prior term, T - 1 KL terms and the discrete decoder, each from one draw of x_t:
    an unbiased estimate of the bound that costs T network calls per batch.

    Args:
        model: the denoiser ``model(x_t, t)``; an nn.Module is evaluated in eval mode
            and put back in its former mode.
        x0_test: 8-bit images scaled to [-1, 1], (N, C, H, W), on the model's device
            (``generator``, if given, on the same device).
        batch_size: images per call of the bound.
    Returns:
        (mean bits/dim over the N images, its standard error std / sqrt(N); nan if N = 1).
    """
    if x0_test.ndim < 2 or len(x0_test) == 0:
        raise ValueError(f"x0_test must be a non-empty batch (N, ...), got {tuple(x0_test.shape)}")
    module = model if isinstance(model, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    totals = []
    try:
        starts = range(0, len(x0_test), batch_size)
        for start in tqdm(starts, desc="bits/dim", disable=not progress):
            bound = variational_bound(schedule, model, x0_test[start:start + batch_size],
                                      prediction_type, variance_type, clip_denoised, generator)
            totals.append(bound.total_bpd.double().cpu())                   # (B,)
    finally:
        if module is not None:
            module.train(was_training)
    total = torch.cat(totals)                                               # (N,)
    se = float(total.std() / math.sqrt(len(total))) if len(total) > 1 else float("nan")
    return float(total.mean()), se


def pixel_histogram_bpd(train_uint8: np.ndarray, test_uint8: np.ndarray,
                        alpha: float = 1.0) -> float:
    """Bits/dim of test images under a baseline with no model of shapes at all (chapter 7).

    Each pixel position d gets its own categorical distribution over the 256 grey levels,
    the training images' histogram at d with ``alpha`` added to every count (Laplace
    smoothing, so no level has probability 0); the pixels are independent. The result is
    -(1 / (M D)) sum_i sum_d log2 p_d(u_id) over the M test images of D values each: the
    number to beat between the uniform 8 bits/dim and a model's bound.

    Args:
        train_uint8, test_uint8: uint8 images of the same shape per image, (N, ...).
    """
    train = np.asarray(train_uint8)
    test = np.asarray(test_uint8)
    if train.dtype != np.uint8 or test.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {train.dtype} and {test.dtype}")
    if train.ndim < 2 or test.ndim < 2 or train.shape[1:] != test.shape[1:] or not len(test):
        raise ValueError(f"expected two sets of images of one shape, (N, ...) and (M, ...), "
                         f"got {train.shape} and {test.shape}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    N, M = len(train), len(test)
    tr = train.reshape(N, -1).astype(np.int64)                              # (N, D)
    te = test.reshape(M, -1).astype(np.int64)                               # (M, D)
    D = tr.shape[1]
    offsets = np.arange(D) * 256
    counts = np.bincount((tr + offsets).ravel(), minlength=D * 256).reshape(D, 256)
    log2_p = np.log2(counts + alpha) - np.log2(N + 256 * alpha)             # (D, 256)
    return float(-log2_p[np.arange(D), te].mean())


def image_report(samples_uint8: np.ndarray, dataset_train: Dataset, dataset_test: Dataset,
                 model: Model | None = None, schedule: NoiseSchedule | None = None, *,
                 classifier: FeatureClassifier | None = None, classifier_steps: int = 500,
                 classifier_path: str | Path | None = None, seed: int = 0,
                 device: torch.device | str = "cpu", bpd_examples: int = 256,
                 bpd_batch_size: int = 64, prediction_type: PredictionType = "epsilon",
                 variance_type: VarianceType = "fixed_small") -> dict[str, float]:
    """Scores of N generated uint8 images (N, H, W, C) (or (N, H, W)) against a dataset.

    The Frechet distance is computed when the classifier can be had: passed in, or
    trained on ``dataset_train``'s labels (``classifier_steps`` steps, cached at
    ``classifier_path``, see :func:`.features.train_feature_classifier`). For data
    without labels (folders, arrays) its three entries are absent.

    Returns a dict of numbers:
        num_samples: N;
        frechet_distance: FD(features of the samples, features of all test images);
        frechet_floor: FD(features of min(N, N_train) random training images, the same
            test features): what real data scores at this sample size;
        frechet_ratio: frechet_distance / frechet_floor (~1 at best, larger is worse);
        classifier_accuracy: the classifier's accuracy on the test images;
      and if ``model`` (with its ``schedule``) is given:
        bits_per_dim, bits_per_dim_se: :func:`bits_per_dim` on ``bpd_examples`` random
            test images, with a generator seeded by ``seed`` on ``device``.
    """
    device = torch.device(device)
    x_samples = dataset_test.from_output(np.asarray(samples_uint8))         # (N, C, H, W)
    N = x_samples.shape[0]
    report: dict[str, float] = {"num_samples": N}
    if classifier is None and dataset_train.labels() is not None:
        classifier, accuracy = train_feature_classifier(
            dataset_train, dataset_test, classifier_steps, seed, device, cache_path=classifier_path)
    elif classifier is not None and dataset_test.labels() is not None:
        accuracy = classifier_accuracy(classifier, dataset_test.all_data(), dataset_test.labels())
    else:
        accuracy = float("nan")
    if classifier is not None:
        # 1. features of the samples, of the test set, and of a training subset of size N
        test_features = extract_features(classifier, dataset_test.all_data())
        train_subset = dataset_train.get_batch(0, min(N, dataset_train.num_examples), seed=seed)
        distance = frechet_distance(extract_features(classifier, x_samples), test_features)
        floor = frechet_distance(extract_features(classifier, train_subset), test_features)
        report.update(frechet_distance=distance, frechet_floor=floor,
                      frechet_ratio=distance / floor if floor > 0 else float("nan"),
                      classifier_accuracy=accuracy)
    if model is not None:
        # 2. the likelihood bound on random test images
        if schedule is None:
            raise ValueError("bits per dim needs the model's noise schedule: pass schedule=")
        num = min(bpd_examples, dataset_test.num_examples)
        x0 = dataset_test.get_batch(0, num, seed=seed).to(device)
        generator = torch.Generator(device).manual_seed(seed)
        mean, se = bits_per_dim(model, schedule, x0, bpd_batch_size, generator, prediction_type,
                                variance_type=variance_type)
        report.update(bits_per_dim=mean, bits_per_dim_se=se)
    return report
