"""The health check of a run folder: what in its loss, settings, data and samples looks
wrong, the likely cause and the fix, in plain words (chapter 10's clinic as a function).

    findings = check_run("runs/swiss")          # a list of Finding
    python -m diffusion_lib evaluate --run runs/swiss --check

Each check is one measurement read against a stated threshold; the thresholds come from
chapter 10's experiments, where each failure is reproduced and fixed:

* the loss curve (``metrics.jsonl``): did it rise from its best (learning rate too
  high), was it still falling at the end (stopped early, or learning rate too low), does
  it end inside the band of a healthy run of the dataset's default recipe
  (:data:`REFERENCE_LOSS`, measured for the built-in datasets);
* the settings against the run length: how much weight the EMA of the weights still
  puts on the first half of the run (and the random initialisation), or no EMA at all;
* the data: images that use only a sliver of 0..255 (0..1 floats saved as uint8),
  points with far outliers after standardization;
* the samples (from the latest checkpoint): non-finite values, their spread against the
  data's (training space), their nearest-neighbour distance to fresh toy data against
  the data-vs-data floor (:func:`diffusion_lib.metrics.toy_report`) -- resampled with
  DDPM to tell a too-short sampler from a bad network -- and, on a finite dataset, their
  distance to the nearest training example against the training examples' own
  (memorisation).

Bad input (no such folder, a folder that ``train`` did not write) raises ValueError.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .training.config import defaults_for

__all__ = ["Finding", "check_run", "run_check", "REFERENCE_LOSS", "ema_early_weight",
           "read_loss_curve", "loss_findings", "settings_findings", "RISE_MAX",
           "FALL_MAX", "EMA_EARLY_MAX"]

Severity = Literal["ok", "warning", "problem"]

# The final loss (mean of the last 10% of steps) of the default recipe of each built-in
# dataset, with the settings the loss depends on: epsilon prediction, linear schedule,
# T = 1000. Measured with diffusion_lib.training.train(TrainConfig(dataset=NAME, seed=S))
# at the defaults of DATASET_DEFAULTS, one CPU thread: the 2-D toys at the points defaults
# (3000 steps of 512, seed 0; swiss roll seeds 0 and 1, 0.2359 and 0.2369: the seed moves
# it by 0.4%), digits at its own (2000 steps of 64 on the 32-channel U-Net, seeds 0 and 1,
# 0.0828 and 0.0804: 3%). The band is the measured values widened by 10% each way. A run
# ending above the band fits the noise worse than a finished default run. MNIST and
# CIFAR-10 have no band: their default recipes (100k and 800k steps of the paper's
# networks) are GPU runs, which this band's measurements did not include.
REFERENCE_LOSS: dict[str, tuple[float, float]] = {
    "swissroll": (0.212, 0.261),       # measured 0.2359, 0.2369
    "8gaussians": (0.182, 0.222),      # 0.2020
    "moons": (0.213, 0.261),           # 0.2370
    "checkerboard": (0.223, 0.273),    # 0.2482
    "digits": (0.0724, 0.0911),        # 0.0828, 0.0804
}
RISE_MAX = 0.15        # the loss may end at most 15% above its best (smoothed) value
FALL_MAX = 0.10        # ... and fall at most 10% over the last 40% of the run
NOISE_SE = 3.0        # ... and either change must exceed 3 standard errors of the rows' noise
EMA_EARLY_MAX = 0.05   # the EMA may keep at most 5% weight on the run's first half
EMA_MIN_WINDOW = 10    # an EMA averaging fewer than 10 steps is no EMA
LR_FACTOR = 5.0        # a learning rate 5x from the dataset's default is worth a look


@dataclass
class Finding:
    """One diagnosis: what was measured, against what, and if it failed, why and what to do."""

    name: str                       # e.g. "loss_rising", "ema_too_slow", "memorisation"
    severity: Severity              # "ok", "warning" or "problem"
    summary: str                    # what was measured, in one sentence
    measured: dict[str, float] = field(default_factory=dict)   # the numbers behind it
    threshold: str = ""             # what they were compared with
    cause: str = ""                 # the likely cause (empty when ok)
    fix: str = ""                   # what to change (empty when ok)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _ok(name: str, summary: str, measured: dict, threshold: str) -> Finding:
    return Finding(name, "ok", summary, measured, threshold)


# ------------------------------------------------------------------ the loss curve

def read_loss_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) of ``metrics.jsonl``: one row per log window, torn lines skipped."""
    steps, losses = [], []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("loss"), (int, float)):
                steps.append(int(row["step"]))
                losses.append(float(row["loss"]))
    return np.asarray(steps), np.asarray(losses, dtype=np.float64)


def _band_applies(cfg: dict[str, Any]) -> bool:
    return (cfg.get("prediction_type", "epsilon") == "epsilon"
            and cfg.get("schedule", "linear") == "linear"
            and cfg.get("num_timesteps", 1000) == 1000)


def loss_findings(steps: np.ndarray, losses: np.ndarray, cfg: dict[str, Any]) -> list[Finding]:
    """The loss curve read three ways: a rise from its best, a fall still going on at the
    end, and where it ends against the dataset's :data:`REFERENCE_LOSS` band."""
    if len(losses) < 3:
        return [Finding("loss_curve", "warning", f"metrics.jsonl holds {len(losses)} loss "
                        "value(s): too few to read a curve",
                        {"num_rows": float(len(losses))}, "at least 3 rows",
                        "the run is very short, or log_every is as long as the run",
                        "train longer, or log more often (--log-every)")]
    found = []
    last = steps[-1]
    final = float(losses[steps > 0.9 * last].mean()) if (steps > 0.9 * last).any() \
        else float(losses[-1])
    smooth = np.convolve(losses, np.ones(3) / 3, mode="valid")      # rows i..i+2
    best = float(smooth.min())
    # the scatter of one row about the trend, from the differences of neighbouring rows of
    # the second half: a change smaller than 3 of its standard errors is noise, not a trend
    half = losses[len(losses) // 2:]
    noise = float(np.diff(half).std() / np.sqrt(2)) if len(half) > 2 else 0.0
    n_final = max(1, int((steps > 0.9 * last).sum()))
    lr, default_lr = cfg.get("lr"), _default(cfg, "lr")
    ratio = lr / default_lr if lr and default_lr else 1.0
    # 1. a rise: the learning rate too high (or no clipping) makes the weights wander off
    rise = final / best - 1
    measured = {"final_loss": final, "best_loss": best, "rise": rise, "lr": lr or 0.0,
                "lr_over_default": ratio}
    if rise > RISE_MAX and final - best > NOISE_SE * noise * np.sqrt(1 / n_final + 1 / 3):
        found.append(Finding(
            "loss_rising", "problem", f"the loss ends {rise:.0%} above its best value",
            measured, f"at most {RISE_MAX:.0%} above the best",
            f"a learning rate too high for this run (lr {lr:.3g}, {ratio:.2g} x the "
            f"dataset's default): steps overshoot and the weights drift away from the "
            f"minimum they had found",
            "lower lr (the default, or 3-10x lower), keep grad_clip at 1.0 and a warm-up; "
            "a cosine lr_decay also settles the end of the run"))
    else:
        found.append(_ok("loss_rising", f"the loss ends {rise:.0%} above its best value",
                         measured, f"at most {RISE_MAX:.0%}"))
    # 2. still falling: the run stopped while the loss was improving
    late = steps > 0.6 * last
    before = (steps > 0.4 * last) & ~late
    if before.any():
        middle = float(losses[before].mean())
        fall = middle / final - 1
        measured = {"loss_40_60": middle, "final_loss": final, "fall": fall,
                    "lr_over_default": ratio}
        se = noise * np.sqrt(1 / n_final + 1 / int(before.sum()))
        if fall > FALL_MAX and middle - final > NOISE_SE * se:
            slow = (f"a learning rate too low (lr {lr:.3g}, {ratio:.2g} x the default)"
                    if ratio < 0.5 else "too few training steps")
            found.append(Finding(
                "loss_still_falling", "warning",
                f"the loss fell {fall:.0%} over the last 40% of the run",
                measured, f"at most {FALL_MAX:.0%}",
                f"training stopped before the loss settled: {slow}",
                "resume the run with a larger --steps (the same command continues it)"
                + (", or raise lr towards the default" if ratio < 0.5 else "")))
        else:
            found.append(_ok("loss_still_falling", f"the loss fell {fall:.0%} over the "
                             "last 40% of the run", measured, f"at most {FALL_MAX:.0%}"))
    # 3. the reference band of a finished default run
    name = str(cfg.get("dataset", ""))
    if name in REFERENCE_LOSS and _band_applies(cfg) and not cfg.get("conditional"):
        low, high = REFERENCE_LOSS[name]
        measured = {"final_loss": final, "band_low": low, "band_high": high}
        if final > high:
            found.append(Finding(
                "loss_above_band", "problem",
                f"the final loss {final:.4f} is above the band of a healthy {name} run",
                measured, f"{low:.4f} to {high:.4f} (the default recipe, measured)",
                "the network fits the noise worse than a default run: too few steps, a "
                "learning rate far from the default, or a network too small",
                "start from the dataset's defaults (python -m diffusion_lib train --help), "
                "then change one setting at a time"))
        else:
            found.append(_ok("loss_above_band", f"the final loss {final:.4f} is within or "
                             f"below the {name} band", measured, f"at most {high:.4f}"))
    return found


# ------------------------------------------------------------------ settings and run length

def _default(cfg: dict[str, Any], key: str):
    """The dataset's default of a setting (DATASET_DEFAULTS), as ``train`` would pick it."""
    kind = "points" if cfg.get("model") == "mlp" else "images"
    return defaults_for(str(cfg.get("dataset", "")), kind).get(key)


def ema_early_weight(steps: int, decay: float, warmup: bool = True) -> float:
    """The weight the EMA after ``steps`` updates puts on the weights of the first half of
    the run and on the random initialisation: prod_{k = steps//2}^{steps-1} d_k, with d_k
    the decay of update k (:func:`~diffusion_lib.training.ema_decay_at`). The EMA at the
    half-way step has total weight 1, and every later update multiplies it by d_k."""
    k = np.arange(steps // 2, steps, dtype=np.float64)
    d = np.minimum(decay, (1 + k) / (10 + k)) if warmup else np.full_like(k, decay)
    if (d <= 0).any():
        return 0.0
    return float(np.exp(np.log(d).sum()))


def settings_findings(cfg: dict[str, Any]) -> list[Finding]:
    """The EMA against the run length, and the learning rate against the default."""
    found = []
    steps, decay = int(cfg.get("steps") or 0), float(cfg.get("ema_decay") or 0.0)
    warmup = bool(cfg.get("ema_warmup", True))
    window = 1 / (1 - decay)
    early = ema_early_weight(steps, decay, warmup)
    measured = {"ema_decay": decay, "ema_window_steps": window, "steps": float(steps),
                "weight_on_first_half": early}
    if early > EMA_EARLY_MAX:
        found.append(Finding(
            "ema_too_slow", "problem",
            f"the EMA still puts {early:.0%} of its weight on the first half of the run "
            f"and the random initialisation", measured, f"at most {EMA_EARLY_MAX:.0%}",
            f"ema_decay {decay:g} averages about {window:.0f} steps, too slow for a run of "
            f"{steps} steps" + ("" if warmup else " without the EMA warm-up"),
            f"use ema_decay <= {1 - 10 / max(steps, 20):.4g} for this length (about a tenth "
            f"of the run), or keep ema_warmup on; resampling with --no-ema shows the raw "
            f"weights meanwhile"))
    elif window < EMA_MIN_WINDOW and cfg.get("lr_decay", "none") != "cosine":
        found.append(Finding(
            "no_ema", "warning", f"the EMA averages about {window:.1f} steps: in effect none",
            measured, f"a window of at least {EMA_MIN_WINDOW} steps",
            "samples come from the last weights, which still jump with every step of a "
            "flat learning rate",
            "train with an EMA (ema_decay 0.995 for a few thousand steps, 0.9999 for "
            "100k), or decay the learning rate to 0 (lr_decay cosine)"))
    else:
        found.append(_ok("ema_too_slow", f"the EMA puts {early:.1%} of its weight on the "
                         "first half of the run", measured, f"at most {EMA_EARLY_MAX:.0%}"))
    lr, default_lr = cfg.get("lr"), _default(cfg, "lr")
    if lr and default_lr:
        ratio = lr / default_lr
        measured = {"lr": float(lr), "default_lr": float(default_lr), "ratio": ratio}
        if ratio > LR_FACTOR or ratio < 1 / LR_FACTOR:
            high = ratio > 1
            found.append(Finding(
                "lr_too_high" if high else "lr_too_low", "warning",
                f"lr {lr:.3g} is {ratio:.3g} x the default of this kind of data", measured,
                f"within {LR_FACTOR:g}x of {default_lr:.3g}",
                "steps that overshoot: a loss that rises or jumps" if high else
                "steps too small: the loss falls slowly and the run ends undertrained",
                "try the default learning rate first; read the loss checks above"))
        else:
            found.append(_ok("learning_rate", f"lr {lr:.3g} is {ratio:.3g} x the default",
                             measured, f"within {LR_FACTOR:g}x"))
    return found


# ------------------------------------------------------------------ the whole check

def _read_config(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder")
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{run_dir}: not a run folder (no config.json); expected a folder "
                         f"written by python -m diffusion_lib train --out")
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, OSError) as error:
        raise ValueError(f"{path}: cannot read it as a training config ({error})") from None
    if not isinstance(cfg, dict) or "dataset" not in cfg:
        raise ValueError(f"{path}: not a training config (no dataset field)")
    return cfg


def check_run(run_dir: str | Path, *, device: str | torch.device = "cpu", seed: int = 0,
              num_samples: int | None = None, sampler: str | None = None,
              steps: int | None = None, eta: float = 0.0, use_ema: bool = True,
              batch_size: int | None = None) -> list[Finding]:
    """Every diagnosis of chapter 10's clinic that applies to a run folder.

    Reads ``config.json`` and ``metrics.jsonl``, loads the training data, and, when the
    folder holds a checkpoint, draws ``num_samples`` samples (default 1000 points or 64
    images) with the given sampler and seed (None: DDPM for points, DDIM with 50 steps
    for images, whose DDPM costs 1000 U-Net calls a sample on a CPU). Returns the
    findings in that order, each "ok", "warning" or "problem". Raises ValueError if
    ``run_dir`` is not a run folder.
    """
    from .diagnose_samples import data_findings, sample_findings  # it imports Finding

    if sampler not in (None, "ddpm", "ddim"):
        raise ValueError(f"sampler must be ddpm or ddim, got {sampler!r}")
    if sampler == "ddpm" and steps is not None:
        raise ValueError("steps are for the DDIM sampler (DDPM runs all T steps)")
    run_dir = Path(run_dir)
    cfg = _read_config(run_dir)
    found = loss_findings(*read_loss_curve(run_dir), cfg)
    found += settings_findings(cfg)
    data, more = data_findings(cfg)
    found += more
    found += sample_findings(run_dir, cfg, data, device=device, seed=seed,
                             num_samples=num_samples, sampler=sampler, steps=steps, eta=eta,
                             use_ema=use_ema, batch_size=batch_size)
    return found


def _format(finding: Finding) -> str:
    label = {"ok": "ok     ", "warning": "WARNING", "problem": "PROBLEM"}[finding.severity]
    lines = [f"[{label}] {finding.name}: {finding.summary} ({finding.threshold})"]
    if finding.severity != "ok":
        lines += [f"          cause: {finding.cause}", f"          fix:   {finding.fix}"]
    return "\n".join(lines)


def run_check(args, json_path: Path) -> int:
    """``evaluate --check``: print the findings readably and write them as JSON (atomically)
    to ``json_path``; returns 0 (a finding is a result, not an error)."""
    from .training import resolve_device
    from .training.checkpoint import atomic_write_text

    device = resolve_device(args.device)
    findings = check_run(args.run, device=device, seed=args.seed,
                         num_samples=args.num_samples, sampler=args.sampler,
                         steps=args.steps, eta=args.eta or 0.0, use_ema=not args.no_ema,
                         batch_size=args.batch_size)
    for finding in findings:
        print(_format(finding))
    problems = [f.name for f in findings if f.severity == "problem"]
    warnings = [f.name for f in findings if f.severity == "warning"]
    print(f"{len(problems)} problem(s), {len(warnings)} warning(s)"
          + (f": {', '.join(problems + warnings)}" if problems or warnings else ""))
    result = {"run": str(Path(args.run).resolve()), "problems": problems,
              "warnings": warnings, "findings": [f.to_dict() for f in findings]}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(result, indent=2, default=_plain) + "\n")
    print(f"wrote {json_path}")
    return 0


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value.tolist() if hasattr(value, "tolist") else str(value)
