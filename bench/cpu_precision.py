"""CPU training throughput in fp32 and in bf16 autocast, for the image presets.

The training step is ``train_throughput.make_step``: ``l_simple`` under the engine's
autocast context for ``--precision bf16`` (``diffusion_lib.training.precision``; fp32
master weights), AdamW and gradient clipping. fp32 is the peer: both precisions of the
same network, from the same weights and batch, alternate in one process, one optimizer
step per timed window, median over windows. The JSON records whether the CPU computes
bfloat16 natively (AVX512-BF16 / AMX / Arm BF16): where it does not, oneDNN emulates it,
the bf16 column shows the cost of that, and ``train --precision bf16`` refuses to run.

    OMP_NUM_THREADS=1 python bench/cpu_precision.py            # digits, ddpm-mnist, cifar @32
    python bench/cpu_precision.py --threads 2 --batch 64 --presets digits
"""

from __future__ import annotations

import argparse
import copy
import platform
from pathlib import Path

import torch
from common import alternate, count_params, median, save, table
from train_throughput import make_step

from diffusion_lib import NoiseSchedule
from diffusion_lib.models import build_model
from diffusion_lib.training.precision import cpu_bf16_support

# preset -> (overrides, what it is): the digits run's default network, the paper's MNIST
# U-Net, and the CIFAR-10 U-Net at width 32 as the other CPU benchmarks use it
PRESETS = {
    "digits": ({"channels": 32, "image_size": 8, "in_channels": 1}, "digits default, 8x8"),
    "ddpm-mnist": ({}, "full, 28x28"),
    "ddpm-cifar10": ({"channels": 32}, "width 32, 32x32x3"),
}


def cpu_model_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--windows", type=int, default=None,
                   help="timed steps per precision (default 5; 2 where bf16 is emulated)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out-dir", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    native, why = cpu_bf16_support()
    windows = a.windows or (5 if native else 2)
    schedule = NoiseSchedule.linear()
    rows = []
    for name in a.presets.split(","):
        overrides, what = PRESETS[name]
        torch.manual_seed(0)
        model = build_model(name, **overrides)
        # the same weights, and the same batch, t and eps (one seed) in both precisions
        steps = {prec: make_step(copy.deepcopy(model), schedule, a.batch, prec, device,
                                 channels_last=False)
                 for prec in ("fp32", "bf16")}
        for fn in steps.values():                                # warm-up
            fn()
        times = alternate(steps, device, windows)
        row = {"preset": name, "network": what, "params": count_params(model),
               "batch": a.batch}
        for prec in ("fp32", "bf16"):
            for clock in ("process", "wall"):
                row[f"{prec}_img_s_{clock}"] = a.batch / median(times[prec][clock])
        row["bf16_speedup"] = row["bf16_img_s_process"] / row["fp32_img_s_process"]
        row["bf16_speedup_wall"] = row["bf16_img_s_wall"] / row["fp32_img_s_wall"]
        rows.append(row)
        print(f"{name}: fp32 {row['fp32_img_s_process']:.1f} img/s, bf16 "
              f"{row['bf16_img_s_process']:.1f} img/s ({row['bf16_speedup']:.2f}x)", flush=True)
    payload = {"cpu": cpu_model_name(), "bf16_native": native, "bf16_why": why,
               "threads": torch.get_num_threads(), "windows": windows,
               "clock": "process time (wall time beside it)", "rows": rows}
    path = save("cpu_precision", payload, device, Path(a.out_dir) if a.out_dir else None)
    print(f"\nCPU: {payload['cpu']}; native bf16: {native} ({why})")
    print(table(rows, ["preset", "network", "params", "batch", "fp32_img_s_process",
                       "bf16_img_s_process", "bf16_speedup", "bf16_speedup_wall"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
