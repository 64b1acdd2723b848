"""Command line: ``python -m diffusion_lib {train, sample, evaluate}`` (or ``diffusion-lib``).

* ``train``: :func:`diffusion_lib.training.train` (Ho et al. 2020, Algorithm 1); re-running
  the same command resumes from the run folder's latest checkpoint. Under
  ``torchrun --nproc_per_node=N -m diffusion_lib train ...`` it trains with DDP.
* ``sample``: DDPM (Algorithm 2) or DDIM (Song et al. 2021) samples of a run, as a
  ``.npy`` in the data's own space or a ``.png`` picture.
* ``evaluate``: sample quality and likelihood with :mod:`diffusion_lib.metrics`.

A run trained with ``--conditional`` samples given classes, ``sample --label K`` (several
``--label``, or ``--label all``), with classifier-free guidance ``--guidance W``
(Ho & Salimans 2022, chapter 9); without ``--label`` it samples unconditionally.

A user mistake (a bad value, an unknown dataset, a run folder without a checkpoint...)
prints one line, ``error: ...``, to stderr and exits with code 2, having written nothing.
Exit codes: 0 done; 2 a user mistake, bad data or a bad run folder (found before any
work); 1 training stopped (a NaN loss, a failed write such as a full disk: the line
names the last good checkpoint); 130 / 143 SIGINT (Ctrl-C) / SIGTERM: a checkpoint of
the step reached was saved, and re-running the same command resumes from it.
Chapters 6 and 7 of the book show these commands next to the notebook code.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main", "build_parser"]


class UsageError(Exception):
    """A mistake in the command line; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):                  # one line, no usage dump
        raise UsageError(message)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _float_range(low: float, high: float = math.inf, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = (value > low if low_open else value >= low) and value <= high and math.isfinite(value)
        if not ok:
            bound = f"> {low}" if low_open else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}"
                                             + (f" and <= {high}" if high < math.inf else "")
                                             + f", got {text}")
        return value
    return parse


def _override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), tuple(parsed) if isinstance(parsed, list) else parsed


def _defaults_epilog() -> str:
    from .training.config import DATASET_DEFAULTS
    rows = {"points": "swissroll, moons, 8gaussians, checkerboard, any .npy of (N, D) points",
            "digits": "scikit-learn's 8x8 digits (bundled, CPU)",
            "mnist": "mnist and fashion-mnist (GPU)", "cifar10": "cifar10 (GPU, the paper's)",
            "images": "a folder or .npy of other images"}
    lines = ["defaults per dataset (flags override them):"]
    for key, what in rows.items():
        d = DATASET_DEFAULTS[key]
        how = ("DDPM" if d["preview_sampler"] == "ddpm" else "DDIM, 16 images x 50 steps on a "
               "CPU, 64 x 100 on CUDA")
        model = d["model"] or "a U-Net sized to the images"
        if d["model_overrides"]:
            model += " with " + ", ".join(f"{k}={v}" for k, v in d["model_overrides"].items())
        lines.append(f"  {key}: {what}\n    model {model}, steps {d['steps']}, batch "
                     f"{d['batch_size']}, lr {d['lr']:g}"
                     f"{' cosine-decayed to 0' if d['lr_decay'] == 'cosine' else ''}, warm-up "
                     f"{d['warmup_steps']}, grad clip "
                     f"{d['grad_clip']:g}, EMA {d['ema_decay']}, checkpoint every "
                     f"{d['checkpoint_every']}, sample PNG every {d['sample_every']} ({how})")
    lines.append("all: linear schedule, T = 1000, eps prediction, AdamW without weight decay, "
                 "seed 0, fp32, device auto (cuda, mps, cpu). Re-running resumes from RUN_DIR.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m diffusion_lib",
                     description="Train, sample and evaluate DDPMs (Dive into Diffusion).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,evaluate}")
    pos, nonneg = _int_at_least(1), _int_at_least(0)

    t = sub.add_parser("train", help="train a DDPM (resumes a run folder)",
                       description="Train a DDPM, Ho et al. 2020 Algorithm 1. Re-running the "
                                   "same command resumes from the latest checkpoint.",
                       epilog=_defaults_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--dataset", required=True,
                   help="built-in name, or a .npy/.npz file or a folder of images")
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    t.add_argument("--data-dir", help="where mnist / cifar10 files are (default ./data)")
    t.add_argument("--download", action="store_true", help="let torchvision download the data")
    t.add_argument("--model", help="network preset: ddpm-cifar10, ddpm-mnist, digits, tiny, mlp")
    t.add_argument("--model-override", action="append", type=_override, default=[],
                   metavar="KEY=VALUE", help="a field of the preset's config, e.g. hidden=64")
    t.add_argument("--steps", type=pos, help="optimizer steps in total")
    t.add_argument("--batch-size", type=pos, help="examples per step (per process)")
    t.add_argument("--lr", type=_float_range(0, low_open=True), help="peak learning rate")
    t.add_argument("--warmup-steps", type=nonneg, help="linear LR warm-up steps")
    t.add_argument("--lr-decay", choices=("none", "cosine"),
                   help="after warm-up: flat (DDPM) or a half cosine down to 0")
    t.add_argument("--weight-decay", type=_float_range(0), default=0.0)
    t.add_argument("--grad-clip", type=_float_range(0), help="max gradient norm, 0: off")
    t.add_argument("--ema-decay", type=_float_range(0, 0.999999999))
    t.add_argument("--no-ema-warmup", action="store_true", help="constant EMA decay from step 0")
    t.add_argument("--schedule", choices=("linear", "cosine"), default="linear")
    t.add_argument("--num-timesteps", type=pos, default=1000, help="T (default 1000)")
    t.add_argument("--prediction-type", choices=("epsilon", "x0", "v"), default="epsilon")
    t.add_argument("--conditional", action="store_true",
                   help="class-conditional on the data's labels, for sample --label and "
                        "--guidance (labelled data: the image sets, 8gaussians, moons, a .npz "
                        "with x and y, a folder with a sub-folder per class)")
    t.add_argument("--p-uncond", type=_float_range(0, 1),
                   help="with --conditional: the share of labels dropped to 'no class', so "
                        "one network also learns the unconditional model (default 0.1)")
    t.add_argument("--seed", type=nonneg, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16 autocast (fp32 master weights and EMA): CUDA, or a CPU with "
                        "native bfloat16 (AVX512-BF16, AMX, Arm BF16); refused elsewhere")
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="default: on for images on CUDA")
    t.add_argument("--compile", action="store_true", help="torch.compile the network")
    t.add_argument("--checkpoint-every", type=pos)
    t.add_argument("--sample-every", type=nonneg, help="steps between sample PNGs; 0: none")
    t.add_argument("--log-every", type=pos)
    t.add_argument("--num-preview", type=pos,
                   help="samples in each PNG (default: 500 points; images 16 on a CPU, 64 on "
                        "CUDA)")
    t.add_argument("--preview-sampler", choices=("ddpm", "ddim"),
                   help="sampler of the PNGs (default: DDPM for points, DDIM for images)")
    t.add_argument("--preview-steps", type=pos,
                   help="DDIM steps of the PNGs (default: 50 on a CPU, 100 on CUDA)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--threads", type=pos, help="CPU threads (default: torch's; 1 is best on a "
                                               "busy machine)")

    s = sub.add_parser("sample", help="draw samples from a run",
                       description="Sample a trained run: DDPM (Ho et al. 2020, Algorithm 2) or "
                                   "DDIM (Song et al. 2021). .npy: the data's own space (float32 "
                                   "points, uint8 (N, H, W, C) images); .png: a picture.")
    s.add_argument("--run", required=True, metavar="RUN_DIR")
    s.add_argument("--num-samples", type=pos, required=True)
    s.add_argument("--out", required=True, metavar="FILE",
                   help=".npy, .png, or .npz (samples x, and labels y with --label)")
    s.add_argument("--label", action="append", metavar="K",
                   help="a conditional run: the class to sample (a number 0..K-1 or a class "
                        "name), --num-samples of each; repeat it, or 'all' for every class")
    _sampling_args(s, pos)

    e = sub.add_parser("evaluate", help="sample quality and likelihood of a run",
                       description="Evaluate a run with diffusion_lib.metrics: energy distance "
                                   "for 2-D data; bits/dim and Frechet distance for images.")
    e.add_argument("--run", required=True, metavar="RUN_DIR")
    e.add_argument("--num-samples", type=pos, help="default 2000 points / 1000 images")
    e.add_argument("--json", metavar="FILE", help="default RUN_DIR/eval.json")
    e.add_argument("--check", action="store_true",
                   help="a health check of the run instead: what in its loss, settings, data "
                        "and samples looks wrong, the likely cause and the fix (chapter 10); "
                        "writes RUN_DIR/check.json unless --json")
    _sampling_args(e, pos)
    return parser


def _sampling_args(p, pos) -> None:
    p.add_argument("--sampler", choices=("ddpm", "ddim"),
                   help="default: ddpm (Algorithm 2, T steps), or the sampler a released "
                        "model's MANIFEST.json recommends (book/models/mnist: ddim, 50 steps)")
    p.add_argument("--steps", type=pos, help="DDIM steps (default 50)")
    p.add_argument("--eta", type=_float_range(0), default=None, help="DDIM eta (default 0)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--guidance", type=_float_range(0), metavar="W",
                   help="a conditional run: classifier-free guidance weight w, (1 + w) "
                        "eps(x, y) - w eps(x) (default 0: the conditional model)")
    p.add_argument("--no-ema", action="store_true", help="the raw weights, not their EMA")
    p.add_argument("--batch-size", type=pos)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=pos, help="CPU threads (default: torch's)")


def _check_writable(path: Path, what: str) -> None:
    """UsageError unless ``path`` can be created: probe the nearest existing folder above it."""
    parent = path.parent if path.is_file() else path      # an existing file is overwritten
    try:
        while not parent.exists():
            if parent.parent == parent:
                break
            parent = parent.parent
        if parent != path and not parent.is_dir():
            raise UsageError(f"cannot create {what} {path}: {parent} is not a folder")
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise UsageError(f"cannot write {what} {path}: {error.strerror or error}") from None


def _cmd_train(args) -> int:
    from .data import DATASETS
    from .training import TrainConfig, train

    out = Path(args.out).expanduser()
    if args.p_uncond is not None and not args.conditional:
        raise UsageError("--p-uncond is for --conditional training")
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a folder for the run")
    except OSError as error:                  # e.g. a folder above it we may not enter
        raise UsageError(f"cannot use run folder {out}: {error.strerror or error}") from None
    _check_writable(out, "run folder")
    dataset = args.dataset
    if dataset.strip().lower() not in DATASETS and Path(dataset).expanduser().exists():
        dataset = str(Path(dataset).expanduser().resolve())     # resumable from anywhere
    config = TrainConfig(
        dataset=dataset, out=str(out.resolve()),
        data_dir=None if args.data_dir is None else str(Path(args.data_dir).expanduser().resolve()),
        download=args.download, model=args.model, model_overrides=dict(args.model_override),
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        lr_decay=args.lr_decay,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
        ema_warmup=not args.no_ema_warmup, schedule=args.schedule,
        num_timesteps=args.num_timesteps, prediction_type=args.prediction_type, seed=args.seed,
        device=args.device, precision=args.precision, channels_last=args.channels_last,
        compile=args.compile, checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every, log_every=args.log_every, num_preview=args.num_preview,
        preview_sampler=args.preview_sampler, preview_steps=args.preview_steps,
        progress=not args.no_progress, conditional=args.conditional,
        **({} if args.p_uncond is None else {"p_uncond": args.p_uncond}))
    result = train(config)
    if os.environ.get("RANK", "0") == "0" and result.steps.size:        # rank 0 reports
        print(f"trained {result.config.dataset} to step {result.step} in {result.seconds:.1f} s, "
              f"final loss {float(result.losses[-100:].mean()):.4f}; run folder {result.run_dir}")
    return 0


def _load_for_sampling(args, manifest: dict | None = None):
    """The run's network on the device, after checking the sampling flags; ``manifest``: the
    folder's release manifest when the caller has read it already ({} for none)."""
    from .training import load_run, resolve_device

    if args.sampler is None:                 # the paper's sampler, or a release's advice
        if manifest is None:
            manifest = _release_manifest(args.run)
        advice = manifest.get("sampler") or {}
        args.sampler = advice.get("name", "ddpm")
        if args.sampler == "ddim" and args.steps is None:
            args.steps = advice.get("steps")
    if args.sampler == "ddpm" and (args.steps is not None or args.eta is not None):
        raise UsageError("--steps and --eta are for --sampler ddim (DDPM runs all T steps)")
    device = resolve_device(args.device)
    run = load_run(args.run, device=device, use_ema=not args.no_ema)
    T = run.config["num_timesteps"]
    if args.sampler == "ddim" and args.steps is not None and args.steps > T:
        raise UsageError(f"--steps {args.steps} is more than the run's T = {T} diffusion steps")
    asked = [f for f, v in (("--label", getattr(args, "label", None)),
                            ("--guidance", args.guidance)) if v is not None]
    if asked and not run.data.get("num_classes"):
        raise UsageError(f"{' and '.join(asked)}: {args.run} holds an unconditional run; "
                         f"train with --conditional to sample classes")
    return run


def _release_manifest(run_dir) -> dict:
    """The MANIFEST.json of a released model folder (diffusion_lib.pretrained), or {}."""
    from .pretrained import MANIFEST_NAME, read_manifest
    if not (Path(run_dir) / MANIFEST_NAME).is_file():
        return {}
    return read_manifest(run_dir)


def _labels(run, texts: list[str]) -> list[int]:
    """The classes that --label names: numbers 0..K-1, class names, or 'all'."""
    names = run.data["class_names"]
    K = len(names)
    if "all" in texts:
        return list(range(K))
    labels = []
    for text in texts:
        if text in names:
            labels.append(names.index(text))
        elif text.strip().lstrip("-").isdigit() and 0 <= int(text) < K:
            labels.append(int(text))
        else:
            shown = ", ".join(names[:12]) + (", ..." if K > 12 else "")
            raise UsageError(f"--label {text}: not a class of this run; expected 0..{K - 1}, "
                             f"a class name ({shown}) or 'all'")
    return list(dict.fromkeys(labels))


def _draw(run, args, num_samples: int):
    from .training import generate, to_data_space
    x = generate(run.model, run.schedule, tuple(run.data["sample_shape"]), num_samples,
                 kind=run.data["kind"], sampler=args.sampler, steps=args.steps,
                 eta=args.eta or 0.0, seed=args.seed, batch_size=args.batch_size,
                 prediction_type=run.config["prediction_type"], progress=not args.no_progress)
    return to_data_space(x, run.data)


def _draw_classes(run, args, num_per_class: int, labels: list[int]):
    """num_per_class guided samples of each class, in the data's space, and their labels."""
    from .training import to_data_space
    from .training.conditional import generate_per_class
    x, y = generate_per_class(run.model, run.schedule, tuple(run.data["sample_shape"]),
                              num_per_class, labels, guidance_scale=args.guidance or 0.0,
                              kind=run.data["kind"], sampler=args.sampler, steps=args.steps,
                              eta=args.eta or 0.0, seed=args.seed, batch_size=args.batch_size,
                              prediction_type=run.config["prediction_type"],
                              progress=not args.no_progress)
    return to_data_space(x, run.data), y.numpy()


def _cmd_sample(args) -> int:
    import numpy as np

    from .training import save_png
    from .training.checkpoint import atomic_write_bytes

    out = Path(args.out).expanduser()
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".png", ".npz"):
        raise UsageError(f"--out must end in .npy or .png (or .npz), got {out.name!r}")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name ending in .npy or .png")
    if args.guidance is not None and not args.label:
        raise UsageError("--guidance needs --label: the class to guide towards")
    _check_writable(out, "output file")
    run = _load_for_sampling(args)
    labels = None
    if args.label:
        samples, labels = _draw_classes(run, args, args.num_samples, _labels(run, args.label))
    else:
        samples = _draw(run, args, args.num_samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    how = "DDPM" if args.sampler == "ddpm" else f"DDIM {args.steps or 50} steps"
    if suffix in (".npy", ".npz"):
        buffer = io.BytesIO()
        if suffix == ".npy":                            # classes one after the other
            np.save(buffer, samples)
        else:
            np.savez(buffer, x=samples, **({} if labels is None else {"y": labels}))
        atomic_write_bytes(out, buffer.getvalue())
    elif labels is not None:
        from .training.conditional import save_class_png
        guided = f", guidance {args.guidance:g}" if args.guidance else ""
        save_class_png(samples, labels, out, kind=run.data["kind"],
                       class_names=run.data["class_names"],
                       title=f"{run.data['name']}, step {run.step}, {how}{guided}")
    else:
        save_png(samples, out, kind=run.data["kind"],
                 title=f"{run.data['name']}, step {run.step}, {how}")
    which = ""
    if labels is not None:
        classes = sorted(set(labels.tolist()))
        which = (f" of class {run.data['class_names'][classes[0]]}" if len(classes) == 1
                 else f" of {len(classes)} classes")
    print(f"wrote {len(samples)} samples{which} {samples.dtype} {samples.shape[1:]} to {out}")
    return 0


def _cmd_evaluate(args) -> int:
    if args.check:
        return _cmd_check(args)
    from .data import load_dataset

    manifest = _release_manifest(args.run)                 # {} unless a released model
    json_path = Path(args.json).expanduser() if args.json else Path(args.run) / "eval.json"
    if not args.json and manifest:                         # a released folder stays as shipped
        json_path = Path("eval.json")
    _check_writable(json_path, "JSON file")
    try:
        from . import metrics
    except ImportError as error:
        raise UsageError(f"evaluate needs diffusion_lib.metrics ({error})") from None
    run = _load_for_sampling(args, manifest)
    cfg = run.config
    kind = run.data["kind"]
    num = args.num_samples or (2000 if kind == "points" else 1000)
    if manifest.get("classifier"):          # a released model: its reference classifier
        report = _release_report(run, args, manifest, num)
        return _write_report(args, run, num, report, json_path)
    samples = _draw(run, args, num)

    def load(split):
        return load_dataset(cfg["dataset"], split=split, data_dir=cfg["data_dir"],
                            seed=cfg["seed"], device=run.schedule.betas.device)
    if kind == "points":
        report = _call(metrics.toy_report, samples, load("test"), seed=args.seed)
    else:
        report = _call(metrics.image_report, samples, load("train"), load("test"),
                       model=run.model, schedule=run.schedule, seed=args.seed,
                       device=run.schedule.betas.device, prediction_type=cfg["prediction_type"],
                       classifier_path=Path(args.run) / metrics.CLASSIFIER_FILENAME)
    if run.data.get("num_classes"):             # a conditional run: each class's samples too
        K = run.data["num_classes"]
        x, y = _draw_classes(run, args, max(1, num // K), list(range(K)))
        if kind == "points":
            report.update(metrics.class_report(x, y, load("test"), seed=args.seed))
        else:
            train_set, test_set = load("train"), load("test")
            classifier, _ = metrics.train_feature_classifier(
                train_set, test_set, seed=args.seed, device=run.schedule.betas.device,
                cache_path=Path(args.run) / metrics.CLASSIFIER_FILENAME)
            report.update(metrics.class_report(x, y, train_set, seed=args.seed,
                                               classifier=classifier, dataset_test=test_set))
        report["guidance"] = args.guidance or 0.0
    return _write_report(args, run, num, report, json_path)


def _release_report(run, args, manifest: dict, num: int) -> dict:
    """Scores of a released model with the reference classifier its manifest names: no
    dataset needed. Unlabelled samples (Frechet distance, floor, class shares) and, for a
    conditional model, num // K samples of each class at --guidance (class accuracy)."""
    from .pretrained import load_reference
    reference = load_reference(Path(args.run) / manifest["classifier"],
                               device=run.schedule.betas.device)
    report = {"reference": manifest["classifier"],
              "unconditional": reference.score(_draw(run, args, num))}
    if run.data.get("num_classes"):
        K = run.data["num_classes"]
        x, y = _draw_classes(run, args, max(1, num // K), list(range(K)))
        report[f"guidance_{args.guidance or 0:g}"] = reference.score(x, y)
    report["manifest_quality"] = manifest.get("quality")
    return report


def _write_report(args, run, num: int, report: dict, json_path: Path) -> int:
    from .training.checkpoint import atomic_write_text
    result = {"run": str(Path(args.run).resolve()), "step": run.step, "num_samples": num,
              "seed": args.seed, "sampler": args.sampler, "sampler_steps": args.steps,
              "ema": not args.no_ema, **report}
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key == "manifest_quality":
            continue
        print(f"{key:<{width}}  {_shown(value)}")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(result, indent=2, default=_jsonable) + "\n")
    print(f"wrote {json_path}")
    return 0


def _cmd_check(args) -> int:
    """evaluate --check: the health check of diffusion_lib.diagnose, printed and saved as JSON."""
    from .diagnose import run_check
    json_path = Path(args.json).expanduser() if args.json else Path(args.run) / "check.json"
    _check_writable(json_path, "JSON file")
    return run_check(args, json_path)


def _shown(value) -> str:
    """A number, a list of numbers or a dict of them, printed short."""
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return " ".join(f"{v:.3g}" for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items()
                         if not isinstance(v, (dict, list)))
    return str(value)


def _call(fn, *args, **kwargs):
    """fn(*args, **kwargs), passing only the keyword arguments fn accepts."""
    import inspect
    accepted = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in kwargs.items() if k in accepted})


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for a user mistake)."""
    from .training import TrainingError
    from .training.engine import TrainingInterrupted

    try:
        args = build_parser().parse_args(argv)
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        command = {"train": _cmd_train, "sample": _cmd_sample, "evaluate": _cmd_evaluate}
        return command[args.command](args)
    except UsageError as error:
        _one_line(error)
        return 2
    except ModuleNotFoundError as error:     # an optional package a feature needs
        _one_line(_missing_package(error))
        return 2
    except ValueError as error:             # DataError, ConfigError, CheckpointError, ...
        _one_line(error)
        return 2
    except TrainingInterrupted as error:     # SIGINT / SIGTERM, after a checkpoint
        _one_line(error, "interrupted")
        return 128 + int(error.signum)
    except TrainingError as error:
        _one_line(error)
        return 1
    except OSError as error:                # a write that failed outside training's checks
        _one_line(error)
        return 1
    except KeyboardInterrupt:
        _one_line("interrupted; re-run the same command to resume from the last checkpoint")
        return 130


# optional packages and the extra of diffusion_lib that installs each
_EXTRAS = {"torchvision": "vision", "PIL": "vision", "diffusers": "bench"}


def _missing_package(error: ModuleNotFoundError) -> str:
    top = (error.name or "").split(".")[0]
    extra = _EXTRAS.get(top)
    if extra is None:
        return f"{error} (reinstall diffusion_lib: pip install diffusion_lib)"
    return f'{top} is not installed: pip install "diffusion_lib[{extra}]"'


def _one_line(message, prefix: str = "error") -> None:
    text = " ".join(str(message).split())
    print(f"{prefix}: {text}", file=sys.stderr)
