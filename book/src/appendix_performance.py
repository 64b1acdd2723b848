# ---
# jupyter:
#   mystnb:
#     execution_mode: force
# ---

# %% [markdown]
# # Appendix: performance
#
# How fast does `diffusion_lib` train and sample, and how does it compare with a
# widely used implementation? The scripts in the repository's `bench/` folder measure
# it (see `bench/README.md`) and commit their results as JSON files in `bench/results/`,
# one per machine and day, each with the machine, date and software versions. This page
# is generated from the latest committed file of every machine: nothing here is typed
# by hand, and a new results file changes the page at the next build.
#
# The peer is Hugging Face diffusers' `UNet2DModel`, configured to the same
# architecture and parameter count as our U-Net, run in the same process with the same
# batch, precision and optimizer, alternating with ours, and timed as the median of
# several windows after a warm-up. A ratio above 1 means `diffusion_lib` is faster.

# %% COLAB_SETUP
# %%
import json
import pathlib
import textwrap

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import diffusion_lib as dl
from diffusion_lib.notebook import check_device, check_parameter

# %% tags=["parameters"]
seed = 0        # not used here: every chapter has the same first parameters
device = "cpu"  # not used here: the numbers come from bench/results/

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
print(f"parameters ok: {seed=}, {device=}")

# %% [markdown]
# ## The results files
#
# Every file holds an `environment` entry and one entry per benchmark
# (`train_throughput`, `sample_throughput`, `cpu_precision`, ...), each with its
# settings and a list of `rows`. For each machine and benchmark we show the file with
# the latest date that holds it.

# %%
here = [pathlib.Path("../bench/results"), pathlib.Path("bench/results")]
results_dir = next((p for p in here if p.is_dir()), None)
files = sorted(results_dir.glob("*.json")) if results_dir else []
latest = {}            # (machine, benchmark) -> (date, file, data)
for path in files:
    data = json.loads(path.read_text())
    env = data.get("environment", {})
    machine, date = env.get("machine", path.stem), env.get("date", "")
    for section in data:
        key = (machine, section)
        if key not in latest or date > latest[key][0]:
            latest[key] = (date, path.name, data)
machines = sorted({m for m, _ in latest})
print(f"{len(files)} results file(s), {len(machines)} machine(s): "
      f"{', '.join(machines) or '-'}")
print(f"this page: diffusion_lib {dl.__version__}")
if not machines:
    print("no bench/results/*.json here (on Colab, clone the "
          "repository to see them)")


def section_of(machine, name):
    """(date, file, the benchmark's entry) of the latest file with it."""
    found = latest.get((machine, name))
    return found and (found[0], found[1], found[2][name])


# %% tags=["hide-input"]
def markdown_table(rows, columns, headers=None):
    """A list of dicts as a Markdown table; numbers to 3 significant digits."""
    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)
    def line(cells):
        return "| " + " | ".join(cells) + " |"
    lines = [line(headers or columns), "|---" * len(columns) + "|"]
    lines += [line(cell(row.get(c)) for c in columns) for row in rows]
    return "\n".join(lines)


env_keys = ["date", "gpu", "threads", "torch", "diffusion_lib", "diffusers",
            "python"]
if machines:                           # one column per machine, newest file
    newest = {m: latest[(m, "environment")] for m in machines}
    columns = [{"": key, **{m: newest[m][2]["environment"].get(key)
                            for m in machines}} for key in env_keys]
    columns.append({"": "file", **{m: f"`{newest[m][1]}`" for m in machines}})
    display(Markdown(markdown_table(columns, [""] + machines)))

# %% [markdown]
# ## Training throughput
#
# Images per second through one full training step (forward, backward, optimizer) of
# the `ddpm-cifar10` U-Net design, at the width and batch given in each row's settings
# (on a CPU a narrow version, so that a run takes minutes), with the FLOPs of one image
# counted by `torch.utils.flop_counter`.
#
# Every timed window is measured on two clocks, and the table shows both:
#
# * **process time** (`time.process_time()`): the CPU seconds this process used, on all
#   its threads. It does not count the time other programs held the cores, so on a
#   shared machine it is the steadier measure of the *work* a step takes. On a CPU the
#   scripts rank by it.
# * **wall time**: the seconds that passed, which is what a user waits. On a shared
#   machine it also counts the time others held the cores, and it scatters more. On a
#   GPU it is the only meaningful clock.
#
# The two can disagree about which implementation is faster, and on a shared machine
# they do (the line under each table says by how much). Neither clock alone settles a
# difference of a few per cent; a real difference shows on both.

# %% tags=["hide-input"]
def both_clocks(rows, batch):
    """Images/s by process and by wall time, and each ratio to diffusers."""
    out = []
    for row in rows:
        proc = batch / row["process_s_per_step"]
        wall = batch / row["wall_s_per_step"]
        out.append({"model": row["model"], "params": row["params"],
                    "GFLOP/img": row.get("gflop_per_image"),
                    "img/s process": proc, "img/s wall": wall})
    peer = next((r for r in out if r["model"] == "diffusers"), None)
    for r in out:
        if peer is not None and r is not peer:
            r["ratio process"] = r["img/s process"] / peer["img/s process"]
            r["ratio wall"] = r["img/s wall"] / peer["img/s wall"]
    return out


train_rows = {}
for machine in machines:
    found = section_of(machine, "train_throughput")
    if not found:
        continue
    date, name, section = found
    keep = ("preset", "channels", "batch", "precision", "threads")
    shown = ", ".join(f"{k} {section[k]}" for k in keep if k in section)
    display(Markdown(f"**{machine}** ({date[:10]}): {shown}"))
    rows = both_clocks(section["rows"], section["batch"])
    train_rows[machine] = rows
    columns = ["model", "params", "img/s process", "img/s wall",
               "ratio process", "ratio wall"]
    display(Markdown(markdown_table(rows, columns)))
    for r in rows:
        if "ratio process" in r:
            print(f"{machine}: {r['model']} / diffusers images/s:\n"
                  f"  {r['ratio process']:.2f}x by process time, "
                  f"{r['ratio wall']:.2f}x by wall time")

# %% tags=["hide-input"] mystnb={"image": {"alt": "Bar chart of training images per second by process time and by wall time, diffusion_lib and diffusers side by side, one panel per machine, bars from zero"}}
if train_rows:
    # one panel per machine, each from zero: machines differ by orders of
    # magnitude, and a bar on a log axis (or not from zero) misstates the ratio
    n = len(train_rows)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 1, 3.4), squeeze=False)
    fills = {"img/s process": ("0.35", None), "img/s wall": ("white", "//")}
    for ax, (machine, rows) in zip(axes[0], train_rows.items()):
        for i, row in enumerate(rows):
            for j, (clock, (fill, hatch)) in enumerate(fills.items()):
                x, value = i + (j - 0.5) * 0.38, row[clock]
                ax.bar(x, value, 0.36, color=fill, edgecolor="k", hatch=hatch,
                       label=clock.split()[-1] + " time" if i == 0 else None)
                ax.annotate(f"{value:.3g}", (x, value), ha="center",
                            va="bottom", xytext=(0, 2),
                            textcoords="offset points", fontsize=8)
        top = max(max(r[c] for c in fills) for r in rows)
        ax.set_xticks(range(len(rows)), [r["model"] for r in rows])
        ax.set(title=machine, ylim=(0, top * 1.2))
        ax.legend(fontsize=8, loc="lower right")
    axes[0, 0].set(ylabel="training images / s")
    fig.suptitle("training throughput, two clocks (higher is better)")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Sampling throughput
#
# Images per second of DDPM (1000 steps) and DDIM (a few to 100 steps) at the
# batch sizes listed, our samplers driving our U-Net against diffusers' pipelines
# driving theirs. Both clocks again: the ratio by the clock the script ranks by,
# and by the other.

# %% tags=["hide-input"]
sample_rows = {}
for machine in machines:
    found = section_of(machine, "sample_throughput")
    if not found:
        continue
    date, name, section = found
    sample_rows[machine] = section["rows"]
    settings = {k: v for k, v in section.items() if k != "rows"}
    display(Markdown(f"**{machine}** ({date[:10]}): "
                     + ", ".join(f"{k} {v}" for k, v in settings.items())))
    clock = section.get("clock", "process")
    other = "wall" if clock == "process" else "process"
    columns = ["sampler", "batch", "diffusion_lib_images_per_s",
               "diffusers_images_per_s", "ratio", f"ratio_{other}"]
    headers = ["sampler", "batch", "ours img/s", "diffusers img/s",
               f"ratio ({clock})", f"ratio ({other})"]
    display(Markdown(markdown_table(section["rows"], columns, headers)))
if not sample_rows:
    print("no sampling benchmark yet (bench/sample_throughput.py)")

# %% tags=["hide-input"] mystnb={"image": {"alt": "Sampling images per second against the sampler (DDIM steps, DDPM), log scale, one line per machine, implementation and batch size"}}
if sample_rows:
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    styles = iter([("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")] * 8)
    for machine, rows in sample_rows.items():
        for batch in sorted({row["batch"] for row in rows}):
            chosen = [row for row in rows if row["batch"] == batch]
            labels = [row["sampler"] for row in chosen]
            for key, tag in [("diffusion_lib_images_per_s", "diffusion_lib"),
                             ("diffusers_images_per_s", "diffusers")]:
                if not any(key in row for row in chosen):
                    continue
                style, marker = next(styles)
                values = [row.get(key, np.nan) for row in chosen]
                ax.plot(labels, values, linestyle=style, marker=marker,
                        color="k", fillstyle="none",
                        label=f"{machine}, {tag}, batch {batch}")
    ax.set(yscale="log", xlabel="sampler", ylabel="images / s",
           title="sampling throughput (higher is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## bf16 on the CPU
#
# `train --precision bf16` runs the forward pass and the loss under bf16 autocast, with
# the weights, gradients, optimizer state and EMA kept in float32. It pays only on a CPU
# that multiplies bfloat16 natively (x86 with AVX512-BF16 or AMX, Arm with BF16); on
# any other CPU oneDNN emulates it and a step is many times slower, so the library
# refuses bf16 there and says why. `bench/cpu_precision.py` times the training step of
# the image presets in both precisions, alternating in one process (process time; the
# wall-time ratio is in the JSON beside it).

# %% tags=["hide-input"]
precision_rows = {}
for machine in machines:
    found = section_of(machine, "cpu_precision")
    if not found:
        continue
    date, name, section = found
    native = "native bf16" if section["bf16_native"] else "no native bf16"
    display(Markdown(f"**{machine}** ({date[:10]}): {section['cpu']}, "
                     f"{native}, {section['threads']} thread(s)"))
    rows = [{"preset": r["preset"], "params": r["params"],
             "batch": r["batch"], "fp32 img/s": r["fp32_img_s_process"],
             "bf16 img/s": r["bf16_img_s_process"],
             "bf16 / fp32": r["bf16_speedup"]} for r in section["rows"]]
    precision_rows[machine] = (section, rows)
    display(Markdown(markdown_table(rows, list(rows[0]))))
if not precision_rows:
    print("no CPU precision benchmark yet (bench/cpu_precision.py)")
for machine, (section, rows) in precision_rows.items():
    speedups = [r["bf16 / fp32"] for r in rows]
    low, high = min(speedups), max(speedups)
    verdict = "faster" if low > 1 else "slower" if high < 1 else "mixed"
    print(f"{machine}: bf16 is {verdict} than fp32 here "
          f"({low:.2f}x to {high:.2f}x):")
    print(textwrap.fill(section["bf16_why"], 78, initial_indent="  ",
                        subsequent_indent="  "))

# %% [markdown]
# ## Reading the numbers
#
# * Throughput on a shared CPU is noisy: each row's median hides windows that ran much
#   slower while other work ran on the machine (the JSON files keep every window's
#   times in `window_wall_s` and `window_process_s`). The ratio between the two implementations, measured in
#   alternation, is steadier than either number alone.
# * On a GPU the numbers that matter are images per second at a large batch, peak
#   memory, and for sampling the number of network calls (steps) per image: chapter 8
#   shows what fewer steps cost in quality.
# * To add a machine, run the scripts there (`bench/gpu.sh` collects every GPU
#   measurement in one go) and commit the JSON file; this page picks it up.
