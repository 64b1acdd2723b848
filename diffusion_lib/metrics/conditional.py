"""How good are a conditional model's samples of each class? Chapter 9.

Two questions per class k, asked of the samples drawn with label k:

* **fidelity** -- do they belong to class k? The share that a *held-out* classifier
  assigns to k: for points the nearest neighbour among fresh labelled data
  (:func:`nearest_class`: a sample belongs to the class whose data lies nearest), for
  images the feature classifier of :mod:`.features`.
* **quality and diversity** -- do they look like all of class k? For points the
  nearest-neighbour ratio of :mod:`.toys` within the class (class-k samples against
  fresh class-k data, over the same distance between two data samples: ~1 at best)
  and the *coverage* of Naeem et al. 2020 (:func:`coverage`): the share of class-k data
  points that have a sample in their neighbourhood, which falls when guidance shrinks
  a class onto its most typical region. For images the Frechet distance within the
  class, over its floor.

:func:`class_report` computes these for a dataset; ``python -m diffusion_lib evaluate``
reports them for a conditional run.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..data import TOY_NAMES, Dataset, load_dataset
from .distances import _chunk_rows, as_samples, frechet_distance, nearest_neighbour_distance

__all__ = ["nearest_class", "coverage", "labelled_reference", "class_report", "COVERAGE_K"]

COVERAGE_K = 5   # Naeem et al. 2020: a data point's neighbourhood reaches its 5th neighbour


def nearest_class(samples: Tensor | np.ndarray, reference: Tensor | np.ndarray,
                  reference_labels: Tensor | np.ndarray) -> Tensor:
    """The label of each sample's nearest reference point: (N,) int64.

    The 1-nearest-neighbour classifier: sample i belongs to the class whose reference
    data lies nearest to it (Euclidean distance, ties to the first point).
    """
    x = as_samples(samples, "samples")
    ref = as_samples(reference, "reference", x.device)
    ref_labels = torch.as_tensor(np.asarray(reference_labels)).to(torch.long).cpu()
    if ref_labels.shape != (ref.shape[0],):
        raise ValueError(f"reference_labels must have shape ({ref.shape[0]},), got "
                         f"{tuple(ref_labels.shape)}")
    rows = _chunk_rows(ref.shape[0], None)
    nearest = torch.cat([torch.cdist(x[i:i + rows], ref).argmin(1).cpu()        # (rows,)
                         for i in range(0, x.shape[0], rows)])
    return ref_labels[nearest]


def coverage(samples: Tensor | np.ndarray, reference: Tensor | np.ndarray,
             k: int = COVERAGE_K) -> float:
    """Coverage (Naeem et al. 2020): the share of reference points j that have at
    least one sample within r_j, the distance from j to its k-th nearest other reference
    point.

    A second data sample of the same size scores about 1 - 2^-k = 0.97 for k = 5
    (Naeem et al. 2020, Sec. 4); samples crowded into part of the data leave the rest
    uncovered. Unlike the share of samples in a class, it sees what is *missing*.
    """
    x = as_samples(samples, "samples")
    ref = as_samples(reference, "reference", x.device)
    if ref.shape[0] <= k:
        raise ValueError(f"coverage with k = {k} needs more than {k} reference points, "
                         f"got {ref.shape[0]}")
    rows = _chunk_rows(ref.shape[0], None)
    covered = []
    for i in range(0, ref.shape[0], rows):
        block = ref[i:i + rows]                                                  # (b, D)
        radius = torch.cdist(block, ref).kthvalue(k + 1, dim=1).values           # self is 0th
        covered.append(torch.cdist(block, x).amin(1) <= radius)                  # (b,)
    return float(torch.cat(covered).double().mean())


def labelled_reference(dataset: Dataset, n: int, seed: int = 0,
                       num_sets: int = 2) -> list[tuple[Tensor, Tensor]]:
    """``num_sets`` independent labelled samples of point data: (points (n, D) float64 in
    data space, labels (n,) int64) each.

    A toy (8gaussians, moons) gives fresh draws from its test split; other points (a
    .npz with labels) disjoint random subsets of all its points, of size
    min(n, num_examples // num_sets).
    """
    if dataset.labels() is None:
        raise ValueError(f"{dataset.name} has no class labels")
    if dataset.name in TOY_NAMES:
        test = load_dataset(dataset.name, split="test", seed=seed)
        sets = [test.get_labelled_batch(step, n, seed=seed) for step in range(num_sets)]
        return [(as_samples(test.to_output(x)), y.cpu()) for x, y in sets]
    size = min(n, dataset.num_examples // num_sets)
    order = torch.randperm(dataset.num_examples, generator=torch.Generator().manual_seed(seed))
    points = as_samples(dataset.to_output(dataset.all_data()))
    labels = dataset.labels().cpu()
    return [(points[order[i * size:(i + 1) * size]], labels[order[i * size:(i + 1) * size]])
            for i in range(num_sets)]


def class_report(samples: Tensor | np.ndarray, labels: Tensor | np.ndarray, dataset: Dataset,
                 seed: int = 0, *, classifier=None, dataset_test: Dataset | None = None
                 ) -> dict[str, object]:
    """Per-class scores of samples (data space) drawn with the given labels (N,).

    Points: reference data from :func:`labelled_reference` (two independent sets the size
    of the samples). Images: ``classifier`` (a :class:`.features.FeatureClassifier`)
    assigns the classes; ``dataset_test`` gives the class's reference features and
    ``dataset`` the floor's.

    Returns a dict:
        class_names: the classes, in label order;
        class_hit_rate: the mean over the sampled classes of the share of their samples
            assigned to the requested class; per_class_hit_rate: one per class (NaN for a
            class not sampled);
      for points:
        per_class_nn_ratio: nearest-neighbour distance of the class's samples to fresh
            class data, over the data-vs-data floor (~1 at best);
        per_class_coverage: :func:`coverage` of fresh class data by the class's samples;
      for images:
        per_class_frechet_ratio: Frechet distance of the class's samples to the class's
            test images, over that of as many of its training images.
    """
    labels = torch.as_tensor(np.asarray(labels)).to(torch.long).cpu()
    K = dataset.num_classes
    if K is None:
        raise ValueError(f"{dataset.name} has no class labels")
    sampled = sorted(set(labels.tolist()))
    report: dict[str, object] = {"class_names": list(dataset.class_names)}
    hit = [float("nan")] * K
    if dataset.kind == "points":
        x = as_samples(samples, "samples")
        (ref, ref_y), (second, second_y) = labelled_reference(dataset, x.shape[0], seed)
        predicted = nearest_class(x, ref, ref_y)
        ratio, cover = [float("nan")] * K, [float("nan")] * K
        for k in sampled:
            mine, ref_k, second_k = x[labels == k], ref[ref_y == k], second[second_y == k]
            hit[k] = float((predicted[labels == k] == k).double().mean())
            n = min(len(mine), len(ref_k), len(second_k))
            if n >= 2:
                floor = nearest_neighbour_distance(second_k[:n], ref_k[:n])
                ratio[k] = nearest_neighbour_distance(mine[:n], ref_k[:n]) / floor
            if n > COVERAGE_K:
                cover[k] = coverage(mine[:n], ref_k[:n])
        report.update(per_class_nn_ratio=ratio, per_class_coverage=cover)
    else:
        from .features import _batched, extract_features
        if classifier is None or dataset_test is None:
            raise ValueError("class_report of images needs the feature classifier and the "
                             "test split")
        x = dataset_test.from_output(np.asarray(samples)).cpu()                 # (N, C, H, W)
        predicted = _batched(classifier, lambda b: classifier(b).argmax(1), x, 500)
        test_x, test_y = dataset_test.all_data().cpu(), dataset_test.labels().cpu()
        train_x, train_y = dataset.all_data().cpu(), dataset.labels().cpu()
        fd = [float("nan")] * K
        for k in sampled:
            hit[k] = float((predicted[labels == k] == k).double().mean())
            mine = x[labels == k]
            test_k, train_k = test_x[test_y == k], train_x[train_y == k][:len(mine)]
            if min(len(mine), len(test_k), len(train_k)) >= 2:
                reference = extract_features(classifier, test_k)
                floor = frechet_distance(extract_features(classifier, train_k), reference)
                fd[k] = frechet_distance(extract_features(classifier, mine), reference) / floor
        report["per_class_frechet_ratio"] = fd
    report["class_hit_rate"] = float(np.mean([hit[k] for k in sampled]))
    report["per_class_hit_rate"] = hit
    return report
