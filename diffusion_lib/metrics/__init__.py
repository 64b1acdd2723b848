"""Evaluation: how close are a model's samples to the data? Chapters 6-8.

* :mod:`.distances` -- two-sample distances: ``energy_distance`` (Szekely & Rizzo
  2013), ``mmd_rbf`` (Gretton et al. 2012), ``frechet_distance`` (Heusel et al. 2017).
* :mod:`.toys` -- ``toy_report`` for 2-D toys (chapters 6 and 8): nearest-neighbour and
  energy distances to fresh data next to their floors, and for ``8gaussians`` a KL
  divergence computed with the exact data density and the mode coverage.
* :mod:`.features` -- a small CNN classifier trained on a labelled image dataset, whose
  penultimate layer gives the features of the Frechet distance; the optional
  Inception FID through torchmetrics.
* :mod:`.images` -- ``bits_per_dim`` (Ho et al. 2020, from the variational bound of
  :mod:`diffusion_lib.losses`) and ``image_report`` (chapter 7).
* :mod:`.conditional` -- ``class_report`` for class-conditional samples (chapter 9): the
  share of each class's samples a held-out classifier puts in that class, their quality
  within the class, and ``coverage`` (Naeem et al. 2020).

Every score comes with a floor: what real data reaches at the same sample size, so a
number can be read without a table of published results.
"""

from .conditional import class_report, coverage, labelled_reference, nearest_class
from .distances import (
    energy_distance,
    frechet_distance,
    gaussian_frechet_distance,
    mmd_rbf,
    nearest_neighbour_distance,
)
from .features import (
    CLASSIFIER_FILENAME,
    ClassifierConfig,
    FeatureClassifier,
    classifier_accuracy,
    extract_features,
    inception_fid,
    load_feature_classifier,
    save_feature_classifier,
    train_feature_classifier,
)
from .images import bits_per_dim, image_report, pixel_histogram_bpd
from .toys import fitted_mixture_kl, mode_counts, mode_statistics, reference_points, toy_report

__all__ = [
    "energy_distance", "nearest_neighbour_distance", "mmd_rbf", "frechet_distance",
    "gaussian_frechet_distance",
    "toy_report", "reference_points", "fitted_mixture_kl", "mode_counts", "mode_statistics",
    "ClassifierConfig", "FeatureClassifier", "train_feature_classifier",
    "save_feature_classifier", "load_feature_classifier", "extract_features",
    "classifier_accuracy", "inception_fid", "CLASSIFIER_FILENAME",
    "bits_per_dim", "image_report", "pixel_histogram_bpd",
    "nearest_class", "coverage", "labelled_reference", "class_report",
]
