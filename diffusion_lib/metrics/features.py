"""Image features for the Frechet distance of chapter 7: a small classifier of our own.

FID (Heusel et al. 2017) compares Inception-v3 features of real and generated images.
Inception was trained on 299x299 photographs and weighs 100 MB; for 8x8 digits or
28x28 MNIST a classifier trained in seconds on the dataset itself gives features that
know what the images are about. :class:`FeatureClassifier` is a few convolutions
(~90k parameters); its penultimate layer (128 numbers) is the feature vector.
It is trained on the train split's labels (``Dataset.labels()``) and cached as
safetensors next to a run, so every evaluation of the run uses the same features.

:func:`inception_fid` is the standard FID through torchmetrics, for comparison with
papers: optional, and only with Inception weights already on disk (nothing is
downloaded).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Dataset

__all__ = ["ClassifierConfig", "FeatureClassifier", "train_feature_classifier",
           "save_feature_classifier", "load_feature_classifier", "extract_features",
           "classifier_accuracy", "inception_fid", "CLASSIFIER_FILENAME",
           "INCEPTION_WEIGHTS_FILENAME"]

CLASSIFIER_FILENAME = "feature_classifier.safetensors"   # its name in a run folder
CLASSIFIER_FORMAT = "diffusion_lib.feature_classifier/1"
INCEPTION_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"   # torch-fidelity's


@dataclass
class ClassifierConfig:
    in_channels: int = 1      # 1 for grey images, 3 for RGB
    num_classes: int = 10
    image_size: int = 8       # min(H, W): from 16 up a second stride-2 conv halves it again
    width: int = 32           # channels of the first conv; the next two have 2 * width
    feature_dim: int = 128    # the penultimate layer: the features of the Frechet distance
    dropout: float = 0.3      # before the last layer only: 1,500 digits overfit without it


class FeatureClassifier(nn.Module):
    """conv - conv/2 - conv(/2) - 2x2 average pool - linear (features) - linear (logits).

    Each conv is 3x3, followed by GroupNorm and SiLU. Input: images (B, C, H, W) in
    [-1, 1], the training space of image datasets.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        C, w = config.in_channels, config.width
        last_stride = 2 if config.image_size >= 16 else 1

        def conv(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.SiLU()]

        self.trunk = nn.Sequential(*conv(C, w, 1), *conv(w, 2 * w, 2),
                                   *conv(2 * w, 2 * w, last_stride),
                                   nn.AdaptiveAvgPool2d(2), nn.Flatten())   # (B, 8 w)
        self.hidden = nn.Linear(8 * w, config.feature_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations (B, feature_dim)."""
        return F.silu(self.hidden(self.trunk(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.dropout(self.features(x)))


@torch.no_grad()
def _batched(classifier: FeatureClassifier, fn, x: Tensor, batch_size: int) -> Tensor:
    """fn(batch) over x in eval mode on the classifier's device, concatenated on the CPU."""
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    try:
        out = [fn(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    finally:
        classifier.train(was_training)
    return torch.cat(out)


def extract_features(classifier: FeatureClassifier, x0: Tensor, batch_size: int = 500) -> Tensor:
    """Features of images x0 (N, C, H, W) in [-1, 1]: (N, feature_dim) float64 on the CPU."""
    return _batched(classifier, classifier.features, x0, batch_size).double()


def classifier_accuracy(classifier: FeatureClassifier, x0: Tensor, labels: Tensor,
                        batch_size: int = 500) -> float:
    """The share of images x0 (N, C, H, W) whose predicted class is ``labels`` (N,)."""
    predicted = _batched(classifier, lambda x: classifier(x).argmax(1), x0, batch_size)
    return float((predicted == labels.cpu()).double().mean())


def _config_for(dataset_train: Dataset, dataset_test: Dataset, labels: Tensor) -> ClassifierConfig:
    C, H, W = dataset_train.sample_shape
    test_labels = dataset_test.labels()
    top = int(labels.max())
    if test_labels is not None:
        top = max(top, int(test_labels.max()))
    return ClassifierConfig(in_channels=C, num_classes=top + 1, image_size=min(H, W))


def train_feature_classifier(dataset_train: Dataset, dataset_test: Dataset, steps: int = 500,
                             seed: int = 0, device: torch.device | str = "cpu", *,
                             batch_size: int = 64, lr: float = 3e-3,
                             cache_path: str | Path | None = None
                             ) -> tuple[FeatureClassifier, float]:
    """Train (or load from ``cache_path``) the feature classifier; return it and its test accuracy.

    AdamW with a one-cycle learning rate, label smoothing 0.1, ``steps`` batches of
    ``dataset_train.get_batch(step, batch_size, seed=seed)`` with their labels. On
    digits, 150 steps (a few seconds on a CPU) reach ~95% test accuracy, 400 ~96%.
    Deterministic given ``seed`` on the CPU; the global random state is left as it was.

    If ``cache_path`` names a file saved for the same dataset, configuration, steps
    and seed, it is loaded (no pickle: safetensors) instead of training; otherwise
    the classifier is trained and saved there. The accuracy on ``dataset_test`` is
    computed either way.

    Returns:
        (classifier in eval mode on ``device``, test accuracy in [0, 1]).
    """
    labels = dataset_train.labels()
    if labels is None:
        raise ValueError(f"{dataset_train.name} has no class labels; the feature classifier (and "
                         f"the Frechet distance on its features) needs a labelled dataset: digits, "
                         f"mnist or fashion-mnist with their label files, cifar10")
    if dataset_test.labels() is None:
        raise ValueError(f"{dataset_test.name} ({dataset_test.split}) has no class labels")
    device = torch.device(device)
    config = _config_for(dataset_train, dataset_test, labels)
    key = {"dataset": dataset_train.name, "steps": str(steps), "seed": str(seed),
           "config": json.dumps(asdict(config), sort_keys=True)}
    classifier = None
    if cache_path is not None and Path(cache_path).is_file():
        cached, metadata = load_feature_classifier(cache_path, device)
        if all(metadata.get(k) == v for k, v in key.items()):
            classifier = cached
    if classifier is None:
        classifier = _train(config, dataset_train, labels, steps, seed, device, batch_size, lr)
        if cache_path is not None:
            save_feature_classifier(classifier, cache_path, metadata=key)
    classifier.eval()
    accuracy = classifier_accuracy(classifier, dataset_test.all_data(), dataset_test.labels())
    return classifier, accuracy


def _train(config: ClassifierConfig, dataset: Dataset, labels: Tensor, steps: int, seed: int,
           device: torch.device, batch_size: int, lr: float) -> FeatureClassifier:
    forked = []                                  # CUDA devices whose random state is restored
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        classifier = FeatureClassifier(config).to(device)
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=1e-2)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr,
                                                       total_steps=max(steps, 1))
        classifier.train()
        for step in range(steps):
            indices = dataset.batch_indices(step, batch_size, seed=seed)
            x = dataset.get_batch(step, batch_size, seed=seed).to(device)     # (B, C, H, W)
            y = labels[indices.to(labels.device)].to(device)                 # (B,)
            loss = F.cross_entropy(classifier(x), y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return classifier.eval()


def save_feature_classifier(classifier: FeatureClassifier, path: str | Path,
                            metadata: dict[str, str] | None = None) -> None:
    """Save weights and configuration as one safetensors file (string metadata only)."""
    from safetensors.torch import save_file

    info = {"format": CLASSIFIER_FORMAT,
            "config": json.dumps(asdict(classifier.config), sort_keys=True), **(metadata or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=info)


def load_feature_classifier(path: str | Path, device: torch.device | str = "cpu"
                            ) -> tuple[FeatureClassifier, dict[str, str]]:
    """Load a classifier saved by :func:`save_feature_classifier`; returns it and its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        state = load_file(str(path))
    except Exception as error:   # safetensors raises its own error types for a bad header
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
    if metadata.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{path}: not a feature classifier (format {metadata.get('format')!r}, "
                         f"expected {CLASSIFIER_FORMAT!r})")
    classifier = FeatureClassifier(ClassifierConfig(**json.loads(metadata["config"])))
    classifier.load_state_dict(state)
    return classifier.to(device).eval(), metadata


# ---------------------------------------------------------------- optional: FID with Inception

def default_inception_weights() -> Path:
    """Where torch-fidelity (used by torchmetrics) keeps the FID Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


def inception_fid(samples_uint8: np.ndarray, reference_uint8: np.ndarray, *,
                  weights_path: str | Path | None = None, device: torch.device | str = "cpu",
                  batch_size: int = 100) -> float:
    """The standard FID (Heusel et al. 2017) of uint8 images (N, H, W[, C]) through torchmetrics.

    Optional: needs ``torchmetrics`` (with its image extra, torch-fidelity) and the
    Inception weights already on disk -- ``weights_path``, or torch-fidelity's
    cache file :func:`default_inception_weights`. Nothing is downloaded: without
    either this raises ImportError or FileNotFoundError saying what is missing.
    Grey images are repeated to 3 channels; torchmetrics resizes to 299x299.
    Numbers from low-resolution data are not comparable with published FIDs.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise ImportError("inception_fid needs torchmetrics with its image extra "
                          "(pip install 'torchmetrics[image]'), which is not installed; the "
                          "Frechet distance of train_feature_classifier's features needs "
                          "nothing more") from None
    path = Path(weights_path) if weights_path is not None else default_inception_weights()
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights not found at {path}; inception_fid never "
                                f"downloads: put {INCEPTION_WEIGHTS_FILENAME} there or pass "
                                f"weights_path")
    fid = FrechetInceptionDistance(feature=2048, normalize=False,
                                   feature_extractor_weights_path=str(path)).to(device)
    for images, real in [(reference_uint8, True), (samples_uint8, False)]:
        images = np.asarray(images, dtype=np.uint8)
        images = images[..., None] if images.ndim == 3 else images            # (N, H, W, C)
        u8 = torch.from_numpy(images).permute(0, 3, 1, 2)                     # (N, C, H, W)
        u8 = u8.expand(-1, 3, -1, -1) if u8.shape[1] == 1 else u8
        for i in range(0, len(u8), batch_size):
            fid.update(u8[i:i + batch_size].contiguous().to(device), real=real)
    return float(fid.compute())
