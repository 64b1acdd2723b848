"""Training configuration: one plain dataclass, and the defaults of each kind of dataset.

A :class:`TrainConfig` holds everything a run needs, so that it can be saved as JSON next
to the weights and a run folder can be resumed or sampled from without the original
command. Fields left at ``None`` take the default of the dataset they train on
(:data:`DATASET_DEFAULTS`), filled in by :func:`resolve_config` once the dataset is
loaded: the resolved config is the one written to checkpoints.

The 2-D defaults are tuned to finish in under two minutes on a 2-core CPU (chapter 6),
including on point data they were not tuned on;
``digits`` to show recognisable digits within ten CPU minutes (chapter 7); MNIST and
CIFAR-10 follow Ho et al. 2020 (Sec. 4 and Appendix B) and are meant for a GPU.

There is no data-loader ``num_workers``: batches are index lookups into tensors already
on the device (or fresh draws for the toys), a pure function of the step.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["TrainConfig", "ConfigError", "DATASET_DEFAULTS", "defaults_for", "resolve_config",
           "RESUMABLE_FIELDS"]


class ConfigError(ValueError):
    """A training setting that cannot work; the message names the setting and the fix."""


@dataclass
class TrainConfig:
    """Settings of a training run (Ho et al. 2020, Algorithm 1, plus the usual engineering).

    ``None`` means "the default for this dataset" (see :data:`DATASET_DEFAULTS`).
    """

    dataset: str                               # built-in name, .npy/.npz file or image folder
    out: str | None = None                     # run folder; None writes nothing (notebooks)
    data_dir: str | None = None                # where mnist / cifar10 files are looked for
    download: bool = False                     # let torchvision fetch mnist / cifar10
    model: str | None = None                   # a preset of diffusion_lib.models.build_model
    # fields of the preset's config; with model=None the dataset's defaults apply too
    model_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None                   # optimizer steps in total, resumed ones included
    batch_size: int | None = None              # per process: a DDP step sees B * world_size
    lr: float | None = None                    # peak learning rate of AdamW
    warmup_steps: int | None = None            # linear LR warm-up (Ho et al.: 5000, CIFAR-10)
    lr_decay: Literal["none", "cosine"] | None = None   # after warm-up: flat (DDPM), or cosine to 0
    weight_decay: float = 0.0                  # DDPM trains with plain Adam: no decay
    grad_clip: float | None = None             # max global grad norm; 0 turns clipping off
    ema_decay: float | None = None             # EMA of the weights; samples come from the EMA
    ema_warmup: bool = True                    # decay min(ema_decay, (1 + k) / (10 + k)), step k
    schedule: Literal["linear", "cosine"] = "linear"   # variance schedule (DDPM: linear)
    num_timesteps: int = 1000                  # T; toys keep the paper's 1000 too
    prediction_type: Literal["epsilon", "x0", "v"] = "epsilon"   # L_simple's target (Eq. 14: eps)
    conditional: bool = False                  # class-conditional on the data's labels (ch. 9)
    p_uncond: float = 0.1                      # label dropout to "no class" (Ho & Salimans: 0.1)
    seed: int = 0                              # model init, batches, t, noise and dropout
    device: str = "auto"                       # "auto": cuda, then mps, then cpu
    precision: Literal["fp32", "bf16"] = "fp32"   # bf16 autocast: CUDA, CPUs with native bf16
    channels_last: bool | None = None          # None: on for images on CUDA
    compile: bool = False                      # torch.compile the network
    checkpoint_every: int | None = None        # steps between checkpoints (and one at the end)
    sample_every: int | None = None            # steps between sample PNGs (+ at the end); 0: none
    log_every: int | None = None               # steps between loss syncs / metrics.jsonl lines
    num_preview: int | None = None             # samples in each preview PNG (images: by device)
    preview_sampler: Literal["ddpm", "ddim"] | None = None   # previews: DDIM for images
    preview_steps: int | None = None           # DDIM steps of a preview (images: by device)
    keep_checkpoints: int = 2                  # the latest and one previous
    progress: bool = True                      # tqdm progress bar

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**d)

    def validate(self) -> "TrainConfig":
        """Raise ConfigError for values that cannot work; returns self."""
        _positive_int(self, "steps", "batch_size", "checkpoint_every", "log_every", "num_preview",
                      "preview_steps", "num_timesteps", "keep_checkpoints")
        _non_negative_int(self, "warmup_steps", "sample_every", "seed")
        for name in ("lr",):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value >= 0
                                          and math.isfinite(value)):
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if self.ema_decay is not None and not (_is_number(self.ema_decay)
                                               and 0 <= self.ema_decay < 1):
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        _choice(self, "schedule", ("linear", "cosine"))
        if self.lr_decay is not None:
            _choice(self, "lr_decay", ("none", "cosine"))
        _choice(self, "prediction_type", ("epsilon", "x0", "v"))
        if not isinstance(self.conditional, bool):
            raise ConfigError(f"conditional must be True or False, got {self.conditional!r}")
        if not (_is_number(self.p_uncond) and 0 <= self.p_uncond < 1):
            raise ConfigError(f"p_uncond must be a number in [0, 1), got {self.p_uncond!r}")
        _choice(self, "precision", ("fp32", "bf16"))
        if self.preview_sampler is not None:
            _choice(self, "preview_sampler", ("ddpm", "ddim"))
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ConfigError(f"dataset must be a name or a path, got {self.dataset!r}")
        if not isinstance(self.model_overrides, dict):
            raise ConfigError(f"model_overrides must be a dict, got {self.model_overrides!r}")
        device = str(self.device)
        if device != "auto" and device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
        return self


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(cfg, *names):
    for name in names:
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")


def _non_negative_int(cfg, *names):
    for name in names:
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")


def _choice(cfg, name, choices):
    if getattr(cfg, name) not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")


# Defaults of the fields left at None, per kind of dataset. "points" covers the toys and
# any (N, D) array; "images" any other image data (a folder, a .npy of images).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # 3000 steps of a 512 batch, lr 5e-3 after a short warm-up, decayed to 0 along a half
    # cosine: ~80 CPU-seconds on one core. Measured with 2,000 DDPM samples against fresh
    # data (nearest-neighbour ratio, 1 = a second data sample): swiss roll 0.97, 8
    # gaussians 1.03 (all 8 modes), an untuned three-arm spiral .npy 1.09. The flat 2e-3
    # of 2000 steps gave 1.08 on the swiss roll but 1.55-1.67 on the spiral: the decay to
    # 0 is what removes the last blur. EMA 0.995 averages the last ~200 steps.
    # Previews: DDPM of 500 points at the end only: 4.7 CPU-seconds, 6% of the run's 74
    # (1000 points took 13%); DDIM would be cheaper, but 50-200 DDIM steps throw a few
    # 2-D points far out (3 of 1000 outside the data's frame on a three-arm spiral).
    "points": dict(model="mlp", model_overrides={}, steps=3000, batch_size=512, lr=5e-3,
                   warmup_steps=100, lr_decay="cosine", grad_clip=1.0, ema_decay=0.995,
                   checkpoint_every=500, log_every=100, sample_every=3000, num_preview=500,
                   preview_sampler="ddpm", preview_steps=None),
    # 1,500 8x8 digits on a CPU: the digits U-Net at half width (channels 32: 0.7M
    # parameters, a third of the compute: ~0.26 CPU-s a step) trains more steps in ten
    # minutes than the full one, and that matters more: digits are recognisable from
    # step ~1000. lr 1e-3 (5x the paper's) because a short run has few steps; EMA 0.995
    # follows the last ~200 of them. Previews as for all images (PREVIEW_BY_DEVICE).
    "digits": dict(model="digits", model_overrides={"channels": 32}, steps=2000, batch_size=64,
                   lr=1e-3, warmup_steps=100, lr_decay="none", grad_clip=1.0, ema_decay=0.995,
                   checkpoint_every=500, log_every=50, sample_every=500, num_preview=None,
                   preview_sampler="ddim", preview_steps=None),
    # The paper's recipe (Sec. 4, App. B) at MNIST's scale: for a GPU.
    "mnist": dict(model="ddpm-mnist", model_overrides={}, steps=100_000, batch_size=128,
                  lr=2e-4, warmup_steps=5000, lr_decay="none", grad_clip=1.0, ema_decay=0.9999,
                  checkpoint_every=5000, log_every=100, sample_every=10_000, num_preview=None,
                  preview_sampler="ddim", preview_steps=None),
    # Ho et al. 2020, App. B: lr 2e-4, batch 128, 800k steps, warm-up 5000, dropout 0.1
    # (in the preset), EMA 0.9999, grad clip 1.0. Days on one GPU.
    "cifar10": dict(model="ddpm-cifar10", model_overrides={}, steps=800_000, batch_size=128,
                    lr=2e-4, warmup_steps=5000, lr_decay="none", grad_clip=1.0, ema_decay=0.9999,
                    checkpoint_every=10_000, log_every=100, sample_every=50_000,
                    num_preview=None, preview_sampler="ddim", preview_steps=None),
    # A folder or array of images: the MNIST recipe, on a U-Net sized to the images.
    "images": dict(model=None, model_overrides={}, steps=100_000, batch_size=128, lr=2e-4,
                   warmup_steps=5000, lr_decay="none", grad_clip=1.0, ema_decay=0.9999,
                   checkpoint_every=5000, log_every=100, sample_every=10_000, num_preview=None,
                   preview_sampler="ddim", preview_steps=None),
}
DATASET_DEFAULTS["fashion-mnist"] = DATASET_DEFAULTS["mnist"]

# Image previews left at None above depend on the device the run trains on: a preview is
# num_preview x preview_steps network calls without a backward pass, so on a CPU it stays a
# few per cent of a run's time even when the run is short (a 20-step MNIST run: ~5%; with
# the old 64 images of 1000-step DDPM, 25 times the training time).
PREVIEW_BY_DEVICE: dict[str, dict[str, int]] = {
    "cpu": dict(num_preview=16, preview_steps=50),
    "mps": dict(num_preview=16, preview_steps=50),
    "cuda": dict(num_preview=64, preview_steps=100),
}

# Fields that may change when a run folder is resumed: they steer the run, not the math.
RESUMABLE_FIELDS = ("out", "data_dir", "download", "steps", "device", "precision",
                    "channels_last", "compile", "checkpoint_every", "sample_every", "log_every",
                    "num_preview", "preview_sampler", "preview_steps", "keep_checkpoints",
                    "progress")


def defaults_key(dataset_name: str, kind: str) -> str:
    """Which row of DATASET_DEFAULTS a dataset uses."""
    key = str(dataset_name).strip().lower()
    if key in DATASET_DEFAULTS and key not in ("points", "images"):
        return key
    return "points" if kind == "points" else "images"


def defaults_for(dataset_name: str, kind: str) -> dict[str, Any]:
    """The per-dataset defaults (a copy)."""
    return dict(DATASET_DEFAULTS[defaults_key(dataset_name, kind)])


def _image_preset(sample_shape: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    """A U-Net preset for other images: ddpm-mnist's design, or digits' for small ones."""
    C, H, W = sample_shape
    if H % 4 == 0 and H >= 16:
        return "ddpm-mnist", {}
    if H % 2 == 0:
        return "digits", {}
    return "digits", {"channel_mults": (1,)}     # an odd side cannot be halved


def _fit_unet(base, overrides: dict[str, Any], C: int, H: int) -> dict[str, Any]:
    """Overrides that fit a U-Net preset to C x H x H images; attention stays at the same levels."""
    out = {**overrides, "in_channels": C, "image_size": H}
    if "attention_resolutions" not in overrides:
        levels = len(out.get("channel_mults", base.channel_mults))
        old = [base.image_size // 2**i for i in range(len(base.channel_mults))]
        new = [H // 2**i for i in range(levels)]
        out["attention_resolutions"] = tuple(new[old.index(r)] for r in base.attention_resolutions
                                             if old.index(r) < levels)
    return out


def resolve_config(config: TrainConfig, dataset, device_type: str = "cpu") -> TrainConfig:
    """Fill every ``None`` field from the dataset's defaults; fit the network to the data.

    The network's data dimensions are set from the dataset: ``dim`` for an MLP, and
    ``in_channels`` / ``image_size`` for a U-Net (so ``--model tiny`` works on any square
    images). Image previews left unset follow :data:`PREVIEW_BY_DEVICE` for
    ``device_type`` ("cpu", "cuda" or "mps"). Returns a new, validated config; raises
    ConfigError when model and data cannot go together.
    """
    from ..models import PRESETS, MLPConfig, UNetConfig

    config.validate()
    d = defaults_for(config.dataset, dataset.kind)
    default_overrides = d.pop("model_overrides")
    values = {k: (v if getattr(config, k) is None else getattr(config, k)) for k, v in d.items()}
    # the default network's overrides go with the default network only
    overrides = {**(default_overrides if config.model is None else {}), **config.model_overrides}
    if values["model"] is None:                     # generic images
        values["model"], extra = _image_preset(dataset.sample_shape)
        overrides = {**extra, **overrides}
    preset = values["model"]
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    if dataset.kind == "points":
        if not isinstance(base, MLPConfig):
            raise ConfigError(f"model preset {preset!r} is for images, but {config.dataset} holds "
                              f"points; use --model mlp")
        overrides["dim"] = dataset.sample_shape[0]
    else:
        if not isinstance(base, UNetConfig):
            raise ConfigError(f"model preset {preset!r} is for points, but {config.dataset} holds "
                              f"images; use a U-Net preset such as digits or tiny")
        C, H, W = dataset.sample_shape
        if H != W:
            raise ConfigError(f"the U-Net needs square images, got {H}x{W}; crop or resize them")
        overrides = _fit_unet(base, overrides, C, H)
    if "num_classes" in overrides:
        raise ConfigError("num_classes is set from the data's labels: train with conditional=True "
                          "(--conditional) instead of a num_classes override")
    if config.conditional:
        if dataset.num_classes is None:
            from ..data import LABELS_HINT
            raise ConfigError(f"conditional training needs class labels, and {config.dataset} "
                              f"has none; {LABELS_HINT}")
        overrides["num_classes"] = dataset.num_classes
    valid = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(f"unknown model override(s) {', '.join(unknown)} for preset {preset!r}; "
                          f"valid: {', '.join(valid)}")
    try:
        dataclasses.replace(base, **overrides)          # the network's own checks, before any work
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model {preset!r} with {overrides}: {error}") from None
    if config.preview_sampler is None and config.preview_steps is not None:
        values["preview_sampler"] = "ddim"                 # asking for steps means DDIM
    if values["preview_sampler"] == "ddpm" and config.preview_steps is not None:
        raise ConfigError("preview_steps is for DDIM previews; DDPM previews run all T steps "
                          "(leave it out, or ask for preview_sampler ddim)")
    by_device = PREVIEW_BY_DEVICE.get(device_type, PREVIEW_BY_DEVICE["cpu"])
    if values["num_preview"] is None:
        values["num_preview"] = by_device["num_preview"]
    if values["preview_sampler"] == "ddim" and values["preview_steps"] is None:
        values["preview_steps"] = by_device["preview_steps"]
    if config.preview_steps is None and values["preview_steps"]:    # a default fits any T
        values["preview_steps"] = min(values["preview_steps"], config.num_timesteps)
    resolved = dataclasses.replace(config, **values, model_overrides=overrides)
    if resolved.preview_steps is not None and resolved.preview_steps > resolved.num_timesteps:
        raise ConfigError(f"preview_steps must be <= num_timesteps={resolved.num_timesteps}")
    return resolved.validate()
