"""The health check's data and sample diagnoses (see :mod:`diffusion_lib.diagnose`,
chapter 10): the training data's range, and what a run's samples show against it.

* the data: 8-bit images whose values use only a sliver of 0..255 (floats in [0, 1]
  saved as uint8 become 0 and 1: training space [-1, -0.99]); points with far outliers;
* the samples: non-finite values; their spread per dimension against the data's
  (training space); for a 2-D toy, the nearest-neighbour ratio of
  :func:`diffusion_lib.metrics.toy_report` (1 for a second data sample, 0.97-1.09 for
  the default 2-D runs); a failing
  DDIM sampler is told apart from a failing network by resampling with DDPM;
* memorisation, on a finite dataset: the median distance of a sample to its nearest
  training example, over the median distance of a training example to its nearest
  other one. Fresh data from the same law scores about 1; samples that copy the
  training set score near 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .data import TOY_NAMES, load_dataset
from .diagnose import Finding

__all__ = ["data_findings", "sample_findings", "memorisation_ratio", "LEVELS_MIN",
           "OUTLIER_MAX", "SCALE_RANGE", "NN_RATIO_MAX", "MEMORISATION_MIN"]

LEVELS_MIN = 32          # images should span at least 32 of the 256 grey levels
OUTLIER_MAX = 10.0       # standardized points beyond 10 std are far outliers
SCALE_RANGE = (0.7, 1.4)  # sample std / data std, per dimension (points) or overall (images)
NN_RATIO_MAX = 1.5       # toy_report's nn_ratio: 0.97-1.09 for the default 2-D runs
MEMORISATION_MIN = 0.5   # samples closer than half the data's own spacing copy the data


def data_findings(cfg: dict[str, Any]):
    """(the training dataset or None, findings) for the data a run trained on."""
    try:
        dataset = load_dataset(cfg["dataset"], split="train", data_dir=cfg.get("data_dir"),
                               seed=int(cfg.get("seed") or 0))
    except (ValueError, OSError) as error:
        return None, [Finding(
            "data", "warning", f"the training data cannot be read here ({error})", {},
            "the data the run trained on", "the run was trained elsewhere, or the file moved",
            "run the check where the data is (or pass the same --data-dir to train)")]
    n = min(dataset.num_examples, 2000)
    x = dataset.get_batch(0, n, seed=int(cfg.get("seed") or 0)).double()   # (n, ...)
    if dataset.kind == "images":
        u = ((x + 1) * 127.5).round()                                     # back to 0..255
        low, high = float(u.min()), float(u.max())
        measured = {"lowest_value": low, "highest_value": high, "levels": high - low}
        if high - low < LEVELS_MIN:
            return dataset, [Finding(
                "data_range", "problem",
                f"the images use only the values {low:.0f}..{high:.0f} of 0..255", measured,
                f"a span of at least {LEVELS_MIN} grey levels",
                "images in [0, 1] saved as uint8 (every pixel 0 or 1), so the network sees "
                "data squeezed into [-1, -0.99] instead of [-1, 1]",
                "save (images * 255).round().astype(np.uint8), so the data fills 0..255")]
        return dataset, [Finding("data_range", "ok", f"the images span {low:.0f}..{high:.0f}",
                                  measured, f"at least {LEVELS_MIN} levels")]
    far = float(x.abs().max())
    measured = {"largest_abs_standardized": far}
    if far > OUTLIER_MAX:
        return dataset, [Finding(
            "data_range", "warning", f"a standardized point lies {far:.0f} std from the mean",
            measured, f"at most {OUTLIER_MAX:g} std",
            "far outliers: standardizing by the std squeezes the bulk of the data into a "
            "small region, which the network then resolves poorly",
            "remove the outliers, or transform the data (a log) before training")]
    return dataset, [Finding("data_range", "ok", f"standardized points lie within {far:.1f} "
                              "std", measured, f"at most {OUTLIER_MAX:g}")]


def memorisation_ratio(samples: Tensor, train: Tensor, max_reference: int = 1000) -> float:
    """median_i min_j |s_i - x_j| over median_j min_{k != j} |x_j - x_k|: samples' distance
    to the nearest training example against the training examples' own spacing (rows
    flattened; float64). About 1 for fresh data of the same law, near 0 for copies."""
    s = samples.reshape(len(samples), -1).double()
    x = train.reshape(len(train), -1).double()
    to_train = torch.cdist(s, x).amin(1)                                  # (N,)
    ref = x[:max_reference]
    own = torch.cdist(ref, x)                                             # (R, M)
    own[torch.arange(len(ref)), torch.arange(len(ref))] = float("inf")   # not itself
    spacing = own.amin(1).median()
    return float(to_train.median() / spacing) if spacing > 0 else float("nan")


def _spread(x: Tensor, ref: Tensor, kind: str) -> tuple[float, float]:
    """(smallest, largest) sample-std / data-std: per dimension for points, overall for
    images."""
    if kind == "images":
        r = float(x.std() / ref.std())
        return r, r
    r = x.std(0) / ref.std(0)
    return float(r.min()), float(r.max())


def sample_findings(run_dir: Path, cfg: dict[str, Any], dataset, *, device="cpu",
                    seed: int = 0, num_samples: int | None = None, sampler: str | None = None,
                    steps: int | None = None, eta: float = 0.0, use_ema: bool = True,
                    batch_size: int | None = None) -> list:
    """The samples of the run's latest checkpoint against the data (see the module)."""
    from .metrics import nearest_neighbour_distance, reference_points
    from .training import generate, latest_checkpoint, load_run, to_data_space

    if latest_checkpoint(run_dir) is None:
        return [Finding("samples", "warning", "no checkpoint yet: samples not checked", {},
                         "a checkpoint in checkpoints/", "the run stopped before its first "
                         "checkpoint", "train until a checkpoint is written")]
    run = load_run(run_dir, device=device, use_ema=use_ema)
    kind = run.data["kind"]
    N = num_samples or (1000 if kind == "points" else 64)
    sampler = sampler or ("ddpm" if kind == "points" else "ddim")

    def draw(how: str, count: int) -> Tensor:
        return generate(run.model, run.schedule, tuple(run.data["sample_shape"]), count,
                        kind=kind, sampler=how, steps=steps, eta=eta, seed=seed,
                        batch_size=batch_size, prediction_type=run.config["prediction_type"])

    x = draw(sampler, N)                                      # (N, ...) training space
    flat = x.reshape(N, -1)
    finite = flat.isfinite().all(1)
    found = []
    how = "DDPM" if sampler == "ddpm" else f"DDIM {steps or 50} steps"
    if not bool(finite.all()):
        found.append(Finding(
            "samples_nonfinite", "problem", f"{int((~finite).sum())} of {N} samples hold "
            "NaN or inf", {"nonfinite": float((~finite).sum())}, "none",
            "the network or the sampler diverged", "check the loss curve; sample with DDPM"))
    x = x[finite]
    if dataset is None or len(x) < 2:
        return found
    ref = dataset.get_batch(0, min(dataset.num_examples, 5000), seed=seed).double().cpu()

    def quality(points: Tensor) -> dict[str, float]:
        low, high = _spread(points.double(), ref, kind)
        scores = {"std_ratio_min": low, "std_ratio_max": high}
        if dataset.name in TOY_NAMES:          # toy_report's headline, without its KL
            ref_a, ref_b = reference_points(dataset.name, len(points), seed, num_sets=2)
            mine = to_data_space(points, run.data)
            scores["nn_ratio"] = (nearest_neighbour_distance(mine, ref_a)
                                  / nearest_neighbour_distance(ref_b, ref_a))
        return scores

    def bad(s: dict[str, float]) -> bool:
        return (s["std_ratio_min"] < SCALE_RANGE[0] or s["std_ratio_max"] > SCALE_RANGE[1]
                or s.get("nn_ratio", 0.0) > NN_RATIO_MAX)

    scores = quality(x)
    limits = (f"std ratio {SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g}"
              + (f", nn_ratio <= {NN_RATIO_MAX:g}" if "nn_ratio" in scores else ""))
    summary = ", ".join(f"{k} {v:.3g}" for k, v in scores.items())
    if not bad(scores):
        found.append(Finding("samples_vs_data", "ok", f"{how} samples: {summary}", scores,
                              limits))
    elif sampler == "ddim":                  # the sampler, or the network? resample with DDPM
        again = draw("ddpm", min(N, 1000))
        ddpm = quality(again[again.reshape(len(again), -1).isfinite().all(1)])
        measured = {**scores, **{f"ddpm_{k}": v for k, v in ddpm.items()}}
        if not bad(ddpm):
            found.append(Finding(
                "sampler_too_coarse", "problem",
                f"{how} samples miss the data ({summary}), DDPM samples of the same network "
                "do not", measured, limits,
                f"too few sampling steps: each DDIM jump of {(steps or 50)} lands on a blur of "
                "the data (chapter 8)",
                "sample with more steps (--steps 100 or more), or with DDPM"))
        else:
            found.append(_bad_samples(how, summary, measured, limits, scores))
    else:
        found.append(_bad_samples(how, summary, scores, limits, scores))
    if dataset.name not in TOY_NAMES and dataset.num_examples <= 20_000:
        ratio = memorisation_ratio(x, dataset.all_data().cpu())
        epochs = int(cfg.get("steps") or 0) * int(cfg.get("batch_size") or 0) \
            / dataset.num_examples
        measured = {"memorisation_ratio": ratio, "num_examples": float(dataset.num_examples),
                    "epochs": epochs}
        if ratio < MEMORISATION_MIN:
            found.append(Finding(
                "memorisation", "problem",
                f"samples lie {ratio:.2f} x as close to a training example as the examples "
                "lie to each other: they copy the training set", measured,
                f"at least {MEMORISATION_MIN:g} (fresh data: about 1)",
                f"{dataset.num_examples} examples seen {epochs:.0f} times each: the network "
                "has learned the denoiser of these points, not of their distribution",
                "more data, fewer steps or a smaller network; keep a held-out set to check"))
        else:
            found.append(Finding("memorisation", "ok", f"samples' distance to the nearest "
                                  f"training example is {ratio:.2f} x the data's own spacing",
                                  measured, f"at least {MEMORISATION_MIN:g}"))
    return found


def _bad_samples(how, summary, measured, limits, scores):
    narrow = scores["std_ratio_min"] < SCALE_RANGE[0]
    return Finding(
        "samples_vs_data", "problem", f"{how} samples miss the data ({summary})", measured,
        limits,
        "the network has not learned the data: samples " + (
            "too narrow (an EMA that still holds early weights, or too little training)"
            if narrow else "too spread out or off the data (too little training, or a "
            "learning rate far off)"),
        "read the loss and EMA checks above; train longer or from the default settings")
