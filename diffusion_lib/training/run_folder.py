"""A run folder that interruptions and full disks do not damage (used by :mod:`.engine`).

* :class:`StopSignals`: SIGINT (Ctrl-C) and SIGTERM (a preempted job) ask the training
  loop to stop after its step, so that it saves a checkpoint of that step first.
* :func:`prepare_run_dir`: free space and write access, checked before the first step.
* :func:`kept_metrics`: metrics.jsonl cut back to the step a run resumes from, a line
  torn by a crash dropped.

Checkpoints themselves are written atomically by :mod:`.checkpoint`; what a killed
write leaves behind is removed by :func:`.checkpoint.remove_temporaries`.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import CHECKPOINT_DIR, CheckpointError

__all__ = ["StopSignals", "checkpoint_bytes", "prepare_run_dir", "kept_metrics"]


class StopSignals:
    """Within ``with``: SIGINT / SIGTERM set ``received`` (the loop stops after its step);
    a second one raises KeyboardInterrupt at once. Only the main thread can install signal
    handlers; elsewhere, or with ``active=False``, nothing changes. Restores the previous
    handlers on exit."""

    def __init__(self, active: bool):
        self.active = active and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if self.active:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def checkpoint_bytes(model: nn.Module) -> int:
    """About the size of one checkpoint: weights, their EMA and AdamW's two moments."""
    return 4 * sum(t.numel() * t.element_size() for t in model.state_dict().values())


def prepare_run_dir(run_dir: Path, need_bytes: int) -> None:
    """Check free space and write access of the run folder before the first step.

    Raises CheckpointError if the disk has less than two checkpoints free (a new one is
    written next to the last before that is deleted), or if the folder cannot be written.
    """
    existing = run_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError:                                 # cannot tell: a failing save will say
        free = None
    if free is not None and free < 2 * need_bytes:
        raise CheckpointError(f"{run_dir}: {_size(free)} free on its disk, but checkpoints "
                              f"need about {_size(2 * need_bytes)}; free some space or use "
                              f"another --out")
    try:
        (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir / CHECKPOINT_DIR):
            pass
    except OSError as error:
        raise CheckpointError(f"cannot write to run folder {run_dir}: "
                              f"{error.strerror or error}") from None


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def kept_metrics(text: str, start: int) -> str:
    """The lines of metrics.jsonl up to step ``start``; a line torn by a crash is dropped."""
    kept = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= start:
            kept.append(line + "\n")
    return "".join(kept)
