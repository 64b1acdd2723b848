"""The training loop: Ho et al. 2020, Algorithm 1, with the engineering a real run needs.

    repeat
        x_0 ~ q(x_0)                        dataset.get_batch(step, ...)
        t ~ Uniform({1, ..., T})            0-indexed here: t in {0, ..., T-1}
        eps ~ N(0, I)
        gradient step on || eps - eps_theta(sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps, t) ||^2
    until converged

The loss is :func:`diffusion_lib.losses.l_simple` (Eq. 14); the rest is engineering: AdamW
with linear warm-up, gradient clipping, an EMA of the weights (:mod:`.ema`), checkpoints
(:mod:`.checkpoint`) from which a re-run resumes bit for bit, bf16 autocast on CUDA and
on CPUs with native bfloat16 (:mod:`.precision`), channels-last on CUDA, torch.compile,
and DistributedDataParallel (:mod:`.distributed`).
Chapter 6 trains on 2-D points with it, chapter 7 on images.

Every random draw of step k -- the batch, t, eps, and dropout -- is a pure function of
(seed, k, rank), so a run resumed at step k continues exactly as if never stopped. The
loss stays on the device: the host reads it only every ``log_every`` steps, where a NaN
or inf stops the run (:class:`TrainingError`) before it can reach a checkpoint.

A run folder survives interruptions: SIGINT (Ctrl-C) or SIGTERM (a preempted job) stops
the loop after the current step, saves a checkpoint of it, and raises
:class:`TrainingInterrupted`; a second signal stops at once (KeyboardInterrupt). A write
that fails (a full disk) stops with :class:`TrainingError`, the previous checkpoint kept.
Free space and write access are checked before the first step (:mod:`.run_folder`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import Dataset, load_dataset
from ..guidance import ClassifierFreeGuidance
from ..losses import l_simple
from ..models import build_model, model_config_dict
from ..schedules import NoiseSchedule
from . import distributed
from .checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    load_state,
    remove_temporaries,
    save_checkpoint,
)
from .conditional import drop_labels, generate_per_class, save_class_png
from .config import RESUMABLE_FIELDS, ConfigError, TrainConfig, resolve_config
from .ema import EMA
from .precision import autocast, check_precision
from .run_folder import StopSignals, checkpoint_bytes, kept_metrics, prepare_run_dir
from .sampling import generate, save_png, to_data_space

__all__ = ["train", "TrainResult", "TrainingError", "TrainingInterrupted", "lr_at",
           "step_seeds"]

TAG_TRAIN_STEP = 7      # keeps the per-step training seeds apart from the data's streams


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss, a failed write); the message says what
    was kept."""


class TrainingInterrupted(TrainingError):
    """SIGINT or SIGTERM stopped training; a checkpoint of the step reached was saved first."""

    def __init__(self, message: str, signum: int, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.signum = signum            # signal.SIGINT or signal.SIGTERM
        self.step = step                # optimizer steps done
        self.checkpoint = checkpoint    # the checkpoint saved at ``step``


@dataclass
class TrainResult:
    """What :func:`train` returns: the networks, the noise process, and the loss curve."""

    model: nn.Module            # the trained network (plain module, on the training device)
    ema_model: nn.Module        # its EMA: sample with this one
    schedule: NoiseSchedule     # on the training device
    dataset: Dataset
    config: TrainConfig         # resolved: no None left
    data: dict[str, Any]        # kind, sample_shape, standardization (see to_data_space)
    losses: np.ndarray          # (n,) loss of every step this call ran (this process's batch)
    steps: np.ndarray           # (n,) their 0-indexed step numbers
    step: int                   # optimizer steps done in total
    run_dir: Path | None
    seconds: float              # wall time of this call

    def sample(self, num_samples: int, *, sampler: str = "ddpm", steps: int | None = None,
               eta: float = 0.0, seed: int = 0, use_ema: bool = True,
               progress: bool = False, label: int | None = None,
               guidance_scale: float = 0.0) -> np.ndarray:
        """Samples in the data's own space: float32 (N, D) points or uint8 (N, H, W, C).

        A conditional run (``config.conditional``) samples class ``label`` with
        classifier-free guidance of weight ``guidance_scale`` (chapter 9), or without a
        label from its unconditional branch.
        """
        model = self.ema_model if use_ema else self.model
        if label is not None:
            model = ClassifierFreeGuidance(model, label, guidance_scale)
        elif guidance_scale:
            raise ValueError("guidance_scale needs a label: the class to guide towards")
        x = generate(model, self.schedule,
                     self.dataset.sample_shape, num_samples, kind=self.dataset.kind,
                     sampler=sampler, steps=steps, eta=eta, seed=seed,
                     prediction_type=self.config.prediction_type, progress=progress)
        return to_data_space(x, self.data)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate at 0-indexed step ``step``: linear warm-up to ``config.lr``, then flat
    (``lr_decay="none"``, DDPM) or a half cosine down to 0 at ``config.steps``.

    With the cosine decay, a run extended on resume (a larger ``steps``) changes the
    schedule of its remaining steps, so it no longer equals a run started with that many.
    """
    warmup = config.warmup_steps or 0
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.lr_decay == "cosine":
        progress = (step - warmup) / max(1, config.steps - warmup)        # 0 -> 1
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr


def step_seeds(seed: int, step: int, rank: int) -> tuple[int, int]:
    """Two unrelated 63-bit seeds for step ``step`` of process ``rank``: (t and eps, dropout)."""
    words = np.random.SeedSequence([TAG_TRAIN_STEP, seed, step, rank]).generate_state(4, np.uint32)
    w = [int(v) for v in words]
    return ((w[0] << 32) | w[1]) & (2**63 - 1), ((w[2] << 32) | w[3]) & (2**63 - 1)


def data_info(dataset: Dataset, conditional: bool = False) -> dict[str, Any]:
    """What sampling needs to know of the data, saved in every checkpoint (with the classes
    of a conditional run)."""
    info = {"name": dataset.name, "kind": dataset.kind, "sample_shape": list(dataset.sample_shape)}
    if dataset.kind == "points":
        info.update(mean=dataset.mean.tolist(), std=dataset.std.tolist())
    if conditional:
        info.update(num_classes=dataset.num_classes, class_names=list(dataset.class_names))
    return info


def check_resumable(saved: dict[str, Any], config: TrainConfig, where: Path) -> None:
    """CheckpointError unless the saved run used the same settings (bar RESUMABLE_FIELDS)."""
    now = json.loads(json.dumps(config.to_dict()))
    # a field added after the run was saved has its default there
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    saved = {**json.loads(json.dumps(defaults)), **saved}
    diffs = [f"{k}: {saved.get(k)!r} saved, {now[k]!r} now" for k in sorted(now)
             if k not in RESUMABLE_FIELDS and saved.get(k) != now[k]]
    if diffs:
        raise CheckpointError(f"{where} holds a run with other settings ({'; '.join(diffs)}); "
                              f"re-run with the saved settings or use another --out")


def _load_data(config: TrainConfig, info: distributed.DistInfo) -> Dataset:
    def load():
        return load_dataset(config.dataset, split="train", data_dir=config.data_dir,
                            seed=config.seed, device=info.device, download=config.download)
    if not (info.distributed and config.download):
        return load()
    if info.is_main:                       # one process downloads, the others wait
        dataset = load()
        distributed.barrier(info)
        return dataset
    distributed.barrier(info)
    return load()


def _check_fits(config: TrainConfig, requested: TrainConfig, dataset: Dataset,
                info: distributed.DistInfo) -> TrainConfig:
    """A step must not hold an example twice: a batch larger than a fixed dataset is a
    ConfigError when asked for, and shrunk to the data when it is only the default."""
    from ..data.toys import ToyDataset
    if isinstance(dataset, ToyDataset):             # fresh draws: any batch size
        return config
    n, per_step = dataset.num_examples, config.batch_size * info.world_size
    if per_step <= n:
        return config
    if requested.batch_size is None and n >= info.world_size:
        return dataclasses.replace(config, batch_size=n // info.world_size)
    processes = f" x {info.world_size} processes" if info.distributed else ""
    raise ConfigError(f"batch_size {config.batch_size}{processes} is more than the {n} examples "
                      f"of {config.dataset}; use --batch-size {max(1, n // info.world_size)} "
                      f"or less")


@contextlib.contextmanager
def _writing(what: str, last_ckpt: Path | None):
    """A failed write to the run folder (a full disk...) as a TrainingError saying what is kept."""
    kept = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was kept"
    try:
        yield
    except CheckpointError as error:
        raise TrainingError(f"{error}; training stopped and {kept}") from None
    except OSError as error:
        raise TrainingError(f"cannot write {what}: {error.strerror or error}; training stopped "
                            f"and {kept}") from None


def _optimizer(model: nn.Module, config: TrainConfig, device: torch.device):
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=config.weight_decay, **fast)


def _say(message: str, show: bool) -> None:
    if show:
        tqdm.write(message, file=sys.stderr)


def train(config: TrainConfig) -> TrainResult:
    """Train a DDPM as ``config`` says; resume from ``config.out`` if it holds a checkpoint.

    From a notebook::

        result = train(TrainConfig(dataset="swissroll", steps=2000))
        points = result.sample(2000)

    Raises:
        ConfigError, DataError, CheckpointError (all ValueError): bad settings, data or run
        folder, found before anything is written. TrainingError: NaN or inf loss, or a
        failed write (a full disk); the previous checkpoint is kept. TrainingInterrupted
        (a TrainingError): SIGINT or SIGTERM, after saving a checkpoint of the step reached
        (only with a run folder, in the main thread).
    """
    config.validate()
    info = distributed.setup(config.device)
    try:
        rng_devices = [info.device.index] if info.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):    # leave the caller's RNG alone
            return _train(config, info)
    finally:
        distributed.teardown(info)


def _train(config: TrainConfig, info: distributed.DistInfo) -> TrainResult:
    t_begin = time.perf_counter()
    device, main = info.device, info.is_main
    check_precision(config.precision, device)
    dataset = _load_data(config, info)
    cfg = _check_fits(resolve_config(config, dataset, device.type), config, dataset, info)
    show = cfg.progress and main
    run_dir = Path(cfg.out) if cfg.out else None

    # 1. the checkpoint to resume from, checked before anything is built or written
    ckpt = None
    if run_dir is not None and (path := latest_checkpoint(run_dir)) is not None:
        ckpt = load_checkpoint(path)
        if not ckpt.model_state or ckpt.optimizer_state is None:
            raise CheckpointError(f"{path}: a released model (EMA weights only, no optimizer "
                                  f"state); training cannot resume from it: use another --out")
        check_resumable(ckpt.config, cfg, run_dir)
        if ckpt.step > cfg.steps:
            raise ConfigError(f"{run_dir} is already at step {ckpt.step}, past steps={cfg.steps}; "
                              f"ask for steps >= {ckpt.step} or use another --out")
    start = ckpt.step if ckpt else 0

    # 2. network, EMA, optimizer, noise schedule
    schedule = NoiseSchedule.from_name(cfg.schedule, cfg.num_timesteps).to(device)
    torch.manual_seed(cfg.seed)                              # the same initial weights everywhere
    model = build_model(cfg.model, **cfg.model_overrides).to(device)
    model_config = model_config_dict(model)
    channels_last = (cfg.channels_last if cfg.channels_last is not None
                     else device.type == "cuda" and dataset.kind == "images")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup)
    optimizer = _optimizer(model, cfg, device)
    if ckpt is not None:
        if json.loads(json.dumps(model_config)) != ckpt.model_config:
            raise CheckpointError(f"{ckpt.path}: saved from network {ckpt.model_config}, but this "
                                  f"run builds {model_config}; use another --out")
        load_state(model, ckpt.model_state, "model", ckpt.path)
        load_state(ema.model, ckpt.ema_state, "EMA", ckpt.path)
        fast = dict(optimizer.param_groups[0])
        try:
            optimizer.load_state_dict(ckpt.optimizer_state)
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{ckpt.path}: optimizer state does not fit ({error})") from None
        for group in optimizer.param_groups:            # keep this device's kernels
            group["fused"], group["foreach"] = fast.get("fused"), fast.get("foreach")
        _say(f"resuming from {ckpt.path} (step {ckpt.step} of {cfg.steps})", main)
    data = data_info(dataset, cfg.conditional)

    # 3. the run folder (rank 0 only): space and access checked, what a crash left of a
    #    write removed, config, metrics trimmed to the resumed step
    metrics_path = None
    if run_dir is not None and main:
        prepare_run_dir(run_dir, checkpoint_bytes(model))
        try:
            remove_temporaries(run_dir)
            atomic_write_text(run_dir / "config.json", cfg.to_json() + "\n")
            metrics_path = run_dir / "metrics.jsonl"
            if metrics_path.exists():
                atomic_write_text(metrics_path, kept_metrics(metrics_path.read_text(), start))
        except OSError as error:
            raise CheckpointError(f"cannot write to run folder {run_dir}: "
                                  f"{error.strerror or error}") from None

    train_model: nn.Module = model
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    mixed = autocast(cfg.precision, device)       # bf16: fp32 master weights, grads and EMA
    generator = torch.Generator(device=device)
    losses = torch.zeros(cfg.steps - start, device=device)   # stays on the device
    last_ckpt = ckpt.path if ckpt else None

    # 4. the loop: Algorithm 1. SIGINT / SIGTERM end it after a step, with a checkpoint.
    bar = tqdm(total=cfg.steps, initial=start, disable=not show, desc="training", unit="step",
               dynamic_ncols=True)
    window, t_window = start, time.perf_counter()
    model.train()
    with StopSignals(active=run_dir is not None) as stop, contextlib.closing(bar):
        for step in range(start, cfg.steps):
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if cfg.conditional:                     # the batch and its labels y (B,)
                x0, y = dataset.get_labelled_batch(step, cfg.batch_size, seed=cfg.seed,
                                                   rank=info.rank, world_size=info.world_size)
            else:
                x0 = dataset.get_batch(step, cfg.batch_size, seed=cfg.seed, rank=info.rank,
                                       world_size=info.world_size)          # (B, ...)
            if channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            noise_seed, dropout_seed = step_seeds(cfg.seed, step, info.rank)
            generator.manual_seed(noise_seed)                                # t and eps
            torch.manual_seed(dropout_seed)                                  # dropout masks
            net = train_model
            if cfg.conditional:                     # label dropout, then eps_theta(x_t, t, y)
                y = drop_labels(y, cfg.p_uncond, dataset.num_classes, generator)
                net = functools.partial(train_model, y=y)
            with mixed:
                loss = l_simple(schedule, net, x0, prediction_type=cfg.prediction_type,
                                generator=generator).mean()                  # Eq. (14)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
            optimizer.step()
            ema.update(model, step)
            losses[step - start] = loss.detach()

            done = step + 1
            save_now = done % cfg.checkpoint_every == 0 or done == cfg.steps
            # one process checks its flag every step; processes agree at the sync below
            stopping = stop.received is not None and not info.distributed
            if save_now or stopping or done % cfg.log_every == 0:
                # 5. the one host sync of a window: mean loss, NaN / inf check, stop requests
                w = losses[window - start:done - start]
                stats = torch.stack([w.nan_to_num(0.0, 0.0, 0.0).sum(),
                                     (~w.isfinite()).sum().float(),
                                     torch.tensor(float(stop.received is not None), device=device)])
                total, bad, stops = distributed.all_reduce_sum(stats, info).tolist()
                if bad:
                    local = (~w.isfinite()).nonzero()
                    at = window + int(local[0]) if len(local) else window
                    kept = (f"the last good checkpoint is {last_ckpt}" if last_ckpt
                            else "no checkpoint was written")
                    raise TrainingError(f"loss became NaN or inf at step {at} (lr {lr:.3g}); "
                                        f"training stopped and {kept}. Lower the learning rate "
                                        f"or clip gradients (grad_clip), then re-run to resume")
                elapsed = time.perf_counter() - t_window
                row = {"step": done, "loss": total / (len(w) * info.world_size), "lr": lr,
                       "images_per_s": (done - window) * cfg.batch_size * info.world_size
                       / elapsed, "time": time.perf_counter() - t_begin}
                if metrics_path is not None:
                    with _writing(metrics_path, last_ckpt), open(metrics_path, "a") as f:
                        f.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
                bar.update(done - window)
                window, t_window = done, time.perf_counter()
                stopping = stops > 0
                save_now = save_now or stopping
            if save_now and run_dir is not None and main:
                with _writing(f"the checkpoint of step {done}", last_ckpt):
                    last_ckpt = save_checkpoint(run_dir, done, config=cfg.to_dict(),
                                                model_config=model_config, data=data, model=model,
                                                ema_model=ema.model, optimizer=optimizer,
                                                keep=cfg.keep_checkpoints)
            if stopping:
                signum = signal.Signals(stop.received or signal.SIGTERM)   # another rank's
                saved = run_dir / CHECKPOINT_DIR / f"step-{done:08d}.safetensors"
                raise TrainingInterrupted(f"{signum.name}: training stopped at step "
                                          f"{done} of {cfg.steps} and saved {saved}; re-run the "
                                          f"same command to resume", signum, done, saved)
            if (cfg.sample_every and run_dir is not None and main
                    and (done % cfg.sample_every == 0 or done == cfg.steps)):
                with _writing("a sample PNG", last_ckpt):
                    _preview(ema.model, schedule, dataset, cfg, data, run_dir, done)
    distributed.barrier(info)
    if start == cfg.steps:
        _say(f"{run_dir} is already trained to step {start}; nothing to do", main)
    return TrainResult(model=model, ema_model=ema.model, schedule=schedule, dataset=dataset,
                       config=cfg, data=data, losses=losses.cpu().numpy(),
                       steps=np.arange(start, cfg.steps), step=cfg.steps, run_dir=run_dir,
                       seconds=time.perf_counter() - t_begin)


def _preview(ema_model, schedule, dataset, cfg: TrainConfig, data, run_dir: Path,
             step: int) -> Path:
    """A PNG of the EMA network's samples: a grid of images or a scatter of points; for a
    conditional run, ``num_preview`` samples shared out over the classes (no guidance), one
    row (images) or one colour (points) per class."""
    sampler = cfg.preview_sampler or "ddpm"
    how = (f"DDIM {cfg.preview_steps} steps" if sampler == "ddim"
           else f"DDPM {cfg.num_timesteps} steps")
    title = f"{dataset.name}, step {step}, EMA, {how}"
    reference = None
    if dataset.kind == "points":
        reference = dataset.to_output(dataset.all_data()[:cfg.num_preview])
    path = run_dir / "samples" / f"step-{step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    K = data.get("num_classes") or 0
    if K:
        per_class = max(1, cfg.num_preview // K)
        x, y = generate_per_class(ema_model, schedule, dataset.sample_shape, per_class,
                                  range(K), kind=dataset.kind, sampler=sampler,
                                  steps=cfg.preview_steps, seed=cfg.seed,
                                  prediction_type=cfg.prediction_type)
        return save_class_png(to_data_space(x, data), y.numpy(), path, kind=dataset.kind,
                              class_names=data["class_names"], title=title,
                              reference=reference)
    x = generate(ema_model, schedule, dataset.sample_shape, cfg.num_preview, kind=dataset.kind,
                 sampler=sampler, steps=cfg.preview_steps, seed=cfg.seed,
                 prediction_type=cfg.prediction_type)
    return save_png(to_data_space(x, data), path, kind=dataset.kind, reference=reference,
                    title=title)
