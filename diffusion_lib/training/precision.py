"""Mixed precision for training: bf16 autocast on CUDA and on CPUs with native bfloat16.

Under ``precision="bf16"`` the forward pass and the loss run inside
``torch.autocast(device_type, dtype=torch.bfloat16)``: matrix products and convolutions
take bfloat16 inputs, while the weights the optimizer updates, their gradients, the
optimizer state and the EMA all stay float32 (the "master weights"), so a bf16 run
saves and resumes exactly like an fp32 one.

On a CPU this pays only where the CPU computes in bfloat16 natively (x86: AVX512-BF16 or
AMX; Arm: the BF16 extension). Elsewhere oneDNN emulates it, and a step is much slower
than in fp32 (18x for the 8x8 digits U-Net on an AVX2-only AMD EPYC, one thread), so
:func:`check_precision` refuses it there with a message that says so. Chapter 7 and
``bench/cpu_precision.py`` use it; the speed-ups measured are in the performance appendix.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

import torch

from .config import ConfigError

__all__ = ["cpu_bf16_support", "bf16_from_cpuinfo", "check_precision", "autocast"]

# /proc/cpuinfo flags of a CPU that multiplies bfloat16 natively
_X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_ARM_BF16_FLAGS = ("bf16",)


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> tuple[bool, str]:
    """(supported, why): whether this CPU computes bfloat16 natively, and in words why.

    Read from the CPU flags in /proc/cpuinfo (Linux); where there is no such file,
    PyTorch's own oneDNN check decides.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return ok, ("oneDNN reports bfloat16 support" if ok
                    else "oneDNN reports no bfloat16 support on this CPU")
    return bf16_from_cpuinfo(text, platform.machine())


def bf16_from_cpuinfo(text: str, machine: str) -> tuple[bool, str]:
    """(supported, why) from the text of /proc/cpuinfo and the machine name (x86_64, aarch64)."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    wanted = _ARM_BF16_FLAGS if machine.lower() in ("aarch64", "arm64") else _X86_BF16_FLAGS
    found = [f for f in wanted if f in flags]
    if found:
        return True, f"the CPU has {', '.join(found)}"
    return False, (f"the CPU has none of {', '.join(wanted)}, so bfloat16 would be emulated "
                   f"(many times slower than fp32)")


def check_precision(precision: str, device: torch.device) -> None:
    """ConfigError unless ``precision`` can run on ``device`` (fp32 always can)."""
    if precision == "fp32":
        return
    if precision != "bf16":
        raise ConfigError(f"precision must be fp32 or bf16, got {precision!r}")
    if device.type == "cuda":
        return
    if device.type == "cpu":
        ok, why = cpu_bf16_support()
        if not ok:
            raise ConfigError(f"precision bf16 on the CPU needs native bfloat16 (AVX512-BF16 or "
                              f"AMX on x86, BF16 on Arm): {why}; use precision fp32")
        return
    raise ConfigError(f"precision bf16 runs on CUDA or a CPU with native bfloat16, not on "
                      f"{device.type}; use precision fp32")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a training step's forward pass and loss run in (nothing for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
