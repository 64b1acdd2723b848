"""Datasets for diffusion training: one interface over 2-D toy points and 8-bit images.

Every dataset is a :class:`Dataset`. Its batches are a pure function of
``(step, batch_size, seed, rank, world_size)`` -- no iterator state -- so a run resumed
at step k draws exactly the batches it would have drawn, and each process of a
multi-process run reads its own shard.

Training space, what the network sees as x0:

* images: x0 = u / 127.5 - 1 in [-1, 1] from uint8 u, shape (B, C, H, W): the DDPM
  convention (Ho et al. 2020, Sec. 3.3), which the discrete decoder of Eq. (13) and the
  bits-per-dim of chapter 7 assume;
* points: x0 = (x - mean) / std per dimension, shape (B, D), with mean and std
  computed once on the data and stored on the dataset.

``to_output`` maps training space back to the data's own space (float32 points,
uint8 (N, H, W, C) images) and ``from_output`` goes the other way.

Built-in names (:data:`DATASETS`): the toys ``swissroll``, ``moons``, ``8gaussians``,
``checkerboard`` (:mod:`.toys`); the images ``digits``, ``mnist``, ``fashion-mnist``,
``cifar10`` (:mod:`.images`). Anything else is read as a path: a ``.npy``/``.npz`` file
(:mod:`.arrays`) or a folder of images (:func:`.images.load_image_folder`).

Class labels, for class-conditional models (chapter 9): ``labels()`` gives the class
0..K-1 of every example where the data has one -- the digits, MNIST, Fashion-MNIST and
CIFAR-10 classes, the sub-folder of an image folder with one sub-folder per class, the
``y`` array of a ``.npz``, the component of ``8gaussians`` and the half circle of
``moons`` -- and ``class_names`` their names. ``get_labelled_batch`` returns a batch
with its labels.
"""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["DATASETS", "TOY_NAMES", "IMAGE_NAMES", "DataError", "Dataset", "PointsDataset",
           "load_dataset", "epoch_indices", "generator_for", "check_labels"]

TOY_NAMES: tuple[str, ...] = ("swissroll", "moons", "8gaussians", "checkerboard")
IMAGE_NAMES: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10")
DATASETS: tuple[str, ...] = TOY_NAMES + IMAGE_NAMES
SPLITS: tuple[str, ...] = ("train", "test")
DEFAULT_DATA_DIR = "data"    # where mnist / fashion-mnist / cifar10 files are looked for

LABELS_HINT = ("labelled data is a built-in image set, 8gaussians, moons, a .npz with arrays x "
               "and y (integer labels 0..K-1), or a folder with one sub-folder of images per "
               "class")

# Tags that keep the random streams of different purposes apart (see generator_for).
TAG_PERMUTATION, TAG_TOY_BATCH, TAG_TOY_ALL_DATA, TAG_TOY_STATS = 0, 1, 2, 3


class DataError(ValueError):
    """A dataset that cannot be loaded, or a bad argument; the message says what to do."""


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int >= minimum, else DataError (bools are refused)."""
    if isinstance(value, bool):
        raise DataError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise DataError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise DataError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_labels(labels, num_examples: int, name: str,
                 num_classes: int | None = None) -> Tensor:
    """Class labels as an int64 CPU tensor (num_examples,), else DataError saying what is wrong.

    Labels are integers 0..K-1, one per example. With ``num_classes`` given (a built-in
    dataset's K), every label must be below it; without, K is the largest label + 1 and
    every class 0..K-1 must have at least one example (a gap is a sign of a mistake, and
    a conditional model would learn an embedding for a class it never saw).
    """
    expected = f"{num_examples} integer class labels 0..K-1, shape ({num_examples},)"
    a = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if a.dtype.kind not in "iu":
        hint = "; convert them with y.astype(np.int64)" if a.dtype.kind == "f" else ""
        raise DataError(f"{name}: expected {expected}; found dtype {a.dtype}{hint}")
    if a.shape != (num_examples,):
        raise DataError(f"{name}: expected {expected}; found shape {a.shape}")
    if a.size and a.min() < 0:
        raise DataError(f"{name}: expected {expected}; found the negative label {a.min()}")
    if num_classes is not None:
        if a.size and a.max() >= num_classes:
            raise DataError(f"{name}: found the label {a.max()}; expected classes "
                            f"0..{num_classes - 1}")
    else:
        counts = np.bincount(a.astype(np.int64))
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise DataError(f"{name}: class {empty[0]} has no examples (labels run to "
                            f"{len(counts) - 1}); expected every class 0..K-1 to have some, "
                            f"so renumber the classes without gaps")
    return torch.from_numpy(a.astype(np.int64))


def check_batch_args(step, batch_size, seed, rank, world_size) -> tuple[int, int, int, int, int]:
    """Validate get_batch's arguments; returns them as ints."""
    step = check_int("step", step, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    world_size = check_int("world_size", world_size, 1)
    rank = check_int("rank", rank, 0)
    if rank >= world_size:
        raise DataError(f"rank must be in 0..{world_size - 1} for world_size={world_size}, "
                        f"got {rank}")
    return step, batch_size, seed, rank, world_size


def generator_for(*keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded by a tuple of non-negative ints.

    The keys are hashed by numpy's SeedSequence, so nearby keys -- (seed, step) and
    (seed, step + 1) -- give unrelated streams.
    """
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed(((int(words[0]) << 32) | int(words[1])) & (2**63 - 1))
    return generator


@functools.lru_cache(maxsize=4)   # a step reads one or two epochs: keep the last few
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(num_examples, generator=generator_for(TAG_PERMUTATION, seed, epoch))


def epoch_indices(step: int, batch_size: int, num_examples: int, *, seed: int = 0,
                  rank: int = 0, world_size: int = 1) -> Tensor:
    """The indices of the examples that process ``rank`` trains on at ``step``.

    The data is read as an endless stream of epochs, epoch e being a permutation of
    range(num_examples) drawn from a generator seeded by (seed, e). Step s of rank r
    takes the stream positions [(s * world_size + r) * batch_size, ... + batch_size):
    the ranks of a step read consecutive slices, so within an epoch every example is
    used exactly once and the ranks' shards are disjoint. Nothing is dropped; a batch
    may straddle two epochs.

    Returns:
        (batch_size,) int64 CPU tensor of indices into the dataset.
    """
    step, batch_size, seed, rank, world_size = check_batch_args(step, batch_size, seed, rank,
                                                                world_size)
    num_examples = check_int("num_examples", num_examples, 1)
    start = (step * world_size + rank) * batch_size
    positions = torch.arange(start, start + batch_size)           # (B,) in the stream
    epochs, offsets = positions // num_examples, positions % num_examples
    indices = torch.empty_like(positions)
    for epoch in range(int(epochs[0]), int(epochs[-1]) + 1):
        in_epoch = epochs == epoch
        indices[in_epoch] = _epoch_permutation(num_examples, seed, epoch)[offsets[in_epoch]]
    return indices


class Dataset:
    """A dataset in training space, read by pure-function batches.

    Attributes:
        name: the built-in name, or the path as given.
        kind: "points" or "images".
        sample_shape: (D,) for points, (C, H, W) for images.
        num_examples: N, the number of examples (for the on-the-fly toys: the nominal
            size of one epoch and of ``all_data()``).
        split: "train" or "test".
        device: where batches are returned.
        bits_per_dim_ready: True for 8-bit images, whose likelihood in bits per
            dimension is defined (Ho et al. 2020, Eq. 13).
    """

    kind: Literal["points", "images"]
    bits_per_dim_ready: bool = False

    def __init__(self, name: str, sample_shape: tuple[int, ...], num_examples: int, *,
                 split: str = "train", device: torch.device | str = "cpu"):
        self.name = name
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.num_examples = int(num_examples)
        self.split = split
        self.device = torch.device(device)
        self._labels: Tensor | None = None
        self.class_names: tuple[str, ...] | None = None     # None: the data has no labels

    def set_labels(self, labels, class_names=None, num_classes: int | None = None) -> None:
        """Attach class labels (num_examples,) (checked by :func:`check_labels`) and names.

        ``class_names`` default to "0".."K-1"; K is ``num_classes``, else the number of
        names, else the largest label + 1.
        """
        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        labels = check_labels(labels, self.num_examples, self.name, num_classes)
        K = num_classes if num_classes is not None else int(labels.max()) + 1
        names = tuple(str(c) for c in (range(K) if class_names is None else class_names))
        if len(names) != K or len(set(names)) != K:
            raise DataError(f"{self.name}: expected {K} distinct class names, got {names}")
        self._labels = labels.to(self.device)                             # (N,) int64
        self.class_names = names

    @property
    def num_classes(self) -> int | None:
        """K, the number of classes, or None for data without labels."""
        return None if self.class_names is None else len(self.class_names)

    def batch_indices(self, step: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                      world_size: int = 1) -> Tensor:
        """Indices (batch_size,) int64 of the examples in ``get_batch`` (see epoch_indices)."""
        return epoch_indices(step, batch_size, self.num_examples, seed=seed, rank=rank,
                             world_size=world_size)

    def get_batch(self, step: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                  world_size: int = 1) -> Tensor:
        """The batch of process ``rank`` at ``step``: (batch_size, *sample_shape) float32.

        A pure function of its arguments, in training space, on ``self.device``.
        """
        indices = self.batch_indices(step, batch_size, seed=seed, rank=rank,
                                     world_size=world_size)
        return self._rows(indices)

    def all_data(self) -> Tensor:
        """Every example in training space: (num_examples, *sample_shape) float32."""
        return self._rows(torch.arange(self.num_examples))

    def _rows(self, indices: Tensor) -> Tensor:
        """Examples ``indices`` (B,) in training space, (B, *sample_shape) on the device."""
        raise NotImplementedError

    def labels(self) -> Tensor | None:
        """Class labels (num_examples,) int64 on the device, aligned with ``all_data()``.

        None where the data has none: swissroll, checkerboard, .npy arrays, a .npz without
        ``y``, folders without class sub-folders, and MNIST without its label files.
        ``labels()[batch_indices(...)]`` are the labels of ``get_batch(...)``. The feature
        classifier of :mod:`diffusion_lib.metrics` trains on them (chapter 7), and so do
        class-conditional models (chapter 9).
        """
        return self._labels

    def get_labelled_batch(self, step: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                           world_size: int = 1) -> tuple[Tensor, Tensor]:
        """``get_batch(...)`` and its class labels: (batch_size, *sample_shape) and
        (batch_size,) int64, both on the device. DataError for data without labels."""
        if self._labels is None:
            raise DataError(f"{self.name}: the data has no class labels; {LABELS_HINT}")
        indices = self.batch_indices(step, batch_size, seed=seed, rank=rank,
                                     world_size=world_size)
        return self._rows(indices), self._labels[indices.to(self.device)]

    def to_output(self, x: Tensor) -> np.ndarray:
        """Training space (N, *sample_shape) -> the data's own space, as numpy."""
        raise NotImplementedError

    def from_output(self, a: np.ndarray) -> Tensor:
        """The data's own space -> training space (N, *sample_shape), the inverse of to_output."""
        raise NotImplementedError

    def check_training_shape(self, x: Tensor) -> Tensor:
        """x as a tensor of shape (N, *sample_shape), else DataError."""
        x = torch.as_tensor(x)
        if x.ndim != 1 + len(self.sample_shape) or tuple(x.shape[1:]) != self.sample_shape:
            dims = ", ".join(map(str, self.sample_shape))
            raise DataError(f"{self.name}: expected shape (N, {dims}) in training space, "
                            f"found {tuple(x.shape)}")
        return x

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, "
                f"split={self.split!r}, num_examples={self.num_examples}, "
                f"sample_shape={self.sample_shape}, device={str(self.device)!r})")


class PointsDataset(Dataset):
    """Points held on the device, standardized per dimension: x0 = (x - mean) / std.

    Args:
        name: the dataset's name.
        points: (N, D) in data space.
        mean, std: (D,) statistics to standardize with; by default computed on
            ``points`` (population std). A dimension of std 0 is only centred.
        labels, class_names: optional class labels (N,) and names (see ``set_labels``).
    """

    kind = "points"

    def __init__(self, name: str, points: Tensor, *, split: str = "train",
                 device: torch.device | str = "cpu", mean: Tensor | None = None,
                 std: Tensor | None = None, labels=None, class_names=None):
        points = torch.as_tensor(points, dtype=torch.float64).cpu()    # (N, D)
        N, D = points.shape
        super().__init__(name, (D,), N, split=split, device=device)
        mean = points.mean(0) if mean is None else torch.as_tensor(mean, dtype=torch.float64)
        std = (points.std(0, correction=0) if std is None
               else torch.as_tensor(std, dtype=torch.float64))
        self.mean = mean.cpu()                                          # (D,) float64
        self.std = torch.where(std > 0, std, torch.ones_like(std)).cpu()  # (D,) float64
        self.x0 = self.standardize(points)                              # (N, D) float32
        if labels is not None:
            self.set_labels(labels, class_names)

    def standardize(self, x: Tensor) -> Tensor:
        """Data space (N, D) -> training space (N, D) float32 on the device."""
        x0 = (torch.as_tensor(x, dtype=torch.float64).cpu() - self.mean) / self.std
        return x0.float().to(self.device)

    def _rows(self, indices: Tensor) -> Tensor:
        return self.x0[indices.to(self.device)]

    def to_output(self, x: Tensor) -> np.ndarray:
        """Training space (N, D) -> data space, float32 numpy (N, D)."""
        x = self.check_training_shape(x).detach().to("cpu", torch.float64)
        return (x * self.std + self.mean).float().numpy()

    def from_output(self, a: np.ndarray) -> Tensor:
        """Data space (N, D) -> training space (N, D) float32 on the device."""
        a = np.asarray(a)
        if a.ndim != 2 or a.shape[1] != self.sample_shape[0]:
            raise DataError(f"{self.name}: expected points of shape (N, {self.sample_shape[0]}), "
                            f"found {a.shape}")
        return self.standardize(torch.from_numpy(a.astype(np.float64)))


def load_dataset(name_or_path: str, *, split: Literal["train", "test"] = "train",
                 data_dir: str | None = None, seed: int = 0, device: torch.device | str = "cpu",
                 download: bool = False) -> Dataset:
    """Load a built-in dataset by name, or a ``.npy``/``.npz`` file or folder of images.

    Args:
        name_or_path: one of :data:`DATASETS` (case-insensitive; a built-in name wins
            over a folder of the same name, write ``./mnist`` for the folder), else a path.
        split: "train" or "test". Files and folders have no split: both give all of it.
        data_dir: where mnist / fashion-mnist / cifar10 files are looked for
            (default ``./data``) and downloaded to.
        seed: the seed of a toy's fixed ``all_data()`` draw; fixed datasets ignore it
            (their batch order is set by get_batch's seed).
        device: where the data is kept and batches are returned.
        download: let torchvision download mnist / fashion-mnist / cifar10 if missing.

    Returns:
        A :class:`Dataset`; for ``8gaussians`` one with ``log_prob`` and ``mixture``.
    """
    if split not in SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    seed = check_int("seed", seed, 0)
    device = torch.device(device)
    key = str(name_or_path).strip().lower()
    if key in TOY_NAMES:
        from .toys import make_toy
        return make_toy(key, split=split, seed=seed, device=device)
    if key in IMAGE_NAMES:
        from . import images
        data_dir = DEFAULT_DATA_DIR if data_dir is None else data_dir
        if key == "digits":
            return images.load_digits(split=split, device=device)
        if key == "cifar10":
            return images.load_cifar10(split=split, data_dir=data_dir, device=device,
                                       download=download)
        return images.load_mnist(key, split=split, data_dir=data_dir, device=device,
                                 download=download)
    path = Path(str(name_or_path)).expanduser()
    if path.suffix.lower() in (".npy", ".npz"):
        from .arrays import load_array
        return load_array(path, name=str(name_or_path), split=split, device=device)
    if path.is_dir():
        from .images import load_image_folder
        return load_image_folder(path, name=str(name_or_path), split=split, device=device)
    if path.exists():
        raise DataError(f"{name_or_path}: unsupported file type {path.suffix or '(none)'!r}; "
                        f"expected a .npy or .npz file, or a folder of images")
    raise DataError(f"unknown dataset {name_or_path!r}: not one of {', '.join(DATASETS)}, "
                    f"nor an existing .npy/.npz file or folder of images")
