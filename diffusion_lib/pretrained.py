"""Released models: a trained run reduced to what sampling needs, with a manifest (chapters 7-9).

A released model is a run folder (``config.json``, one checkpoint holding the EMA weights
only, the training ``metrics.jsonl``) plus ``MANIFEST.json``: how it was made (the exact
command, the data and its checksums, steps, batch size, time, machine, library version),
the size and SHA-256 of every file, and the quality figures measured on it. ``load_run``
and ``python -m diffusion_lib sample --run`` accept the folder as it is; training cannot
resume from it (the raw weights and the optimizer state are not shipped).

The reference classifier that scores samples ships the same way, in a folder of its own:
its weights, and the mean and covariance of its features on the MNIST test and training
sets (the precomputed statistics of an FID), so that samples can be scored with no
dataset on disk:

* :func:`write_manifest` / :func:`verify_manifest`: sizes and SHA-256 of the files;
  a changed, missing or truncated file is a :class:`ManifestError` naming it.
* :func:`export_ema_run`: a training run folder -> a released one.
* :class:`Reference`, :func:`save_reference`, :func:`load_reference`: the classifier and
  its feature statistics; :meth:`Reference.score` gives the Frechet distance of samples
  to the test set, the floor that real images of the same number reach, and the share
  of samples the classifier puts in their requested class.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .metrics.distances import gaussian_frechet_distance
from .metrics.features import (
    FeatureClassifier,
    extract_features,
    load_feature_classifier,
    save_feature_classifier,
)
from .training.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["MANIFEST_NAME", "ManifestError", "sha256_file", "write_manifest", "verify_manifest",
           "read_manifest", "export_ema_run", "Reference", "save_reference", "load_reference",
           "CLASSIFIER_FILE", "STATS_FILE", "RELEASE_FORMAT"]

MANIFEST_NAME = "MANIFEST.json"
RELEASE_FORMAT = "diffusion_lib.release/1"
CLASSIFIER_FILE = "classifier.safetensors"
STATS_FILE = "reference_stats.safetensors"


class ManifestError(ValueError):
    """A released folder whose files do not match its manifest (changed, missing, truncated)."""


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _listed_files(folder: Path) -> list[Path]:
    """Every plain file under ``folder`` except the manifest and hidden files, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def write_manifest(folder: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``folder/MANIFEST.json``: ``info`` plus the size and SHA-256 of every file.

    Written atomically; returns the manifest as written.
    """
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size,
                                                "sha256": sha256_file(p)}
             for p in _listed_files(folder)}
    manifest = {"format": RELEASE_FORMAT, **info, "files": files,
                "total_bytes": sum(f["bytes"] for f in files.values())}
    atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a released folder, parsed; ManifestError if missing or not one."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{folder}: no {MANIFEST_NAME}; not a released model folder")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RELEASE_FORMAT:
        raise ManifestError(f"{path}: not a release manifest (expected format "
                            f"{RELEASE_FORMAT!r})")
    return manifest


def verify_manifest(folder: str | Path) -> dict[str, Any]:
    """Check every file the manifest lists (size, then SHA-256), and that none is extra.

    Returns the manifest. Raises ManifestError naming the first file that differs: a
    clone that fetched a Git LFS pointer instead of the weights, a truncated download or
    an edited file is caught before a model is built from it.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    listed = manifest.get("files") or {}
    for name, entry in listed.items():
        path = folder / name
        if not path.is_file():
            raise ManifestError(f"{folder}: {name} is missing (the manifest lists it)")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise ManifestError(f"{path}: {size} bytes, the manifest says {entry['bytes']}; "
                                f"the file is truncated or changed (re-fetch it, or rebuild "
                                f"with make pretrained)")
        if sha256_file(path) != entry["sha256"]:
            raise ManifestError(f"{path}: SHA-256 differs from the manifest's; the file was "
                                f"changed (re-fetch it, or rebuild with make pretrained)")
    extra = [p.relative_to(folder).as_posix() for p in _listed_files(folder)
             if p.relative_to(folder).as_posix() not in listed]
    if extra:
        raise ManifestError(f"{folder}: files the manifest does not list: {', '.join(extra)}")
    return manifest


def export_ema_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy a run's latest checkpoint to ``out_dir`` with its EMA weights only.

    ``out_dir`` gets ``config.json``, ``metrics.jsonl`` (if the run has one) and
    ``checkpoints/step-N.safetensors`` without the raw weights and optimizer state: a
    third of the size, enough for ``load_run`` and ``sample``. Returns the checkpoint path.
    """
    from .models import build_model_from_dict

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    path = latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir}: no checkpoint to export")
    ckpt = load_checkpoint(path)
    model = build_model_from_dict(ckpt.model_config)
    model.load_state_dict(ckpt.ema_state)
    (out_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    for old in (out_dir / CHECKPOINT_DIR).glob("*.safetensors"):
        old.unlink()
    config = {**ckpt.config, "out": None, "data_dir": None}   # no paths of the training machine
    written = save_checkpoint(out_dir, ckpt.step, config=config, model_config=ckpt.model_config,
                              data=ckpt.data, model=None, ema_model=model, optimizer=None)
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True)
                      + "\n")
    if (run_dir / "metrics.jsonl").is_file():
        atomic_write_bytes(out_dir / "metrics.jsonl", (run_dir / "metrics.jsonl").read_bytes())
    return written


# ---------------------------------------------------------------- the reference classifier

@dataclass
class Reference:
    """A classifier and its feature statistics on real images (the "precomputed FID stats").

    ``test_mean``, ``test_cov``: features of the test set; ``floors``: {n: the Frechet
    distance of n random training images to the test statistics}, the best a model can
    expect with n samples (the estimate is biased upwards at small n).
    """

    classifier: FeatureClassifier
    test_mean: Tensor                       # (F,) float64
    test_cov: Tensor                        # (F, F) float64
    floors: dict[int, float]
    manifest: dict[str, Any] = field(default_factory=dict)

    def floor(self, n: int) -> float:
        """The floor at n samples: the recorded one at the nearest n (log scale)."""
        if not self.floors:
            return float("nan")
        return self.floors[min(self.floors, key=lambda k: abs(math.log(k) - math.log(n)))]

    def features(self, x: Tensor) -> Tensor:
        """Features (N, F) float64 of images (N, C, H, W) in [-1, 1]."""
        return extract_features(self.classifier, x)

    def frechet(self, features: Tensor) -> float:
        """The Frechet distance of features (N, F) to the test statistics."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"need features (N >= 2, F), got {tuple(features.shape)}")
        return gaussian_frechet_distance(features.mean(0), torch.cov(features.T),
                                         self.test_mean, self.test_cov)

    def score(self, images: Tensor | np.ndarray, labels: Tensor | np.ndarray | None = None
              ) -> dict[str, Any]:
        """Scores of N samples: uint8 (N, H, W[, C]) as ``sample`` writes them, or (N, C, H, W)
        floats in [-1, 1].

        Returns frechet_distance, frechet_floor (real images at this n), num_samples,
        class_shares (the share the classifier puts in each class), and, with the
        requested ``labels`` (N,), class_accuracy and per_class_accuracy.
        """
        x = _as_model_input(images, self.classifier.config.in_channels)      # (N, C, H, W)
        features = self.features(x)
        logits = self.classifier.head(features.float())
        predicted = logits.argmax(1)
        K = self.classifier.config.num_classes
        shares = torch.bincount(predicted, minlength=K).double() / len(predicted)
        report: dict[str, Any] = {"num_samples": len(x), "frechet_distance": self.frechet(features),
                                  "frechet_floor": self.floor(len(x)),
                                  "class_shares": [round(float(s), 4) for s in shares]}
        if labels is not None:
            y = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
            if y.shape[0] != len(x):
                raise ValueError(f"labels: {y.shape[0]} for {len(x)} samples")
            hit = (predicted == y).double()
            report["class_accuracy"] = float(hit.mean())
            report["per_class_accuracy"] = [
                round(float(hit[y == k].mean()), 4) if bool((y == k).any()) else None
                for k in range(K)]
        return report


def _as_model_input(images: Tensor | np.ndarray, channels: int) -> Tensor:
    """uint8 (N, H, W[, C]) -> float (N, C, H, W) in [-1, 1]; floats pass through."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        u = torch.from_numpy(images.copy())
        if u.ndim == 3:
            u = u[..., None]                                                  # (N, H, W, 1)
        if u.ndim != 4 or u.shape[-1] != channels:
            raise ValueError(f"expected uint8 images (N, H, W) or (N, H, W, {channels}), "
                             f"got {tuple(images.shape)}")
        return u.permute(0, 3, 1, 2).float() / 127.5 - 1                     # (N, C, H, W)
    x = torch.as_tensor(images).float()
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"expected images (N, {channels}, H, W) in [-1, 1], "
                         f"got {tuple(x.shape)}")
    return x


def save_reference(folder: str | Path, classifier: FeatureClassifier, test_features: Tensor,
                   floors: dict[int, float], metadata: dict[str, str] | None = None) -> None:
    """Write the classifier and the test features' mean and covariance to ``folder``."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_feature_classifier(classifier, folder / CLASSIFIER_FILE, metadata=metadata)
    f = test_features.double()
    stats = {"test_mean": f.mean(0).contiguous(), "test_cov": torch.cov(f.T).contiguous()}
    meta = {"floors": json.dumps({str(k): v for k, v in sorted(floors.items())}),
            "num_test": str(len(f))}
    atomic_write_bytes(folder / STATS_FILE, save(stats, metadata=meta))


def load_reference(folder: str | Path, device: torch.device | str = "cpu",
                   verify: bool = True) -> Reference:
    """Load a reference classifier folder, checking its files against the manifest first."""
    from safetensors import safe_open

    folder = Path(folder)
    manifest = verify_manifest(folder) if verify else {}
    classifier, _ = load_feature_classifier(folder / CLASSIFIER_FILE, device)
    try:
        with safe_open(str(folder / STATS_FILE), framework="pt") as f:
            meta = dict(f.metadata() or {})
            mean, cov = f.get_tensor("test_mean"), f.get_tensor("test_cov")
    except Exception as error:         # safetensors' own error types
        raise ManifestError(f"{folder / STATS_FILE}: not readable ({error})") from None
    floors = {int(k): float(v) for k, v in json.loads(meta.get("floors", "{}")).items()}
    return Reference(classifier, mean.double(), cov.double(), floors, manifest)
