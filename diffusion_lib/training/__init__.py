"""Training a DDPM: the loop of Ho et al. 2020, Algorithm 1, for notebooks and the CLI.

    from diffusion_lib.training import TrainConfig, train
    result = train(TrainConfig(dataset="swissroll", out="runs/swiss"))
    points = result.sample(2000)          # float32 (2000, 2), in the data's own space

Chapter 6 trains on 2-D points, chapter 7 on images; ``python -m diffusion_lib train``
calls the same :func:`train`. A run folder holds ``config.json``, ``metrics.jsonl``,
``checkpoints/`` (resumed from on a re-run) and ``samples/`` (PNG previews).
"""

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    LoadedRun,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_run,
    save_checkpoint,
)
from .config import DATASET_DEFAULTS, ConfigError, TrainConfig, resolve_config
from .distributed import DistInfo, resolve_device
from .ema import EMA, ema_decay_at
from .engine import TrainingError, TrainingInterrupted, TrainResult, lr_at, train
from .sampling import generate, save_png, to_data_space

__all__ = [
    "TrainConfig", "ConfigError", "DATASET_DEFAULTS", "resolve_config",
    "train", "TrainResult", "TrainingError", "TrainingInterrupted", "lr_at",
    "EMA", "ema_decay_at",
    "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
    "list_checkpoints",
    "LoadedRun", "load_run",
    "generate", "to_data_space", "save_png",
    "DistInfo", "resolve_device",
]
