"""Shared helpers for the benchmark scripts: timing, peers, tables and the results JSON.

Benchmarks print a table last and merge their numbers into
``bench/results/<machine>-<date>.json``. They are scripts, never timed tests.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-").lower()
    return f"cpu{os.cpu_count()}-{platform.machine()}"


def environment(device: torch.device) -> dict:
    import diffusion_lib
    env = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "host": socket.gethostname(), "machine": machine_name(device),
           "torch": torch.__version__, "diffusion_lib": diffusion_lib.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads()}
    try:
        import diffusers
        env["diffusers"] = diffusers.__version__
    except ImportError:
        env["diffusers"] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def results_path(device: torch.device, out_dir: Path | None = None) -> Path:
    day = _dt.date.today().isoformat()
    return (out_dir or RESULTS) / f"{machine_name(device)}-{day}.json"


def save(section: str, payload: dict, device: torch.device, out_dir: Path | None = None) -> Path:
    """Merge ``{section: payload}`` into the day's results file (written atomically)."""
    path = results_path(device, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data["environment"] = environment(device)
    data[section] = payload
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> dict[str, float]:
    """Run fn once; return its wall time and this process's CPU time, in seconds.

    On a shared machine, process time (all threads of this process) is the steadier CPU
    measure: wall time also counts the time other programs held the cores.
    """
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return {"wall": time.perf_counter() - wall, "process": time.process_time() - cpu}


def alternate(candidates: dict, device: torch.device,
              windows: int) -> dict[str, dict[str, list[float]]]:
    """Time each candidate's callable once per window, alternating.

    Returns ``{name: {"wall": [seconds per window], "process": [...]}}``.
    """
    times = {name: {"wall": [], "process": []} for name in candidates}
    for _ in range(windows):
        for name, fn in candidates.items():
            for clock, seconds in timed(fn, device).items():
                times[name][clock].append(seconds)
    return times


def pick_clock(name: str, device: torch.device) -> str:
    """``auto``: process time on the CPU (steady on a shared machine), wall time on a GPU."""
    if name == "auto":
        return "wall" if device.type == "cuda" else "process"
    return name


def top_ops(fn, steps: int = 2, rows: int = 12) -> list[dict]:
    """Profile ``steps`` calls of fn on the CPU: the ops with the most self CPU time and their
    share of the total (torch.profiler), for the results JSON."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps,
             "ms_per_step": e.self_cpu_time_total / 1e3 / steps} for e in events[:rows]]


def median(xs):
    return statistics.median(xs)


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))
    return "\n".join(out)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def diffusers_unet(cfg):
    """Hugging Face diffusers' UNet2DModel configured like our UNetConfig (the layout of
    the DDPM CIFAR-10 port: positional embedding, freq_shift 1, GroupNorm eps 1e-6)."""
    from diffusers import UNet2DModel
    res = cfg.resolutions
    down = tuple("AttnDownBlock2D" if r in cfg.attention_resolutions else "DownBlock2D"
                 for r in res)
    up = tuple("AttnUpBlock2D" if r in cfg.attention_resolutions else "UpBlock2D"
               for r in reversed(res))
    return UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.in_channels,
        out_channels=cfg.out_channels or cfg.in_channels,
        block_out_channels=tuple(cfg.channels * m for m in cfg.channel_mults),
        layers_per_block=cfg.num_res_blocks, down_block_types=down, up_block_types=up,
        norm_num_groups=cfg.norm_groups, norm_eps=1e-6, dropout=cfg.dropout,
        attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        time_embedding_type="positional", act_fn="silu")


class DiffusersAsModel(torch.nn.Module):
    """Wrap a diffusers UNet2DModel as ``model(x_t, t)`` returning a tensor."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t):
        return self.unet(x, t, return_dict=False)[0]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def add_run_arguments(p) -> None:
    """The options every throughput script shares: clock, peer on/off, output folder."""
    p.add_argument("--clock", choices=["auto", "wall", "process"], default="auto",
                   help="auto: process time on the CPU (steady on a shared machine), wall on a GPU")
    p.add_argument("--no-diffusers", action="store_true")
    p.add_argument("--out-dir", default=None)


def resolve_run(a) -> tuple[torch.device, str, bool, int]:
    """device, clock, on-GPU flag and U-Net width from the parsed --device/--clock/--preset/
    --channels options (width: the preset's on a GPU, 32 on the CPU)."""
    from diffusion_lib.models import PRESETS
    device = pick_device(a.device)
    gpu = device.type == "cuda"
    return device, pick_clock(a.clock, device), gpu, a.channels or (
        PRESETS[a.preset].channels if gpu else 32)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
