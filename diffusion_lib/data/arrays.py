"""Bring your own data: a ``.npy`` or ``.npz`` file of points or of 8-bit images.

The array's shape and dtype say what it is:

* (N, D) real numbers -> points, standardized per dimension (integers are cast);
* (N, H, W) or (N, H, W, C) with C in {1, 3}, uint8 0..255 -> images (integer arrays
  whose values all lie in 0..255 are cast; float images are refused, the
  scaling 0..1 or 0..255 being a guess).

A ``.npz`` may hold class labels next to the data, for class-conditional models
(chapter 9): an array ``y`` of N integers 0..K-1, every class present, with the data
in ``x`` (``np.savez("points.npz", x=points, y=labels)``).

Files are always read with ``allow_pickle=False``: loading a pickle can run code. A
file has no train/test split; both splits give all of it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from . import DataError, Dataset, PointsDataset
from .images import InMemoryImages, from_nhwc

__all__ = ["NPZ_KEYS", "NPZ_LABELS_KEY", "read_array", "read_labelled_array",
           "dataset_from_array", "load_array"]

NPZ_KEYS = ("x", "data", "images")   # the array taken from a .npz holding several, in this order
NPZ_LABELS_KEY = "y"                 # the class labels of a .npz, next to its data


def read_array(path: str | Path) -> np.ndarray:
    """The array of a .npy file, or of a .npz file (its only array, else x / data / images)."""
    return read_labelled_array(path)[0]


def read_labelled_array(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The data array of a .npy / .npz file (see :func:`read_array`), and the .npz's labels
    ``y`` (None if it has none: always for a .npy)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY" and not head.startswith(b"PK"):   # the .npy and the zip (.npz) magic
        raise DataError(f"{path}: not a .npy or .npz file (it starts with {head!r})")
    try:
        loaded = np.load(path, allow_pickle=False)      # an ndarray, or a lazy NpzFile
        if isinstance(loaded, np.ndarray):
            return loaded, None
        with loaded:
            keys = list(loaded.files)
            labels = None
            if NPZ_LABELS_KEY in keys and len(keys) > 1:
                labels = loaded[NPZ_LABELS_KEY]
                keys.remove(NPZ_LABELS_KEY)
            return _pick_npz_array(loaded, keys, path), labels
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        if "pickle" in str(error):
            raise DataError(f"{path}: holds Python objects, which are not loaded (loading a "
                            f"pickle can run code); save a numeric array with np.save") from None
        raise DataError(f"{path}: cannot read it as a numpy file ({error})") from None


def _pick_npz_array(loaded, keys: list[str], path: Path) -> np.ndarray:
    if len(keys) == 1:
        return loaded[keys[0]]
    for key in NPZ_KEYS:
        if key in keys:
            return loaded[key]
    raise DataError(f"{path}: holds arrays {keys or '(none)'}; expected a single array or one "
                    f"named {', '.join(NPZ_KEYS)}")


def dataset_from_array(a: np.ndarray, name: str, *, split: str = "train",
                       device: torch.device | str = "cpu", labels=None) -> Dataset:
    """A dataset from an array: (N, D) -> points, uint8 (N, H, W[, C]) -> images.

    ``labels``: optional class labels (N,), integers 0..K-1 with every class present
    (else DataError, see :func:`diffusion_lib.data.check_labels`).

    Returns:
        PointsDataset with sample_shape (D,), or InMemoryImages with (C, H, W).
    """
    a = np.asarray(a)
    expected = "(N, D) points or uint8 images (N, H, W) / (N, H, W, C) with C in {1, 3}"
    if a.ndim not in (2, 3, 4):
        raise DataError(f"{name}: found shape {a.shape}; expected {expected}")
    if a.size == 0:
        raise DataError(f"{name}: the array is empty (shape {a.shape})")
    if a.ndim == 2:
        points = torch.from_numpy(_as_points(a, name))                     # (N, D) float64
        return PointsDataset(name, points, split=split, device=device, labels=labels)
    if a.ndim == 4 and a.shape[-1] not in (1, 3):
        hint = "; it looks channel-first: use np.moveaxis(a, 1, -1)" if a.shape[1] in (1, 3) else ""
        raise DataError(f"{name}: found images of shape {a.shape} with {a.shape[-1]} channels; "
                        f"expected (N, H, W, C) with C in {{1, 3}}{hint}")
    return InMemoryImages(name, from_nhwc(_as_uint8(a, name), name), split=split, device=device,
                          labels=labels)


def _as_points(a: np.ndarray, name: str) -> np.ndarray:
    """Points as float64 (N, D); integers cast, NaN / inf refused."""
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    if a.dtype.kind != "f":
        raise DataError(f"{name}: points must be real numbers, found dtype {a.dtype}")
    bad = int((~np.isfinite(a)).sum())
    if bad:
        raise DataError(f"{name}: {bad} NaN or inf values in the points; remove those rows")
    return a.astype(np.float64)


def _as_uint8(a: np.ndarray, name: str) -> np.ndarray:
    """Images as uint8; integers in 0..255 cast, anything else refused with a hint."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "f":
        finite = a[np.isfinite(a)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        fix = "(a * 255).round()" if high <= 1 else "a.round().clip(0, 255)"
        raise DataError(f"{name}: images must be uint8 0..255, found {a.dtype} values in "
                        f"[{low:g}, {high:g}]; convert with {fix}.astype(np.uint8)")
    if a.dtype.kind in "iu" and a.min() >= 0 and a.max() <= 255:
        return a.astype(np.uint8)
    raise DataError(f"{name}: images must be uint8 0..255, found dtype {a.dtype}"
                    + (f" with values in [{a.min()}, {a.max()}]" if a.dtype.kind in "iu" else ""))


def load_array(path: str | Path, *, name: str | None = None, split: str = "train",
               device: torch.device | str = "cpu") -> Dataset:
    """Load a .npy / .npz file as points or images, with the .npz's labels ``y`` if any."""
    a, labels = read_labelled_array(path)
    return dataset_from_array(a, str(path) if name is None else name, split=split,
                              device=device, labels=labels)
