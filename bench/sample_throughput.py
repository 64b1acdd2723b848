"""Sampling throughput: our DDPM and DDIM loops against diffusers' pipelines.

Each side drives its own U-Net of the same configuration (diffusers: DDPMPipeline and
DDIMPipeline with UNet2DModel; ours: p_sample_loop / ddim_sample_loop with our UNet).
Reports images per second for DDPM with 1000 steps and DDIM with 10/20/50/100 steps,
at batch 16 and at a large batch, alternating the two in one process.

On the CPU the network is narrow (width 32) and DDPM's 1000 steps are timed over
``--ddpm-cpu-steps`` steps and scaled (the loop's cost is linear in the step count).

    python bench/sample_throughput.py                 # CPU
    python bench/sample_throughput.py --device cuda   # GPU: ddpm-cifar10, bf16
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from common import (
    add_run_arguments,
    alternate,
    diffusers_unet,
    median,
    resolve_run,
    save,
    table,
)

from diffusion_lib import NoiseSchedule, ddim_sample_loop, ddim_timesteps
from diffusion_lib.models import build_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="ddpm-cifar10")
    p.add_argument("--channels", type=int, default=None)
    p.add_argument("--batches", default=None, help="comma-separated (CPU 16,64; GPU 16,512)")
    p.add_argument("--ddim-steps", default=None,
                   help="comma-separated (CPU 10,20; GPU 10,20,50,100)")
    p.add_argument("--ddpm-cpu-steps", type=int, default=20)
    p.add_argument("--windows", type=int, default=3)
    add_run_arguments(p)
    a = p.parse_args(argv)
    device, clock, gpu, channels = resolve_run(a)
    batches = [int(b) for b in (a.batches or ("16,512" if gpu else "16,64")).split(",")]
    ddim_steps = [int(s) for s in (a.ddim_steps or ("10,20,50,100" if gpu else "10,20")).split(",")]
    autocast = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if gpu
                else contextlib.nullcontext)

    torch.manual_seed(0)
    schedule = NoiseSchedule.linear().to(device)
    ours = build_model(a.preset, channels=channels, dropout=0.0).to(device).eval()
    cfg = ours.config
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    pipes = {}
    if not a.no_diffusers:
        from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler
        unet = diffusers_unet(cfg).to(device).eval()
        pipes["ddpm"] = DDPMPipeline(unet, DDPMScheduler(num_train_timesteps=1000))
        pipes["ddim"] = DDIMPipeline(unet, DDIMScheduler(num_train_timesteps=1000))
        for pipe in pipes.values():
            pipe.set_progress_bar_config(disable=True)
    if gpu:
        ours.to(memory_format=torch.channels_last)

    def our_run(batch, steps, timesteps):
        g = torch.Generator(device=device).manual_seed(0)
        with torch.inference_mode(), autocast():
            ddim_sample_loop(schedule, ours, (batch, *shape), timesteps=timesteps,
                             eta=0.0 if steps else 1.0, generator=g, progress=False,
                             clip_denoised=True)

    def their_run(kind, batch, steps):
        g = torch.Generator(device=device).manual_seed(0)
        with torch.inference_mode(), autocast():
            if kind == "ddpm":
                pipes["ddpm"].scheduler.set_timesteps(1000)
                pipes["ddpm"](batch_size=batch, generator=g, num_inference_steps=steps,
                              output_type="np")
            else:
                pipes["ddim"](batch_size=batch, generator=g, num_inference_steps=steps, eta=0.0,
                              output_type="np")

    rows = []
    for batch in batches:
        configs = [("ddpm", 1000)] + [("ddim", k) for k in ddim_steps]
        for kind, steps in configs:
            run_steps = steps if (gpu or kind == "ddim") else a.ddpm_cpu_steps
            scale = steps / run_steps
            if kind == "ddpm":
                # ancestral DDPM = DDIM with eta = 1 on the full sequence (tested); time
                # the last run_steps steps of it
                ts = list(range(run_steps))
                cands = {"diffusion_lib": lambda b=batch, ts=ts: our_run(b, 0, ts)}
            else:
                ts = ddim_timesteps(1000, steps)
                cands = {"diffusion_lib": lambda b=batch, ts=ts, s=steps: our_run(b, s, ts)}
            if pipes:
                cands["diffusers"] = lambda b=batch, k=kind, s=run_steps: their_run(k, b, s)
            for fn in cands.values():     # warm-up
                fn()
            times = alternate(cands, device, a.windows)
            ips = {n: batch / (median(t[clock]) * scale) for n, t in times.items()}
            row = {"sampler": f"{kind}-{steps}", "batch": batch,
                   **{f"{n}_images_per_s": v for n, v in ips.items()}}
            if "diffusers" in ips:
                row["ratio"] = ips["diffusion_lib"] / ips["diffusers"]
                other = "wall" if clock == "process" else "process"     # the other clock
                row[f"ratio_{other}"] = (median(times["diffusers"][other])
                                         / median(times["diffusion_lib"][other]))
            if scale != 1:
                row["note"] = f"timed {run_steps} steps, scaled x{scale:g}"
            rows.append(row)
            print(row, flush=True)
    payload = {"preset": a.preset, "channels": channels, "device": str(device),
               "precision": "bf16" if gpu else "fp32", "clock": clock, "rows": rows}
    path = save("sample_throughput", payload, device,
                a.out_dir and __import__("pathlib").Path(a.out_dir))
    print(f"\nresults: {path}")
    print(f"sampling throughput: {a.preset} width {channels}, {device}")
    print(table(rows, ["sampler", "batch", "diffusion_lib_images_per_s", "diffusers_images_per_s",
                       "ratio", "note"]))


if __name__ == "__main__":
    main()
