"""Checkpoints of a run folder: saved atomically, loaded safely, checked before use.

One checkpoint is one ``.safetensors`` file, ``RUN/checkpoints/step-00001000.safetensors``:

* tensors ``model/<name>``, ``ema/<name>`` (the weights and their EMA) and
  ``optimizer/<i>/<name>`` (AdamW's moments and step counts);
* metadata as JSON strings: the resolved training config, the network's config, the
  optimizer's param groups, the data's kind/shape/standardization, the step, and a
  SHA-256 of every tensor, so a damaged file is caught rather than trained on.

Nothing is unpickled, so loading a checkpoint cannot run code: a pickle or ``torch.save``
file under a checkpoint's name is refused, never opened. Per-step randomness (t,
noise, dropout) is derived from (seed, step, rank) in :mod:`.engine`, so no generator
state needs saving: resuming at step k draws what an uninterrupted run would have.

A file is written to a temporary name in the same folder, flushed, fsync-ed, then moved
into place with ``os.replace``: a crash leaves the old checkpoint or the new one, never
half of one (the temporary file it may leave is removed by :func:`remove_temporaries` when
the run resumes). A failed write (a full disk) is a CheckpointError, and removes its
temporary file. The latest ``keep`` checkpoints (default 2) are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint",
           "latest_checkpoint", "list_checkpoints", "atomic_write_bytes", "atomic_write_text",
           "load_state", "LoadedRun", "load_run", "CHECKPOINT_DIR", "remove_temporaries"]

FORMAT = "diffusion_lib.checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8,})\.safetensors$")
_TEMPORARY = re.compile(r"^\..+\.tmp-\d+$")     # atomic_write_bytes' name before the rename


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt, or from another configuration."""


@dataclass
class Checkpoint:
    """A loaded checkpoint; tensors on the CPU."""

    path: Path
    step: int                              # optimizer steps done
    config: dict[str, Any]                 # the resolved TrainConfig, as a dict
    model_config: dict[str, Any]           # diffusion_lib.models.model_config_dict(model)
    data: dict[str, Any]                   # kind, sample_shape, mean / std for points
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:                                   # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:                        # not every platform can fsync a folder
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files that a killed :func:`atomic_write_bytes` left in a run
    folder (and its checkpoints folder); returns them. Call it before writing again."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINT_DIR):
        if folder.is_dir():
            for p in folder.iterdir():
                if _TEMPORARY.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return removed


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value
            else:
                scalars[f"{index}/{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoints of a run folder, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step, or None if the folder has none."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: str | Path, step: int, *, config: dict[str, Any],
                    model_config: dict[str, Any], data: dict[str, Any], model: nn.Module | None,
                    ema_model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    keep: int = 2) -> Path:
    """Write ``RUN/checkpoints/step-<step>.safetensors`` atomically; keep the latest ``keep``.

    ``model`` and ``ema_model`` are plain modules (unwrap DDP / torch.compile first).
    ``model=None`` (and no optimizer) writes the EMA weights only: a released model
    (:mod:`diffusion_lib.pretrained`) that samples but cannot resume training.
    Refuses (CheckpointError) weights with NaN or inf: a checkpoint is always resumable.
    """
    from safetensors.torch import save

    tensors = {} if model is None else {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema/{k}": v for k, v in ema_model.state_dict().items()})
    finite = torch.stack([v.isfinite().all() for v in tensors.values() if v.is_floating_point()])
    if not bool(finite.all()):
        raise CheckpointError(f"refusing to save step {step}: the weights hold NaN or inf")
    opt_meta: dict[str, Any] | None = None
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "step": str(int(step)),
        "config": json.dumps(config, sort_keys=True),
        "model_config": json.dumps(model_config, sort_keys=True),
        "data": json.dumps(data, sort_keys=True),
        "optimizer": json.dumps(opt_meta),
        "sha256": _digest(tensors),
        "torch_version": torch.__version__,
    }
    folder = Path(run_dir) / CHECKPOINT_DIR
    path = folder / f"step-{int(step):08d}.safetensors"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save(tensors, metadata=metadata))
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    except OSError as error:             # a full disk, a folder made read-only...
        raise CheckpointError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint file (tensors on the CPU).

    Raises CheckpointError, naming the file and the problem, if it is missing, truncated,
    not a diffusion_lib checkpoint, or fails its checksum.
    """
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    raw = path.read_bytes()
    hint = (f"delete {path.name} to resume from the previous checkpoint"
            if len(list_checkpoints(path.parent.parent)) > 1 else "start a new run folder")
    try:
        n = int.from_bytes(raw[:8], "little")
        if len(raw) < 8 or n > len(raw) - 8:
            raise ValueError(f"{len(raw)} bytes, the header alone needs {n + 8}")
        meta = json.loads(raw[8:8 + n]).get("__metadata__") or {}
        tensors = load(raw)
    except Exception as error:            # safetensors raises its own error types
        if raw[:4] == b"PK\x03\x04" or (len(raw) > 1 and raw[0] == 0x80 and 2 <= raw[1] <= 5):
            raise CheckpointError(f"{path}: a pickle or torch.save file, not a safetensors "
                                  f"checkpoint; refused unopened, since unpickling a file can "
                                  f"run code. Only checkpoints that training writes load"
                                  ) from None
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({error}); {hint}"
                              ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a diffusion_lib checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{path}: corrupt checkpoint (its tensors fail the SHA-256 "
                              f"checksum); {hint}")
    try:
        opt_meta = json.loads(meta["optimizer"])
        parts = {k: {} for k in ("model", "ema", "optimizer")}
        for key, value in tensors.items():
            group, name = key.split("/", 1)
            parts[group][name] = value
        return Checkpoint(
            path=path, step=int(meta["step"]), config=json.loads(meta["config"]),
            model_config=json.loads(meta["model_config"]), data=json.loads(meta["data"]),
            model_state=parts["model"], ema_state=parts["ema"],
            optimizer_state=(None if opt_meta is None else
                             _unflatten_optimizer({f"optimizer/{k}": v for k, v in
                                                   parts["optimizer"].items()}, opt_meta)))
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({error!r})") from None


def load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    """``module.load_state_dict(state)``, with a mismatch reported as CheckpointError."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise CheckpointError(f"{path}: the {what} weights do not fit this network "
                              f"({' '.join(first[:3])[:300]}); it was saved from another model "
                              f"configuration") from None


@dataclass
class LoadedRun:
    """A run folder's latest checkpoint, ready to sample from."""

    model: nn.Module             # the network the run sampled with (EMA unless use_ema=False)
    schedule: Any                # NoiseSchedule, on the same device
    config: dict[str, Any]       # the resolved TrainConfig, as a dict
    data: dict[str, Any]         # kind, sample_shape, standardization
    step: int
    path: Path


def load_run(run_dir: str | Path, device: torch.device | str = "cpu",
             use_ema: bool = True, step: int | None = None) -> LoadedRun:
    """Rebuild the network of a run folder's latest checkpoint (or the one of ``step``, for
    quality along training: chapter 10), in eval mode on ``device``.

    Raises CheckpointError if the folder has no checkpoint (of that step: the message lists
    the steps it keeps) or it cannot be read.
    """
    from ..models import build_model_from_dict
    from ..schedules import NoiseSchedule

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    path = latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir}: no checkpoint in {run_dir / CHECKPOINT_DIR}; "
                              f"train first (python -m diffusion_lib train --out {run_dir} ...)")
    if step is not None:
        kept = {int(_NAME.match(p.name).group(1)): p for p in list_checkpoints(run_dir)}
        if step not in kept:
            raise CheckpointError(f"{run_dir}: no checkpoint of step {step}; it keeps steps "
                                  f"{sorted(kept)} (TrainConfig.keep_checkpoints keeps more)")
        path = kept[step]
    ckpt = load_checkpoint(path)
    try:
        model = build_model_from_dict(ckpt.model_config)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: cannot rebuild its network ({error})") from None
    if not use_ema and not ckpt.model_state:
        raise CheckpointError(f"{path}: holds the EMA weights only (a released model); sample "
                              f"from them, without --no-ema")
    load_state(model, ckpt.ema_state if use_ema else ckpt.model_state,
               "EMA" if use_ema else "model", path)
    cfg = ckpt.config
    schedule = NoiseSchedule.from_name(cfg["schedule"], cfg["num_timesteps"])
    return LoadedRun(model.to(device).eval(), schedule.to(device), cfg, ckpt.data, ckpt.step, path)
