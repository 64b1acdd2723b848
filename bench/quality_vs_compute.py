"""Quality against compute: our training defaults against the plain recipe, at fixed budgets.

For each dataset and each budget (optimizer steps, at the dataset's default batch size),
two recipes train the same network from the same seed on the same batches:

* ``diffusion_lib``: :func:`diffusion_lib.training.train` with the dataset's defaults
  (AdamW, LR warm-up, cosine decay for the toys, gradient clipping, EMA of the weights;
  samples from the EMA). A separate run per budget, since the LR schedule spans the run.
* ``plain``: the recipe of a bare DDPM training script: diffusers' ``DDPMScheduler``
  (linear betas 1e-4..0.02, T = 1000, as ours) for ``add_noise`` and for sampling, MSE to
  the noise, AdamW at the same peak LR held constant, no warm-up, no clipping, no EMA.
  One run, scored when it reaches each budget (a constant LR makes that the same thing).

Both sample with DDPM's 1000 ancestral steps on the toys, and with 50-step DDIM (eta 0)
on images (ours: ``ddim_sample_loop``; plain: diffusers' ``DDIMScheduler``).

Scores: toys with :func:`diffusion_lib.metrics.toy_report` (``nn_ratio``: nearest-neighbour
distance to fresh data over its data-vs-data floor, 1 is perfect; ``energy_ratio``; and for
8gaussians the exact-density KL and the mode coverage); images with
:func:`diffusion_lib.metrics.image_report` (Frechet distance in the features of a small
classifier trained on the labels, over its real-data floor). Compute is reported as steps,
examples seen and training process-seconds (CPU time on a CPU; the wall time on a GPU).

    OMP_NUM_THREADS=1 python bench/quality_vs_compute.py        # CPU: ~9 CPU-minutes
    python bench/quality_vs_compute.py --device cuda --toy-budgets 1000,3000 \\
        --image-dataset mnist --data-dir data --image-budgets 2000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import pick_device, save, sync, table

from diffusion_lib.data import load_dataset
from diffusion_lib.metrics import image_report, toy_report, train_feature_classifier
from diffusion_lib.models import build_model
from diffusion_lib.training import TrainConfig, resolve_config, train


class Clock:
    """Seconds of compute: this process's CPU time on a CPU, wall time on a GPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            sync(self.device)
            return time.perf_counter()
        return time.process_time()


def ours(name: str, steps: int, n: int, a, device, clock) -> tuple[np.ndarray, float]:
    """Train with diffusion_lib's defaults for ``steps`` steps; samples in data space."""
    config = TrainConfig(dataset=name, steps=steps, seed=a.seed, device=str(device),
                         data_dir=a.data_dir, progress=False)
    start = clock()
    result = train(config)
    seconds = clock() - start
    if result.dataset.kind == "points":
        return result.sample(n, seed=a.seed), seconds
    return result.sample(n, sampler="ddim", steps=a.image_sampler_steps, seed=a.seed), seconds


def plain(name: str, budgets: list[int], n: int, a, device, clock) -> dict[int, tuple]:
    """The plain recipe, scored at each budget: {steps: (samples in data space, seconds)}."""
    from diffusers import DDIMScheduler, DDPMScheduler
    dataset = load_dataset(name, split="train", seed=a.seed, data_dir=a.data_dir, device=device)
    cfg = resolve_config(TrainConfig(dataset=name, seed=a.seed), dataset)   # same network, LR, B
    images = dataset.kind == "images"
    torch.manual_seed(a.seed)
    model = build_model(cfg.model, **cfg.model_overrides).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                    clip_sample=images)            # toys are not in [-1, 1]
    gen = torch.Generator(device=device).manual_seed(a.seed)
    out, seconds, step = {}, 0.0, 0
    for budget in sorted(budgets):
        start = clock()
        model.train()
        for step in range(step, budget):
            x0 = dataset.get_batch(step, cfg.batch_size, seed=a.seed)
            noise = torch.randn(x0.shape, generator=gen, device=device)
            t = torch.randint(0, 1000, (x0.shape[0],), generator=gen, device=device)
            x_t = noise_scheduler.add_noise(x0, noise, t)
            loss = F.mse_loss(model(x_t, t), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        step = budget
        seconds += clock() - start
        model.eval()
        if images:
            sampler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                    clip_sample=True)
            sampler.set_timesteps(a.image_sampler_steps)
        else:
            sampler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                    clip_sample=False)
            sampler.set_timesteps(1000)
        g = torch.Generator(device=device).manual_seed(a.seed)
        chunks = []
        with torch.no_grad():
            for begin in range(0, n, 1000 if not images else 256):
                x = torch.randn((min(n - begin, 1000 if not images else 256),
                                 *dataset.sample_shape), generator=g, device=device)
                for t in sampler.timesteps:
                    eps = model(x, torch.full((x.shape[0],), int(t), device=device))
                    kwargs = {"eta": 0.0} if images else {}
                    x = sampler.step(eps, t, x, generator=g, **kwargs).prev_sample
                chunks.append(x.float().cpu())
        out[budget] = (dataset.to_output(torch.cat(chunks)), seconds)
    return out


def score(name: str, samples: np.ndarray, a, device, classifier) -> dict:
    if classifier is None:
        r = toy_report(samples, name, seed=a.seed)
        keep = ["nn_ratio", "energy_ratio", "kl", "kl_floor", "mode_coverage"]
    else:
        train_set = load_dataset(name, split="train", data_dir=a.data_dir)
        test_set = load_dataset(name, split="test", data_dir=a.data_dir)
        r = image_report(samples, train_set, test_set, classifier=classifier, seed=a.seed)
        keep = ["frechet_distance", "frechet_floor", "frechet_ratio"]
    return {k: r[k] for k in keep if k in r}


def run_dataset(name, budgets, n, a, device, clock, rows):
    classifier = None
    if name in ("digits", "mnist", "fashion-mnist", "cifar10"):
        train_set = load_dataset(name, split="train", data_dir=a.data_dir)
        test_set = load_dataset(name, split="test", data_dir=a.data_dir)
        classifier, accuracy = train_feature_classifier(train_set, test_set, a.classifier_steps,
                                                        a.seed)
        print(f"{name}: feature classifier, test accuracy {accuracy:.3f}", flush=True)
    cfg = resolve_config(TrainConfig(dataset=name, seed=a.seed),
                         load_dataset(name, split="train", data_dir=a.data_dir))
    for budget, (samples, seconds) in plain(name, budgets, n, a, device, clock).items():
        rows.append({"dataset": name, "recipe": "plain", "steps": budget,
                     "examples": budget * cfg.batch_size, "train_s": seconds,
                     **score(name, samples, a, device, classifier)})
        print(rows[-1], flush=True)
    for budget in budgets:
        samples, seconds = ours(name, budget, n, a, device, clock)
        rows.append({"dataset": name, "recipe": "diffusion_lib", "steps": budget,
                     "examples": budget * cfg.batch_size, "train_s": seconds,
                     **score(name, samples, a, device, classifier)})
        print(rows[-1], flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--toys", default="8gaussians,swissroll")
    p.add_argument("--toy-budgets", default="500,1000,2000", help="steps, comma-separated")
    p.add_argument("--toy-samples", type=int, default=1000)
    p.add_argument("--image-dataset", default="digits", help="digits, mnist, ... or 'none'")
    p.add_argument("--image-budgets", default="250", help="steps, comma-separated")
    p.add_argument("--image-samples", type=int, default=256)
    p.add_argument("--image-sampler-steps", type=int, default=50, help="DDIM steps (both recipes)")
    p.add_argument("--classifier-steps", type=int, default=400)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None)
    a = p.parse_args(argv)
    device = pick_device(a.device)
    clock = Clock(device)
    total = time.process_time()
    rows: list[dict] = []
    budgets = [int(b) for b in a.toy_budgets.split(",") if b]
    for name in [t for t in a.toys.split(",") if t]:
        run_dataset(name, budgets, a.toy_samples, a, device, clock, rows)
    if a.image_dataset != "none":
        budgets = [int(b) for b in a.image_budgets.split(",") if b]
        run_dataset(a.image_dataset, budgets, a.image_samples, a, device, clock, rows)
    payload = {"device": str(device), "seed": a.seed, "toy_samples": a.toy_samples,
               "image_samples": a.image_samples, "image_sampler": f"ddim-{a.image_sampler_steps}",
               "toy_sampler": "ddpm-1000", "clock": "wall" if device.type == "cuda" else "process",
               "total_process_s": time.process_time() - total, "rows": rows,
               "recipes": {"diffusion_lib": "diffusion_lib.training.train, the dataset's defaults "
                                            "(warm-up, LR decay on toys, grad clip, EMA)",
                           "plain": "diffusers DDPMScheduler noising and sampling (DDIMScheduler "
                                    "for images), AdamW at the same constant LR, no clip, no EMA"}}
    path = save("quality_vs_compute", payload, device, a.out_dir and Path(a.out_dir))
    cols = ["dataset", "recipe", "steps", "examples", "train_s", "nn_ratio", "energy_ratio", "kl",
            "kl_floor", "mode_coverage", "frechet_distance", "frechet_floor", "frechet_ratio"]
    print(f"\nresults: {path}  ({payload['total_process_s']:.0f} process-s in all)")
    print(f"quality against compute, {device}: lower ratios are better, 1 = real data")
    print(table(rows, [c for c in cols if any(c in r for r in rows)]))


if __name__ == "__main__":
    main()
