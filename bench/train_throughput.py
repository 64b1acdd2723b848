"""Training throughput: our DDPM U-Net against diffusers' UNet2DModel, configured alike.

Both networks get the same batch, dtype, device, optimizer (AdamW, fused on CUDA),
loss (diffusion_lib.losses.l_simple) and gradient clipping; they alternate in one
process and each reports the median of several timed windows after a warm-up. On a
GPU the script also reports model FLOP utilisation (FLOPs per image counted with
torch.utils.flop_counter, forward + backward) and peak memory.

Timing: wall time and process time are both recorded per window; images/s uses process
time on the CPU (``--clock auto``), steady when other programs share the cores, and wall
time on a GPU. Run single-threaded on a busy CPU: ``OMP_NUM_THREADS=1``. On the CPU the
script also profiles a few steps of each model and stores the ops with the most self time
and their share (``--profile-steps 0`` to skip).

    OMP_NUM_THREADS=1 python bench/train_throughput.py   # CPU: preset at width 32, batch 8
    python bench/train_throughput.py --device cuda   # GPU: ddpm-cifar10, batch 128, bf16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import (
    DiffusersAsModel,
    add_run_arguments,
    alternate,
    count_params,
    diffusers_unet,
    median,
    resolve_run,
    save,
    sync,
    table,
    top_ops,
)

from diffusion_lib import NoiseSchedule, l_simple
from diffusion_lib.models import build_model
from diffusion_lib.training.precision import autocast

H200_BF16_PEAK = 790e12   # dense bf16 FLOP/s of one H200 (vendor figure)


def make_step(model, schedule, batch, precision, device, channels_last, lr=2e-4):
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=fused, foreach=not fused)
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randn(batch, *sample_shape(model), device=device, generator=gen).clamp(-1, 1)
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    mixed = autocast(precision, device)      # the engine's: bf16 on CUDA or a bf16 CPU

    def step():
        with mixed:
            loss = l_simple(schedule, model, x0, generator=gen).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def sample_shape(model):
    cfg = model.config if hasattr(model, "config") else model.unet.config
    if hasattr(cfg, "in_channels") and hasattr(cfg, "image_size"):
        return (cfg.in_channels, cfg.image_size, cfg.image_size)
    return (cfg.in_channels, cfg.sample_size, cfg.sample_size)


def flops_per_image(model, schedule, device, precision):
    from torch.utils.flop_counter import FlopCounterMode
    step = make_step(model, schedule, 2, precision, device, channels_last=False, lr=0.0)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / 2


def peak_memory(step, device):
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2 ** 30


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="ddpm-cifar10")
    p.add_argument("--channels", type=int, default=None, help="base width (CPU default 32)")
    p.add_argument("--batch", type=int, default=None, help="CPU default 8, GPU default 128")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--steps-per-window", type=int, default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--profile-steps", type=int, default=None,
                   help="steps profiled per model for the top-ops table (CPU default 2, GPU 0)")
    add_run_arguments(p)
    a = p.parse_args(argv)
    device, clock, gpu, channels = resolve_run(a)
    batch = a.batch or (128 if gpu else 8)
    precision = a.precision or ("bf16" if gpu else "fp32")
    spw = a.steps_per_window or (20 if gpu else 2)
    profile_steps = a.profile_steps if a.profile_steps is not None else (0 if gpu else 2)
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(0)
    schedule = NoiseSchedule.linear().to(device)
    ours = build_model(a.preset, channels=channels).to(device)
    models = {"diffusion_lib": ours}
    if not a.no_diffusers:
        models["diffusers"] = DiffusersAsModel(diffusers_unet(ours.config)).to(device)
    info = {name: {"params": count_params(m)} for name, m in models.items()}
    for name, m in models.items():
        info[name]["gflop_per_image"] = flops_per_image(m, schedule, device, precision) / 1e9

    variants = {}
    for name, m in models.items():
        cl = gpu
        if cl:
            m.to(memory_format=torch.channels_last)
        variants[name] = (m, cl)
        if a.compile:
            start = time.perf_counter()
            cm = torch.compile(m)
            variants[name + " (compiled)"] = (cm, cl)
            info[name + " (compiled)"] = dict(info[name])
            step = make_step(cm, schedule, batch, precision, device, cl)
            step()
            sync(device)
            info[name + " (compiled)"]["compile_s"] = time.perf_counter() - start

    steps = {name: make_step(m, schedule, batch, precision, device, cl)
             for name, (m, cl) in variants.items()}
    for name, step in steps.items():
        info[name]["peak_memory_gib"] = peak_memory(step, device)
        for _ in range(a.warmup):
            step()
    times = alternate({n: (lambda s=s: [s() for _ in range(spw)]) for n, s in steps.items()},
                      device, a.windows)
    rows = []
    for name in steps:
        ips = batch * spw / median(times[name][clock])
        row = {"model": name, **info[name], "images_per_s": ips,
               "s_per_step": median(times[name][clock]) / spw,
               "wall_s_per_step": median(times[name]["wall"]) / spw,
               "process_s_per_step": median(times[name]["process"]) / spw,
               "window_wall_s": times[name]["wall"], "window_process_s": times[name]["process"]}
        if gpu:
            row["mfu"] = ips * info[name]["gflop_per_image"] * 1e9 / H200_BF16_PEAK
        rows.append(row)
    profiles = ({name: top_ops(step, profile_steps) for name, step in steps.items()}
                if profile_steps else None)
    base = {r["model"]: r["images_per_s"] for r in rows}
    for r in rows:
        peer = "diffusers (compiled)" if "compiled" in r["model"] else "diffusers"
        if peer in base and r["model"].startswith("diffusion_lib"):
            r["ratio_vs_" + peer.replace(" ", "_")] = r["images_per_s"] / base[peer]
    payload = {"preset": a.preset, "channels": channels, "batch": batch, "precision": precision,
               "device": str(device), "steps_per_window": spw, "windows": a.windows, "clock": clock,
               "threads": torch.get_num_threads(), "rows": rows,
               "flops_note": "per image, forward + backward, counted with torch.utils.flop_counter"}
    out_dir = a.out_dir and Path(a.out_dir)
    path = save("train_throughput", payload, device, out_dir)
    if profiles:  # a section of its own: the book's performance page tabulates the other
        save("train_profile", {"preset": a.preset, "channels": channels, "batch": batch,
                               "threads": torch.get_num_threads(), "steps": profile_steps,
                               "note": "self CPU time per op (torch.profiler), share of the total",
                               "top_ops": profiles}, device, out_dir)
    if profiles:
        for name, ops in profiles.items():
            print(f"\nprofile, {name} ({profile_steps} steps): top ops by self CPU time")
            print(table([{"op": o["op"][:48], "share": round(o["share"], 3),
                          "ms_per_step": o["ms_per_step"]} for o in ops],
                        ["op", "share", "ms_per_step"]))
    cols = ["model", "params", "gflop_per_image", "s_per_step", "images_per_s", "peak_memory_gib",
            "mfu", "ratio_vs_diffusers", "ratio_vs_diffusers_(compiled)", "compile_s"]
    print(f"\nresults: {path}")
    print(f"training throughput: {a.preset} width {channels}, batch {batch}, {precision}, "
          f"{device}, {torch.get_num_threads()} thread(s), {clock} time")
    print(table(rows, [c for c in cols if any(c in r for r in rows)]))


if __name__ == "__main__":
    main()
