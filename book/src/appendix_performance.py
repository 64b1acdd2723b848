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

import diffusion_lib as dl
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

# %% tags=["parameters"]
seed = 0               # not used here: every chapter has the same first parameters
device = "cpu"         # not used here: the numbers come from bench/results/

# %% tags=["hide-input"]
# CHECK_FUNCTIONS
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
print(f"parameters ok: {seed=}, {device=}")

# %% [markdown]
# ## The results files
#
# Every file holds an `environment` entry and one entry per benchmark
# (`train_throughput`, `sample_throughput`), each with its settings and a list of
# `rows`. For each machine we keep the file with the latest date.

# %%
results_dir = next((p for p in [pathlib.Path("../bench/results"), pathlib.Path("bench/results")]
                    if p.is_dir()), None)
files = sorted(results_dir.glob("*.json")) if results_dir else []
latest = {}                                              # machine -> (date, file, data)
for path in files:
    data = json.loads(path.read_text())
    env = data.get("environment", {})
    machine, date = env.get("machine", path.stem), env.get("date", "")
    if machine not in latest or date > latest[machine][0]:
        latest[machine] = (date, path.name, data)
machines = sorted(latest)
print(f"{len(files)} results file(s), {len(machines)} machine(s): {', '.join(machines) or '-'}")
if not machines:
    print("no bench/results/*.json here (on Colab, clone the repository to see them)")


# %% tags=["hide-input"]
def markdown_table(rows, columns, headers=None):
    """A list of dicts as a Markdown table; numbers rounded to 3 significant digits."""
    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)
    lines = ["| " + " | ".join(headers or columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


env_keys = ["date", "gpu", "threads", "torch", "diffusion_lib", "diffusers", "python"]
if machines:                                             # one column per machine
    columns = [{"": key, **{m: latest[m][2]["environment"].get(key) for m in machines}}
               for key in env_keys]
    columns.append({"": "file", **{m: f"`{latest[m][1]}`" for m in machines}})
    display(Markdown(markdown_table(columns, [""] + machines)))

# %% [markdown]
# ## Training throughput
#
# Images per second through one full training step (forward, backward, optimizer) of
# the `ddpm-cifar10` U-Net design, at the width and batch given in each row's settings
# (on a CPU a narrow version, so that a run takes minutes), with the FLOPs of one image
# counted by `torch.utils.flop_counter`.

# %% tags=["hide-input"]
def scalar_columns(rows):
    """The keys of the rows whose values are numbers or text, in order of appearance."""
    columns = []
    for row in rows:
        columns += [k for k, v in row.items() if k not in columns and not isinstance(v, (list, dict))]
    return columns


for machine in machines:
    date, name, data = latest[machine]
    section = data.get("train_throughput")
    if not section:
        continue
    settings = {k: v for k, v in section.items() if k not in ("rows", "flops_note")}
    display(Markdown(f"**{machine}** ({date[:10]}): "
                     + ", ".join(f"{k} {v}" for k, v in settings.items())))
    display(Markdown(markdown_table(section["rows"], scalar_columns(section["rows"]))))

# %% tags=["hide-input"] mystnb={"image": {"alt": "Bar chart of training images per second, diffusion_lib and diffusers side by side, one panel per machine, bars from zero"}}
groups = [(m, latest[m][2]["train_throughput"]["rows"]) for m in machines
          if latest[m][2].get("train_throughput")]
if groups:
    # one panel per machine, each from zero: machines differ by orders of magnitude, and a
    # bar on a log axis (or one not starting at zero) misstates the ratio
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 1, 3.2), squeeze=False)
    models = sorted({row["model"] for _, rows in groups for row in rows})
    fills = [("0.35", None), ("white", "//"), ("0.75", None), ("white", "..")]
    for ax, (machine, rows) in zip(axes[0], groups):
        values = [next((r["images_per_s"] for r in rows if r["model"] == model), np.nan)
                  for model in models]
        for i, (model, value) in enumerate(zip(models, values)):
            fill, hatch = fills[i % len(fills)]
            ax.bar(i, value, 0.7, color=fill, edgecolor="k", hatch=hatch)
            ax.annotate(f"{value:.3g}", (i, value), ha="center", va="bottom",
                        xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(models)), models)
        ax.set(title=machine, ylim=(0, np.nanmax(values) * 1.15))
    axes[0, 0].set(ylabel="training images / s")
    fig.suptitle("training throughput (higher is better)")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Sampling throughput
#
# Images per second of DDPM (1000 steps) and DDIM (10 to 100 steps) at two batch
# sizes, our samplers driving our U-Net against diffusers' pipelines driving theirs.

# %% tags=["hide-input"]
sample_rows = {}
for machine in machines:
    date, name, data = latest[machine]
    section = data.get("sample_throughput")
    if not section:
        continue
    sample_rows[machine] = section["rows"]
    settings = {k: v for k, v in section.items() if k != "rows"}
    display(Markdown(f"**{machine}** ({date[:10]}): "
                     + ", ".join(f"{k} {v}" for k, v in settings.items())))
    display(Markdown(markdown_table(section["rows"], scalar_columns(section["rows"]))))
if not sample_rows:
    print("no sampling benchmark in the latest results yet (bench/sample_throughput.py)")

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
                ax.plot(labels, [row.get(key, np.nan) for row in chosen], linestyle=style,
                        marker=marker, color="k", fillstyle="none",
                        label=f"{machine}, {tag}, batch {batch}")
    ax.set(yscale="log", xlabel="sampler", ylabel="images / s",
           title="sampling throughput (higher is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()

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
