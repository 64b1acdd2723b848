"""8-bit image datasets: digits, MNIST, Fashion-MNIST, CIFAR-10, a folder of images.

Images are kept as uint8 (N, C, H, W) -- a quarter of float32's memory -- and scaled
per batch to the DDPM training space x0 = u / 127.5 - 1 in [-1, 1] (Ho et al. 2020,
Sec. 3.3). The files are read with numpy alone: MNIST and Fashion-MNIST from their
IDX files, CIFAR-10 from its binary batches. torchvision is used only to download
(``download=True``) and to read the pickled CIFAR-10 it downloads, whose checksums it
verifies; Pillow only to read a folder of images. Both are imported when needed.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import DataError, Dataset

__all__ = ["ImageDataset", "InMemoryImages", "StreamedImages", "from_nhwc", "load_digits",
           "read_idx_images", "read_idx_labels", "load_mnist", "read_cifar10_binary",
           "read_cifar10_labels", "load_cifar10",
           "load_image_folder", "DIGITS_NUM_TEST", "IMAGE_SUFFIXES", "DIGIT_NAMES",
           "FASHION_MNIST_NAMES", "CIFAR10_NAMES"]

DIGITS_NUM_TEST = 297                     # digits: the last 297 of 1,797 images are the test split
DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_MNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot")
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VISION_HINT = ('install torchvision (pip install "diffusion_lib[vision]") '
               'and run online with --download')


class ImageDataset(Dataset):
    """8-bit images; subclasses give the uint8 rows, this class the scaling to [-1, 1]."""

    kind = "images"
    bits_per_dim_ready = True

    def _uint8_rows(self, indices: Tensor) -> Tensor:
        """Images ``indices`` (B,) as uint8 (B, C, H, W) on the device."""
        raise NotImplementedError

    def _rows(self, indices: Tensor) -> Tensor:
        return self._uint8_rows(indices).float() / 127.5 - 1.0              # (B, C, H, W)

    def to_output(self, x: Tensor) -> np.ndarray:
        """Training space (N, C, H, W) -> uint8 numpy (N, H, W, C), clamped and rounded."""
        x = self.check_training_shape(x).detach().to("cpu", torch.float32)
        u = ((x + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)          # (N, C, H, W)
        return u.permute(0, 2, 3, 1).numpy()                                  # (N, H, W, C)

    def from_output(self, a: np.ndarray) -> Tensor:
        """uint8 (N, H, W, C), or (N, H, W) for one channel -> (N, C, H, W) in [-1, 1]."""
        u = from_nhwc(np.asarray(a), self.name)
        if tuple(u.shape[1:]) != self.sample_shape:
            C, H, W = self.sample_shape
            raise DataError(f"{self.name}: expected uint8 images of shape (N, {H}, {W}, {C}), "
                            f"found {np.shape(a)}")
        return u.to(self.device).float() / 127.5 - 1.0


class InMemoryImages(ImageDataset):
    """Images held on the device as one uint8 tensor (N, C, H, W), with optional labels (N,).

    ``labels``, ``class_names``, ``num_classes``: see :meth:`Dataset.set_labels`.
    """

    def __init__(self, name: str, images: Tensor | np.ndarray, *, split: str = "train",
                 device: torch.device | str = "cpu", labels: Tensor | np.ndarray | None = None,
                 class_names=None, num_classes: int | None = None):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] == 0:
            raise DataError(f"{name}: expected uint8 images (N, C, H, W) with N > 0, "
                            f"found {images.dtype} {tuple(images.shape)}")
        super().__init__(name, tuple(images.shape[1:]), images.shape[0], split=split, device=device)
        self.images = images.to(self.device)                                 # (N, C, H, W) uint8
        if labels is not None:
            self.set_labels(labels, class_names, num_classes)

    def _uint8_rows(self, indices: Tensor) -> Tensor:
        return self.images[indices.to(self.device)]


def from_nhwc(a: np.ndarray, name: str = "images") -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) numpy -> uint8 tensor (N, C, H, W) (a copy)."""
    if a.dtype != np.uint8:
        raise DataError(f"{name}: expected uint8 images, found dtype {a.dtype}")
    if a.ndim == 3:
        a = a[..., None]                                                      # (N, H, W, 1)
    if a.ndim != 4:
        raise DataError(f"{name}: expected images of shape (N, H, W) or (N, H, W, C), "
                        f"found {a.shape}")
    return torch.from_numpy(a.transpose(0, 3, 1, 2).copy())                # (N, C, H, W)


# ---------------------------------------------------------------- digits (scikit-learn)

def load_digits(*, split: str = "train", device: torch.device | str = "cpu") -> InMemoryImages:
    """scikit-learn's 1,797 handwritten digits as 8x8 uint8 images, 1 channel.

    The 17 grey levels 0..16 become round(v * 255 / 16) in 0..255. The split is fixed:
    the first 1,500 images train, the last :data:`DIGITS_NUM_TEST` = 297 test.

    Returns:
        InMemoryImages with sample_shape (1, 8, 8) and the digit 0..9 as ``labels()``.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError:
        raise DataError("digits: needs scikit-learn (pip install scikit-learn)") from None
    bunch = sklearn_load_digits()
    u8 = np.round(bunch.images * 255 / 16).astype(np.uint8)                 # (1797, 8, 8), 0..16
    rows = slice(None, -DIGITS_NUM_TEST) if split == "train" else slice(-DIGITS_NUM_TEST, None)
    return InMemoryImages("digits", from_nhwc(u8[rows]), split=split, device=device,
                          labels=bunch.target[rows], class_names=DIGIT_NAMES)


# ---------------------------------------------------------------- MNIST, Fashion-MNIST (IDX)

_IDX_STEMS = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
_IDX_LABEL_STEMS = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}
_TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def _read_maybe_gzip(path: Path, name: str) -> bytes:
    """The bytes of ``path``, gunzipped if they start with the gzip magic number."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{name}: cannot read {path}: corrupt or truncated ({error})") from None


def read_idx_images(path: str | Path, name: str = "mnist") -> np.ndarray:
    """Read an IDX image file (optionally gzipped), validating its header and size.

    Format: magic 0x00000803 (uint8 values, 3 dimensions), then N, H, W as big-endian
    int32, then N * H * W bytes of pixels, row-major.

    Returns:
        uint8 (N, H, W).
    """
    path = Path(path)
    raw = _read_maybe_gzip(path, name)
    if len(raw) < 16:
        raise DataError(f"{name}: {path} is truncated: {len(raw)} bytes, less than the "
                        f"16-byte IDX header")
    magic, N, H, W = struct.unpack(">IIII", raw[:16])
    if magic != 0x803:
        raise DataError(f"{name}: {path} is not an IDX image file: magic number 0x{magic:08x}, "
                        f"expected 0x00000803 (uint8, 3 dimensions)")
    expected, found = N * H * W, len(raw) - 16
    if expected == 0:
        raise DataError(f"{name}: {path} is empty: header says {N} images of {H}x{W}")
    if found != expected:
        what = "truncated" if found < expected else "corrupt (trailing bytes)"
        raise DataError(f"{name}: {path} is {what}: header says {N} images of {H}x{W} = "
                        f"{expected} bytes of pixels, found {found}")
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=16).reshape(N, H, W)


def read_idx_labels(path: str | Path, name: str = "mnist") -> np.ndarray:
    """Read an IDX label file (optionally gzipped): magic 0x00000801, N, then N label bytes.

    Returns:
        uint8 (N,).
    """
    path = Path(path)
    raw = _read_maybe_gzip(path, name)
    if len(raw) < 8:
        raise DataError(f"{name}: {path} is truncated: {len(raw)} bytes, less than the "
                        f"8-byte IDX header")
    magic, N = struct.unpack(">II", raw[:8])
    if magic != 0x801:
        raise DataError(f"{name}: {path} is not an IDX label file: magic number 0x{magic:08x}, "
                        f"expected 0x00000801 (uint8, 1 dimension)")
    if len(raw) - 8 != N:
        raise DataError(f"{name}: {path} is corrupt: header says {N} labels, found "
                        f"{len(raw) - 8} bytes")
    return np.frombuffer(raw, dtype=np.uint8, count=N, offset=8)


def _find_labels_next_to(images_path: Path, split: str) -> Path | None:
    """The IDX label file of ``split`` in the folder of the image file, or None."""
    stem = _IDX_LABEL_STEMS[split]
    dotted = stem.replace("-idx", ".idx")
    for candidate in [stem, stem + ".gz", dotted, dotted + ".gz"]:
        if (images_path.parent / candidate).is_file():
            return images_path.parent / candidate
    return None


def _search_dirs(name: str, data_dir: str | Path) -> list[Path]:
    """data_dir, data_dir/<name>, data_dir/<name>/raw and torchvision's data_dir/<Class>/raw."""
    root = Path(data_dir).expanduser()
    return [root, root / name, root / name / "raw", root / _TORCHVISION_NAMES[name] / "raw"]


def find_idx_file(name: str, split: str, data_dir: str | Path) -> Path | None:
    """The first IDX image file of ``split`` under the search dirs, or None."""
    stem = _IDX_STEMS[split]
    dotted = stem.replace("-idx", ".idx")   # train-images.idx3-ubyte, as some mirrors name it
    candidates = [stem, stem + ".gz", dotted, dotted + ".gz"]
    for folder in _search_dirs(name, data_dir):
        for candidate in candidates:
            if (folder / candidate).is_file():
                return folder / candidate
    return None


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def _torchvision_images(name: str, split: str, root: str | Path,
                        download: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Images of a torchvision dataset, uint8 (N, H, W) or (N, H, W, C), and labels (N,) or None."""
    import torchvision

    dataset_class = getattr(torchvision.datasets, _TORCHVISION_NAMES[name])
    try:
        dataset = dataset_class(root=str(root), train=split == "train", download=download)
    except Exception as error:   # network errors, checksum mismatches: one clear line
        raise DataError(f"{name}: torchvision could not load it into {root}: {error}") from None
    targets = getattr(dataset, "targets", None)
    return (np.asarray(dataset.data, dtype=np.uint8),
            None if targets is None else np.asarray(targets, dtype=np.int64))


def load_mnist(name: str = "mnist", *, split: str = "train", data_dir: str | Path = "data",
               device: torch.device | str = "cpu", download: bool = False) -> InMemoryImages:
    """MNIST or Fashion-MNIST (``name``) from their IDX files, 28x28 uint8, 1 channel.

    Looks for train-images-idx3-ubyte[.gz] (t10k-... for the test split) in data_dir,
    data_dir/<name>, data_dir/<name>/raw and torchvision's data_dir/MNIST/raw (or
    FashionMNIST/raw). If none is there and ``download`` is set, torchvision downloads
    the dataset into data_dir. The labels are read from train-labels-idx1-ubyte[.gz]
    (t10k-labels-...) in the folder of the image file, if it is there.

    Returns:
        InMemoryImages with sample_shape (1, H, W); ``labels()`` is None without a label file.
        ``class_names`` are the digits, or Fashion-MNIST's ten kinds of clothing.
    """
    path = find_idx_file(name, split, data_dir)
    labels = None
    if path is not None:
        u8 = read_idx_images(path, name)                                     # (N, H, W)
        labels_path = _find_labels_next_to(path, split)
        if labels_path is not None:
            labels = read_idx_labels(labels_path, name)                      # (N,)
            if len(labels) != len(u8):
                raise DataError(f"{name}: {labels_path} has {len(labels)} labels for the "
                                f"{len(u8)} images of {path}")
    elif download and _has_torchvision():
        u8, labels = _torchvision_images(name, split, data_dir, download=True)
    else:
        stem = _IDX_STEMS[split]
        where = ", ".join(str(d) for d in _search_dirs(name, data_dir))
        hint = VISION_HINT if not _has_torchvision() else "run online with --download"
        raise DataError(f"{name}: no IDX files under {where}; pass --data-dir pointing to the "
                        f"folder with {stem}(.gz), or {hint}")
    names = FASHION_MNIST_NAMES if name == "fashion-mnist" else DIGIT_NAMES
    return InMemoryImages(name, from_nhwc(u8, name), split=split, device=device, labels=labels,
                          class_names=None if labels is None else names)


# ---------------------------------------------------------------- CIFAR-10 (binary version)

CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32    # a label byte, then the R, G and B planes of 32x32
_CIFAR10_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def read_cifar10_binary(path: str | Path) -> np.ndarray:
    """Read one CIFAR-10 binary batch: records of 1 label byte + 3,072 pixel bytes.

    Returns:
        uint8 (N, 3, 32, 32), channel planes in R, G, B order.
    """
    return _cifar10_records(path)[:, 1:].reshape(-1, 3, 32, 32)


def read_cifar10_labels(path: str | Path) -> np.ndarray:
    """The labels of one CIFAR-10 binary batch, the first byte of each record: uint8 (N,)."""
    return _cifar10_records(path)[:, 0].copy()


def _cifar10_records(path: str | Path) -> np.ndarray:
    """The validated records of a CIFAR-10 binary batch, uint8 (N, 3073)."""
    path = Path(path)
    raw = _read_maybe_gzip(path, "cifar10")
    if len(raw) == 0 or len(raw) % CIFAR10_RECORD_BYTES:
        raise DataError(f"cifar10: {path} is truncated or not a CIFAR-10 binary batch: {len(raw)} "
                        f"bytes is not a positive multiple of {CIFAR10_RECORD_BYTES} "
                        f"(1 label + 3x32x32 pixels)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    if records[:, 0].max() > 9:
        raise DataError(f"cifar10: {path} is corrupt: a label byte is {records[:, 0].max()}, "
                        f"not 0..9")
    return records


def _cifar10_roots(data_dir: str | Path) -> list[Path]:
    root = Path(data_dir).expanduser()
    return [root, root / "cifar10", root / "cifar-10"]


def find_cifar10_binary(split: str, data_dir: str | Path) -> list[Path] | None:
    """The binary batch files of ``split``, or None; DataError if a folder has only some."""
    names = _CIFAR10_FILES[split]
    for root in _cifar10_roots(data_dir):
        for folder in (root / "cifar-10-batches-bin", root):
            present = [(folder / n).is_file() for n in names]
            if all(present):
                return [folder / n for n in names]
            if any(present):
                missing = names[present.index(False)]
                raise DataError(f"cifar10: {folder / missing} is missing (found other batches "
                                f"in {folder}); re-extract cifar-10-binary.tar.gz")
    return None


def _find_cifar10_python(data_dir: str | Path) -> Path | None:
    """The folder holding cifar-10-batches-py/ (torchvision's root), or None."""
    for root in _cifar10_roots(data_dir):
        if (root / "cifar-10-batches-py").is_dir():
            return root
    return None


def load_cifar10(*, split: str = "train", data_dir: str | Path = "data",
                 device: torch.device | str = "cpu", download: bool = False) -> InMemoryImages:
    """CIFAR-10, 32x32 RGB uint8, from the binary version (cifar-10-batches-bin/).

    Without torchvision only the binary version is read: the python version is
    pickled, and unpickling a file can run code. With torchvision, its download (or a
    cifar-10-batches-py/ folder, checksummed by torchvision) is used instead.

    Returns:
        InMemoryImages with sample_shape (3, 32, 32) and the class 0..9 as ``labels()``.
    """
    files = find_cifar10_binary(split, data_dir)
    if files is not None:
        records = np.concatenate([_cifar10_records(f) for f in files])      # (N, 3073)
        images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy())
        return InMemoryImages("cifar10", images, split=split, device=device,
                              labels=records[:, 0], class_names=CIFAR10_NAMES)
    python_root = _find_cifar10_python(data_dir)
    if (download or python_root is not None) and _has_torchvision():
        root = data_dir if python_root is None else python_root
        u8, labels = _torchvision_images("cifar10", split, root, download=python_root is None)
        return InMemoryImages("cifar10", from_nhwc(u8, "cifar10"), split=split, device=device,
                              labels=labels, class_names=None if labels is None else CIFAR10_NAMES)
    binary_hint = ("download cifar-10-binary.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) "
                   "and extract it under --data-dir")
    if python_root is not None:
        raise DataError(f"cifar10: found only the python (pickled) version in "
                        f"{python_root / 'cifar-10-batches-py'}, which is not unpickled without "
                        f"torchvision (unpickling can run code); {binary_hint}, or install "
                        f'torchvision (pip install "diffusion_lib[vision]")')
    where = ", ".join(str(r) for r in _cifar10_roots(data_dir))
    raise DataError(f"cifar10: no binary batches (cifar-10-batches-bin/{_CIFAR10_FILES[split][0]}) "
                    f"under {where}; {binary_hint}, or {VISION_HINT}")


# ---------------------------------------------------------------- a folder of images (Pillow)

def _import_pil():
    try:
        from PIL import Image
    except ImportError:
        raise DataError('a folder of images needs Pillow (pip install "diffusion_lib[vision]")'
                        ) from None
    return Image


def _decode(path: Path, mode: str, size: tuple[int, int], name: str) -> np.ndarray:
    """One image file as uint8 (H, W) for mode "L" or (H, W, 3) for "RGB"."""
    Image = _import_pil()
    try:
        with Image.open(path) as image:
            found = image.size
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{name}: cannot read image {path}: {error}") from None
    if found != size:
        raise DataError(f"{name}: image size mismatch: {path} is {found[0]}x{found[1]}, expected "
                        f"{size[0]}x{size[1]} like the other images")
    return pixels


def _decode_files(files: list[Path], mode: str, size: tuple[int, int], name: str) -> Tensor:
    """Image files as one uint8 CPU tensor (B, C, H, W)."""
    return from_nhwc(np.stack([_decode(f, mode, size, name) for f in files]), name)


class StreamedImages(ImageDataset):
    """A folder of images decoded from disk per batch, for folders too big for memory.

    No cache: each batch opens its files again. ``all_data()`` decodes every image.
    """

    def __init__(self, name: str, files: list[Path], mode: str, size: tuple[int, int], *,
                 split: str = "train", device: torch.device | str = "cpu", labels=None,
                 class_names=None):
        W, H = size
        super().__init__(name, (1 if mode == "L" else 3, H, W), len(files), split=split,
                         device=device)
        self.files, self.mode, self.size = files, mode, size
        if labels is not None:
            self.set_labels(labels, class_names)

    def _uint8_rows(self, indices: Tensor) -> Tensor:
        files = [self.files[i] for i in indices.tolist()]
        return _decode_files(files, self.mode, self.size, self.name).to(self.device)


def load_image_folder(path: str | Path, *, name: str | None = None, split: str = "train",
                      device: torch.device | str = "cpu",
                      max_in_memory_bytes: int = 2**30) -> ImageDataset:
    """Every .png/.jpg/.jpeg/.bmp image under ``path`` (recursively, sorted by path).

    All images must have the same size. They are converted to grayscale ("L", 1
    channel) if every one is grayscale, else to RGB (3 channels; alpha is dropped).
    Hidden files and folders are skipped. If N * C * H * W bytes fit in
    ``max_in_memory_bytes`` all images are decoded now and kept on the device;
    otherwise they are decoded per batch from disk.

    Class labels: when every image lies in a sub-folder directly under ``path`` (none at
    the top, none deeper), the sub-folders are the classes, numbered 0..K-1 in sorted
    order and named after the folders (``path/cat/1.png`` has class "cat").

    Returns:
        InMemoryImages or StreamedImages with sample_shape (C, H, W).
    """
    root = Path(path).expanduser()
    name = str(path) if name is None else name
    if not root.is_dir():
        raise DataError(f"{name}: no such folder")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(root).parts))
    if not files:
        raise DataError(f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder {root}")
    Image = _import_pil()
    sizes, modes = [], set()
    for f in files:   # headers only: Image.open does not decode the pixels
        try:
            with Image.open(f) as image:
                sizes.append(image.size)
                modes.add(image.mode)
        except (OSError, SyntaxError, ValueError) as error:
            raise DataError(f"{name}: cannot read image {f}: {error}") from None
        if sizes[-1] != sizes[0]:
            raise DataError(f"{name}: image size mismatch: {f} is {sizes[-1][0]}x{sizes[-1][1]} "
                            f"but {files[0]} is {sizes[0][0]}x{sizes[0][1]}; "
                            f"resize them to one size")
    mode = "L" if modes <= {"1", "L", "LA"} else "RGB"
    W, H = sizes[0]
    labels, class_names = _folder_classes(files, root)
    if len(files) * (1 if mode == "L" else 3) * H * W > max_in_memory_bytes:
        return StreamedImages(name, files, mode, sizes[0], split=split, device=device,
                              labels=labels, class_names=class_names)
    images = _decode_files(files, mode, sizes[0], name)                    # (N, C, H, W)
    return InMemoryImages(name, images, split=split, device=device, labels=labels,
                          class_names=class_names)


def _folder_classes(files: list[Path], root: Path) -> tuple[np.ndarray | None, list[str] | None]:
    """Labels (N,) and class names from one sub-folder per class, or (None, None)."""
    parents = [f.relative_to(root).parts for f in files]
    if not all(len(parts) == 2 for parts in parents):
        return None, None
    class_names = sorted({parts[0] for parts in parents})
    index = {c: k for k, c in enumerate(class_names)}
    return np.array([index[parts[0]] for parts in parents], dtype=np.int64), class_names
