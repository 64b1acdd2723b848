# %% [markdown]
# # Training a DDPM on images
#
# Chapter 6 trained a small MLP to denoise 2-D points. Images need a network that
# knows about space: neighbouring pixels belong together, and the same stroke can appear
# anywhere in the picture. {cite:t}`ho2020denoising` use a U-Net, and this chapter trains
# one with Algorithm 1, samples from it with Algorithm 2, watches the reverse process
# turn noise into digits, and measures the result in two honest ways.
#
# The defaults train on scikit-learn's 8x8 handwritten `digits` for a couple of minutes
# on one CPU core. The same notebook trains on MNIST or CIFAR-10 on a GPU: on Colab
# choose *Runtime > Change runtime type > GPU*, then set in the parameters cell
# `device = "cuda"`, `dataset = "mnist"` (or `"cifar10"`), `download = True` and a
# larger `train_steps` and `batch_size`, or run
# `papermill book/07_training_on_images.ipynb out.ipynb -f book/params/gpu.yml`.
#
# As in the earlier chapters, the math is 1-indexed ($t = 1, \dots, T$) and the library
# is 0-indexed: the paper's step $t$ is the library's `t - 1`.

# %% COLAB_SETUP
# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, clear_output, display
from tqdm.auto import tqdm

import diffusion_lib as dl
from diffusion_lib import TrainConfig, build_model, load_dataset, train
from diffusion_lib.metrics import (
    extract_features,
    frechet_distance,
    train_feature_classifier,
)
from diffusion_lib.models import PRESETS, UNet, timestep_embedding
from diffusion_lib.notebook import (
    animation_html,
    check_device,
    check_parameter,
    find_model,
    show_image,
    show_source,
)
from diffusion_lib.pretrained import load_reference, verify_manifest
from diffusion_lib.training import (
    DATASET_DEFAULTS,
    EMA,
    ema_decay_at,
    generate,
    to_data_space,
)
from diffusion_lib.training.conditional import generate_per_class
from diffusion_lib.training.sampling import image_grid

# %% tags=["parameters"]
seed = 0               # every random draw in the chapter comes from this seed
device = "cpu"         # "cuda" on a GPU runtime
dataset = "digits"     # "digits" (bundled), "mnist", "fashion-mnist", "cifar10"
download = False       # let torchvision download mnist / cifar10 into ./data
train_steps = 250      # optimizer steps
batch_size = 64        # images per step
num_samples = 128      # Frechet distance samples, 128 at most on a CPU
models_dir = ""        # folder of the shipped models; "" finds book/models
guidance = 2.0         # guidance weight w of the shipped model's class samples
model_samples = 100    # shipped model: samples behind its live scores

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("dataset", dataset, str,
                lambda v: v in ("digits", "mnist", "fashion-mnist", "cifar10"),
                '"digits", "mnist", "fashion-mnist" or "cifar10"')
check_parameter("download", download, bool, lambda v: True, "True or False")
check_parameter("train_steps", train_steps, int, lambda v: v >= 1,
                "an int >= 1")
check_parameter("batch_size", batch_size, int, lambda v: v >= 1, "an int >= 1")
check_parameter("num_samples", num_samples, int, lambda v: v >= 16,
                "an int >= 16")
check_parameter("models_dir", models_dir, str, lambda v: True, "a folder")
check_parameter("guidance", guidance, (int, float), lambda v: v >= 0,
                "a number >= 0")
check_parameter("model_samples", model_samples, int,
                lambda v: v >= 20 and v % 10 == 0, "a multiple of 10, >= 20")
on_cpu = device == "cpu"
fd_samples = min(num_samples, 128 if on_cpu else 2000)   # Frechet distance
grid_samples = 16 if on_cpu else 64                      # the DDPM grid
bound_images = 8 if on_cpu else 256                      # bits/dim
print(f"parameters ok: {seed=}, {device=}, {dataset=}, {download=},")
print(f"    {train_steps=}, {batch_size=}, {num_samples=}")
print(f"    {models_dir=}, {guidance=}, {model_samples=}")

# %% [markdown]
# ## The data
#
# An 8-bit image with pixel values $u \in \{0, \dots, 255\}$ enters the model as
# $x_0 = u / 127.5 - 1 \in [-1, 1]$ ({cite:t}`ho2020denoising`, Sec. 3.3): the same
# scale as the noise $\mathcal{N}(0, \mathbf{I})$ that the forward process ends in, and
# the scale that the discrete decoder of Eq. 13 (used for bits per dimension below)
# assumes. `load_dataset` returns the images in this *training space*; `to_output` maps
# back to `uint8` pixels. MNIST and CIFAR-10 are looked for in `./data` (with
# `download = True`, torchvision fetches them there).

# %%
train_set = load_dataset(dataset, split="train", download=download,
                         device=device)
test_set = load_dataset(dataset, split="test", download=download, device=device)
C, H, W = train_set.sample_shape
print(f"{dataset}: {train_set.num_examples} training and "
      f"{test_set.num_examples} test images of {C} x {H} x {W}")
x0 = train_set.get_batch(0, 64, seed=seed)         # (64, C, H, W) in [-1, 1]
pixels = train_set.to_output(x0)                   # (64, H, W, C) uint8

# %% [markdown]
# **Check.** Training space lies in $[-1, 1]$, and going to pixels and back is exact:

# %% tags=["nbval-check-output"]
round_trip = train_set.from_output(pixels).to(x0.device)
print("x_0 in [-1, 1]:", bool(x0.min() >= -1 and x0.max() <= 1))
print("u -> x_0 -> u is exact:", torch.equal(round_trip, x0))
assert x0.min() >= -1 and x0.max() <= 1 and torch.equal(round_trip, x0)


# %% tags=["hide-input"] mystnb={"image": {"alt": "A grid of 64 training images from the chosen dataset (by default 8x8 handwritten digits)"}}
def show_grid(ax, images, title):
    """A uint8 (N, H, W, C) batch as one picture, light ink on black."""
    show_image(ax, image_grid(images), cmap="gray")
    ax.set_title(title)


fig, ax = plt.subplots(figsize=(4, 4))
show_grid(ax, pixels, f"{dataset}: training images")
plt.show()

# %% [markdown]
# ## The U-Net
#
# The network $\epsilon_\theta(x_t, t)$ takes a noisy image and a timestep and returns a
# tensor of the image's shape: its guess of the noise. Ho et al. build it as a U-Net
# {cite:p}`ronneberger2015unet`, in the Wide-ResNet form of PixelCNN++
# {cite:p}`salimans2017pixelcnn`:
#
# * **down**: at each resolution a few *residual blocks* (GroupNorm
#   {cite:p}`wu2018group`, SiLU, 3x3 convolution, twice, plus a skip connection), then
#   a stride-2 convolution that halves the image;
# * **middle**: residual block, self-attention over all positions, residual block;
# * **up**: the mirror image, where every block also receives, concatenated to its
#   input, the activation saved at the same point on the way down (the U's horizontal
#   bars: fine detail does not have to pass through the coarsest level);
# * **time**: $t$ is turned into a vector by the sinusoidal embedding of the
#   Transformer {cite:p}`vaswani2017attention` and a small MLP, and added inside every
#   residual block, so one network serves all $T$ noise levels;
# * **attention** at the $16 \times 16$ resolution (for CIFAR-10), where it is cheap
#   enough and lets distant parts of the image agree.
#
# The forward pass, with the shape of the activations on each line, is folded here
# (click to open it):

# %%
show_source(UNet.forward, collapsed=True)

# %% [markdown]
# The sinusoidal embedding uses frequencies $\omega_i = 10000^{-2i/d}$ for
# $i = 0, \dots, d/2 - 1$, and puts $\sin(\omega_i t)$ in the first half of the vector and
# $\cos(\omega_i t)$ in the second. Fast frequencies tell nearby steps apart, slow ones
# say roughly where in the process $t$ lies:

# %%
display(show_source(timestep_embedding))
steps = torch.arange(1000)                    # 0-indexed, all T steps
embedding = timestep_embedding(steps, 64)     # (T, 64)

# %% [markdown]
# **Check.** Each frequency contributes a sine and a cosine of the same angle, so
# $\sin^2 + \cos^2 = 1$ for every pair, and distinct steps get distinct vectors:

# %% tags=["nbval-check-output"]
pairs = embedding[:, :32] ** 2 + embedding[:, 32:] ** 2   # (T, 32)
gaps = torch.cdist(embedding, embedding) + torch.eye(1000) * 1e9
unit = torch.allclose(pairs, torch.ones_like(pairs), atol=1e-5)
print("sin^2 + cos^2 = 1 for every pair:", unit)
print("smallest distance between two steps' embeddings > 0.1:",
      bool(gaps.min() > 0.1))
assert unit and gaps.min() > 0.1

# %% tags=["hide-input"] mystnb={"image": {"alt": "The 64-entry timestep embedding against the step: the first rows of each half flip fast with t, the last rows change slowly"}}
fig, ax = plt.subplots(figsize=(6, 3))
shown = ax.imshow(embedding.T, aspect="auto", cmap="gray",
                  interpolation="nearest")
ax.set(xlabel="library step t (0-indexed)", ylabel="embedding entry",
       title="timestep embedding: sines (top), cosines (bottom)")
fig.colorbar(shown, ax=ax)
fig.tight_layout()
plt.show()

# %% [markdown]
# The library names a few configurations (`PRESETS`). `ddpm-cifar10` is the paper's
# CIFAR-10 network; `ddpm-mnist` the same design at half the width; `digits` a small one
# for 8x8 images on a CPU; `tiny` one for the library's tests. The table is computed by
# building each network:

# %%
rows = ["| preset | image | widths per level | attention at | dropout "
        "| parameters |", "|---|---|---|---|---|---:|"]
counts = {}
for name, config in PRESETS.items():
    if not isinstance(config, dl.models.UNetConfig):
        continue
    counts[name] = sum(p.numel() for p in build_model(name).parameters())
    widths = ", ".join(str(config.channels * m) for m in config.channel_mults)
    size = config.image_size
    attention = ", ".join(map(str, config.attention_resolutions)) or "-"
    rows.append(f"| `{name}` | {config.in_channels} x {size} x {size} "
                f"| {widths} | {attention} | {config.dropout} "
                f"| {counts[name]:,} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# **Check.** The CIFAR-10 network has the 35.7 million parameters the paper reports
# (Appendix B), and a network's output has the shape of its input:

# %% tags=["nbval-check-output"]
net = build_model("digits")
out = net(torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 500, 999]))
print(f"ddpm-cifar10: {counts['ddpm-cifar10'] / 1e6:.1f}M parameters")
print("eps_theta(x_t, t) has the shape of x_t:",
      tuple(out.shape) == (4, 1, 8, 8))
assert round(counts["ddpm-cifar10"] / 1e5) == 357 and out.shape == (4, 1, 8, 8)

# %% [markdown]
# ## Training
#
# `train` runs Algorithm 1 (chapter 6) with the recipe of Ho et al.: Adam, a linear
# learning-rate warm-up, gradient clipping at norm 1, and an exponential moving average
# of the weights. Its defaults depend on the dataset; these are the columns for the
# image datasets (`train_steps` and `batch_size` of this chapter replace `steps` and
# `batch_size`):

# %%
keys = ["model", "model_overrides", "steps", "batch_size", "lr", "warmup_steps",
        "grad_clip", "ema_decay"]
names = ["digits", "mnist", "cifar10"]
rows = ["| setting | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---" + "|---:" * len(names) + "|"]
for key in keys:
    values = [DATASET_DEFAULTS[name][key] for name in names]
    rows.append(f"| `{key}` | " + " | ".join(f"{v}" for v in values) + " |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# In Jupyter and Colab the run shows a live progress bar (tqdm): steps done out of
# `train_steps`, the elapsed and remaining time, and, updated every few steps, the mean
# loss and the training speed in images per second. On a GPU `img_s` is the number to
# watch: it says whether the data pipeline or the network is the bottleneck, and how long
# a longer run will take. The bar is a widget, which needs a running kernel, so when the
# run ends the cell replaces it by its last state as text; that is what the web version
# of the book shows (the times are those of the book's build).

# %% tags=["nbval-ignore-output"]
start = time.perf_counter()
run = train(TrainConfig(dataset=dataset, download=download, steps=train_steps,
                        batch_size=batch_size, seed=seed, device=device,
                        out=None, progress=True))
train_seconds = time.perf_counter() - start
model, ema_model, schedule = run.model, run.ema_model, run.schedule
T = schedule.num_timesteps
clear_output()              # the live bar, replaced by its last state:
last_loss = float(np.mean(run.losses[-50:]))   # mean loss of the last 50 steps
speed = run.step * run.config.batch_size / train_seconds
print(tqdm.format_meter(run.step, run.config.steps, train_seconds,
                        prefix="training", unit="step", ncols=80,
                        postfix=f"loss={last_loss:.3f}, img_s={speed:.0f}"))
size = sum(p.numel() for p in model.parameters())
print(f"{run.step} steps of {run.config.batch_size} images, "
      f"{run.config.model!r} U-Net ({size:,} parameters)")

# %% tags=["hide-input"] mystnb={"image": {"alt": "Training loss against step on a log scale: noisy per-step values and their running mean, falling quickly and then slowly"}}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
window = max(1, len(run.losses) // 20)
smooth = np.convolve(run.losses, np.ones(window) / window, mode="valid")
ax.plot(run.steps, run.losses, color="0.7", linestyle="-", linewidth=0.8,
        label="loss per step")
ax.plot(run.steps[window - 1:], smooth, color="k", linestyle="--",
        label=f"mean of {window} steps")
ax.set(yscale="log", xlabel="optimizer step", ylabel=r"$L_{\mathrm{simple}}$",
       title="training loss")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The loss is noisy because each step draws new images, timesteps and noise. To see
# what it is made of, split it by timestep: the loss of the trained network (the last
# weights, as in the curve) at single steps $t$, on test images.

# %%
x_eval = test_set.get_batch(0, min(256, test_set.num_examples), seed=seed)
t_grid = [1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, T]
per_t = {}                                       # paper's t -> mean loss
g = torch.Generator(device=device).manual_seed(seed)
model.eval()
with torch.no_grad():
    for t in t_grid:
        steps = torch.full((len(x_eval),), t - 1, device=device)
        loss = dl.l_simple(schedule, model, x_eval, steps, generator=g)
        per_t[t] = loss.mean().item()

# %% tags=["hide-input"] mystnb={"image": {"alt": "The loss of the trained network at single timesteps against t (log scale): highest at small and middle t, falling to nearly zero as t approaches 1000"}}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(list(per_t), list(per_t.values()), "ko-", fillstyle="none")
ax.set(xscale="log", xlabel="paper's $t$",
       ylabel=r"$L_{\mathrm{simple}}$ at $t$",
       title="the loss of the trained network, step by step")
fig.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
print("t:   " + "  ".join(f"{t:5d}" for t in [1, 10, 100, 500, T]))
print("loss:" + "  ".join(f"{per_t[t]:5.3f}" for t in [1, 10, 100, 500, T]))

# %% [markdown]
# The hard steps are the small and middle ones, not the large ones. At large $t$,
# $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \epsilon$ is almost all
# noise, so the noise is almost $x_t$ itself: a network that outputs (nearly) its input
# scores close to zero there, an easy rule for training to find. At small $t$ the
# noise is a sliver
# on top of the image; to find it, the network must know the image's fine detail, and
# part of that error cannot be removed at all (chapter 6 measured the exact
# denoiser's own error on 2-D data: 0.89 at $t = 10$, 0.00 at $t = 1000$). In between,
# the network must know what digits look like to tell them from the noise, and this is
# the part that longer training keeps reducing while the averaged curve looks flat.
#
# ## The exponential moving average
#
# The samples do not come from the trained weights $\theta_k$ after the last step $k$
# but from their exponential moving average (EMA),
#
# $$
# \bar\theta_{k} = d_k\, \bar\theta_{k-1} + (1 - d_k)\, \theta_k ,
# \qquad d_k = \min\Big(d,\ \frac{1 + k}{10 + k}\Big),
# $$
#
# an average of the recent iterates with weights that decay geometrically, over roughly
# the last $1 / (1 - d)$ steps. Stochastic gradient steps jitter around a good solution;
# the average sits closer to its centre. Ho et al. use $d = 0.9999$ (an average over
# ~10,000 steps) for runs of 800,000 steps. A short run must average over fewer steps,
# or $\bar\theta$ would still be mostly the random initialisation: hence the warm-up
# $\frac{1 + k}{10 + k}$, and the dataset's `ema_decay` (0.995 for digits: ~200 steps).
# The update is one `lerp` over all parameters:

# %%
show_source(EMA.update)

# %% [markdown]
# **Check.** The warm-up starts at $d_0 = 0.1$ (the average is mostly the newest
# weights) and reaches the long-run decay once $(1 + k) / (10 + k) \ge d$:

# %% tags=["nbval-check-output"]
decay = run.config.ema_decay
k_full = math.ceil((10 * decay - 1) / (1 - decay))  # (1 + k)/(10 + k) >= d
print(f"d_0 = {ema_decay_at(0, decay):.3f}, "
      f"d_80 = {ema_decay_at(80, decay):.3f}, "
      f"d_{k_full} = {ema_decay_at(k_full, decay):.3f} (= d), "
      f"d_{k_full - 1} < d: {ema_decay_at(k_full - 1, decay) < decay}")
assert ema_decay_at(0, decay) == 0.1 and ema_decay_at(k_full, decay) == decay
assert ema_decay_at(k_full - 1, decay) < decay

# %% [markdown]
# Same starting noise $x_T$, same sampler, two sets of weights: differences between the
# two grids come from the weights alone. (The sampler here is DDIM with 50 steps,
# chapter 8's fast sampler, to keep this cheap; the next section uses Algorithm 2.)

# %% tags=["hide-input"] mystnb={"image": {"alt": "Two grids of generated images from the same starting noise: left from the last weights, right from their moving average"}}
fig, axes = plt.subplots(1, 2, figsize=(7, 3.7))
for ax, use_ema, title in [(axes[0], False, "last weights"),
                           (axes[1], True, "EMA weights")]:
    grid = run.sample(16, sampler="ddim", steps=50, seed=seed,
                      use_ema=use_ema)
    show_grid(ax, grid, title)
fig.tight_layout()
plt.show()

# %% [markdown]
# The effect of the average is measured with the Frechet distance at the end of the
# chapter.
#
# ## Sampling: Algorithm 2
#
# `p_sample_loop` runs Algorithm 2 with the EMA network: $T = 1000$ steps from
# $x_T \sim \mathcal{N}(0, \mathbf{I})$, each one network call. `clip_denoised=True`
# clips the network's implied estimate of $x_0$ to the image range $[-1, 1]$ before
# each step (images cannot leave it; chapter 6's points could). With
# `return_trajectory=True` it also returns every intermediate $x_t$.

# %%
generator = torch.Generator(device=device).manual_seed(seed)
start = time.perf_counter()
with torch.no_grad():
    trajectory = dl.p_sample_loop(
        schedule, ema_model, (grid_samples, C, H, W), generator=generator,
        clip_denoised=True, return_trajectory=True,
        progress=False)                          # (T + 1, N, C, H, W)
sample_seconds = time.perf_counter() - start
samples = train_set.to_output(trajectory[-1])    # (N, H, W, C) uint8
print(f"trajectory: {tuple(trajectory.shape)}, "
      "entry i is x_(T - i) in the paper's numbering")

# %% [markdown]
# One network call per step makes sampling slow: on a CPU, drawing these few images costs
# as much time as a good share of the training run (this build's times):

# %% tags=["nbval-ignore-output"]
step_seconds = train_seconds / run.step             # one training step
print(f"sampling {grid_samples} images, {T} network calls: "
      f"{sample_seconds:.0f} s,")
print(f"    the time of {sample_seconds / step_seconds:.0f} training steps")

# %% tags=["hide-input"] mystnb={"image": {"alt": "Generated images (Algorithm 2, EMA network) next to real training images of the same dataset"}}
fig, axes = plt.subplots(1, 2, figsize=(7, 3.7))
show_grid(axes[0], samples, f"model samples (DDPM, T = {T})")
show_grid(axes[1], pixels[:grid_samples], "training images")
fig.tight_layout()
plt.show()

# %% [markdown]
# After the default few hundred CPU steps the samples have the strokes, contrast and
# layout of digits, and a few are recognisable; more steps (a GPU, or the command line's
# `python -m diffusion_lib train --dataset digits`, whose default is 2,000 steps: the
# training cell above shows this machine's speed) make most of them so. The next
# section puts numbers on this.
#
# ## The reverse process, animated
#
# The animation plays the trajectory above, from pure noise $x_T$ to the samples $x_0$
# (press play; the slider moves through the frames). The frames are spaced more densely
# near $t = 0$, where the images take shape: for most of the $T$ steps the picture is
# noise, and the strokes appear in the last few hundred. (To be shown as pictures, the
# values of $x_t$ outside $[-1, 1]$ are clipped.)

# %%
# the paper's t of each frame, denser near t = 0
frame_t = sorted({round(T * f**2) for f in np.linspace(1, 0, 40)}, reverse=True)
# x_t of each frame as one uint8 grid of images
grids = [image_grid(train_set.to_output(trajectory[T - t])) for t in frame_t]

fig, ax = plt.subplots(figsize=(3.5, 3.8), dpi=100)
show_image(ax, grids[0], cmap="gray")
image = ax.images[0]


def draw(i):
    image.set_data(grids[i][..., 0] if C == 1 else grids[i])
    ax.set_title(f"$x_t$ at t = {frame_t[i]}")


display(animation_html(
    fig, draw, range(len(grids)), interval=150,
    caption=f"The reverse process on {grid_samples} images: Algorithm 2 "
            f"from pure noise at t = {T} to samples at t = 0, in {len(grids)} "
            "frames spaced more densely near t = 0. Press play, or step "
            "through the frames."))

# %% [markdown]
# The same trajectory as a strip, for print:

# %% tags=["hide-input"] mystnb={"image": {"alt": "The first generated image at seven steps of the reverse process: noise at t = 1000, a blurred shape by t = 100, a sharp image at t = 0"}}
strip_t = [T, 750, 500, 250, 100, 50, 0]
fig, axes = plt.subplots(1, len(strip_t), figsize=(8, 1.6))
for ax, t in zip(axes, strip_t):
    show_image(ax, trajectory[T - t, 0], cmap="gray")    # (C, H, W) in [-1, 1]
    ax.set_title(f"t = {t}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Evaluation
#
# Looking at samples is necessary and not enough. Two numbers follow, each with a
# reference point computed here rather than quoted.
#
# ### Bits per dimension
#
# The variational bound of chapter 6 (Eq. 5, with the discrete decoder of Eq. 13 for
# $L_0$) bounds $-\log_2 p_\theta(x_0)$ of a test image from above. Divided by the
# number of pixel values it is in *bits per dimension*, the unit of lossless
# compression: a model that assigned every 8-bit value the same probability would need
# exactly 8. {cite:t}`ho2020denoising` report $\le 3.70$ on CIFAR-10 (Table 2).
# `variational_bound` estimates every term with one draw of $x_t$ per image (an
# unbiased estimate of the bound), which costs $T$ network calls per batch of images, so
# on a CPU we use a handful of test images and report the standard error. The number
# printed below belongs to the short demonstration run, not to DDPM: the paragraph after
# it explains why it is high, and the model trained for longer at the end of this
# chapter shows what the bound comes down to.

# %%
x_test = test_set.get_batch(0, bound_images, seed=seed)      # (n, C, H, W)
generator = torch.Generator(device=device).manual_seed(seed)
with torch.no_grad():
    bound = dl.variational_bound(schedule, ema_model.eval(), x_test,
                                 generator=generator)
total = bound.total_bpd.double().cpu()                       # (n,)
terms = bound.terms_bpd.double().mean(0).cpu()      # (T,) entry t: L_t
levels = len(np.unique(train_set.to_output(train_set.all_data())))
print(f"bound on {len(total)} test images: {total.mean():.2f} +- "
      f"{total.std() / len(total) ** 0.5:.2f} bits/dim")
print("for reference: uniform over 256 values: 8.00 bits/dim;")
print(f"    uniform over the {levels} grey levels of the data: "
      f"{math.log2(levels):.2f}")

# %% [markdown]
# **Check.** The total is the sum of its terms, $L_T + \sum_{t \ge 2} L_{t-1} + L_0$
# (Eq. 5):

# %% tags=["nbval-check-output"]
summed = bound.prior_bpd + bound.terms_bpd.sum(1)
adds_up = torch.allclose(summed, bound.total_bpd, rtol=1e-4)
print("total = L_T + sum of L_(t-1) + L_0:", adds_up)
assert adds_up

# %% tags=["hide-input"] mystnb={"image": {"alt": "Terms of the variational bound per timestep on a log scale: the decoder term at t = 1 and the KL terms at small t are largest"}}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(torch.arange(2, T + 1), terms[1:], "k-", label=r"$L_{t-1}$, KL terms")
ax.plot([1], terms[:1], "ko", fillstyle="none", label=r"$L_0$, decoder")
ax.set(xscale="log", yscale="log", xlabel="paper's $t$", ylabel="bits / dim",
       title="terms of the bound, trained network")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Where do the bits go? The bound by groups of steps, and the network's error on the
# noise at the first steps (`bound.mse`, the same draws):

# %% tags=["nbval-ignore-output"]
groups = {"L_0, the decoder": terms[0], "L_1 to L_9": terms[1:10].sum(),
          "L_10 to L_99": terms[10:100].sum(),
          "L_100 to L_999": terms[100:].sum()}
for name, value in groups.items():
    print(f"{name:>16}: {value.item():5.2f} bits/dim")
eps_error = bound.mse.double().mean(0).cpu()       # (T,) at each t, 0-indexed
print("error on the noise at t = 1, 2, 10, 100:",
      ", ".join(f"{eps_error[t - 1].item():.2f}" for t in (1, 2, 10, 100)))

# %% [markdown]
# Why is this short run above the $\log_2 17 \approx 4.09$ bits/dim of a model that
# knows nothing but the 17 grey levels of the data? Almost all of its bits are paid
# in the first hundred steps, in the decoder and in the KL terms of small $t$. There,
# the noise is much smaller than the gap between two grey levels ($16 / 127.5 \approx
# 0.13$ in the training space, against a noise of standard deviation 0.04 at
# $t = 10$). A model that had learned that pixels sit on 17 levels could read $x_0$ off
# $x_t$ and name the noise almost exactly, and these terms would cost it almost
# nothing. The network trained for a few hundred steps has not learned this fine
# structure: its error on the noise is still about 1 at $t = 1, 2$, and Eq. 12 weights
# those steps the most ($\lambda_2 \approx 0.6$ against $0.01$ at large $t$, chapter
# 6). The decoder, whose $\sigma_1 \approx 0.007$ is narrower than an 8-bit bin,
# charges in the same way for every pixel whose predicted $x_0$ misses its bin. So the
# bound measures above all the finest scale of the data, which matters little for how
# the samples look, and it can only fall below 4.09 bits once the network has learned
# that scale. For CIFAR-10 the paper's 3.70 bits/dim needed 800,000 steps.
#
# ### A Frechet distance in classifier features
#
# The Frechet Inception Distance {cite:p}`heusel2017gans` compares generated and real
# images through the features of a classifier: fit a Gaussian to each set of feature
# vectors and compute the Frechet distance between the two Gaussians, which for
# Gaussians is the *squared* 2-Wasserstein distance (the Wasserstein distance itself
# is its square root),
#
# $$
# \mathrm{FD} = \lVert m_1 - m_2 \rVert^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2
# - 2\, (\Sigma_1 \Sigma_2)^{1/2}\big).
# $$
#
# The Inception network is trained on 299x299 photographs, not on 8x8 digits, and its
# weights would have to be downloaded; here a small CNN is trained on the dataset's own
# labels for a few seconds (`train_feature_classifier`), and its penultimate layer gives
# the features. Such a number is only comparable with itself, so we also compute its
# **floor**: the distance between as many real training images and the test set. A
# perfect model scores about the floor; the ratio says how far above it the samples are.

# %%
classifier, accuracy = train_feature_classifier(
    train_set, test_set, steps=150, seed=seed, device=device)
test_features = extract_features(classifier, test_set.all_data())
real = train_set.get_batch(0, fd_samples, seed=seed + 1)     # (n, C, H, W)
floor = frechet_distance(extract_features(classifier, real), test_features)
scores = {}
for label, use_ema in [("last weights", False), ("EMA weights", True)]:
    generated = run.sample(fd_samples, sampler="ddim", steps=50, seed=seed,
                           use_ema=use_ema)
    features = extract_features(classifier, test_set.from_output(generated))
    scores[label] = frechet_distance(features, test_features)

# %% tags=["nbval-ignore-output"]
print(f"feature classifier: {accuracy:.1%} accuracy on the "
      f"{test_set.num_examples} test images")
print(f"Frechet distance to the test set, {fd_samples} images each "
      "(DDIM, 50 steps):")
print(f"  {fd_samples} real training images (floor): {floor:8.2f}")
for label, score in scores.items():
    print(f"  samples, {label:>12}:           {score:8.2f}   "
          f"({score / floor:.1f} x floor)")

# %% [markdown]
# The printed ratios are the honest summary of the run: samples that a classifier's
# features could not tell from real digits would sit at $1\times$ the floor. With this
# notebook's short CPU defaults the samples are still clearly above it, and the EMA
# weights typically score better than the last ones (the average smooths out the jitter
# of the last steps). The floor itself is not zero: two finite samples of the same
# distribution differ, and it grows as the sample size shrinks (exercise 7.2), which is
# why the samples and the floor must use the same number of images.

# %% [markdown]
# ## Real digits: a model trained for longer
#
# The run above is Algorithm 1 at the scale of a page: a few hundred steps on 8x8
# digits, so that every reader can watch it work. What the same code does with more
# time is best shown by a model trained once and shipped with the book. This project
# trained a class-conditional DDPM on the 60,000 MNIST training digits (28x28) with its
# own command line, on a CPU, and kept the exponential moving average of its weights;
# the class labels, and the guidance weight $w$ used below, are the subject of
# chapter 9 (with $w = 0$ the network is the plain conditional model, and without a
# label it is an ordinary, unconditional DDPM). The folder `book/models/mnist` holds the
# weights, the training configuration and a manifest: the command that made them, the
# checksums of the data, what the training cost, and the quality measured with 10,000
# samples. A second folder holds the classifier that scores samples (its own manifest
# records $\ge 99\%$ test accuracy), with the mean and covariance of its features on
# the 10,000 MNIST test digits, so that no MNIST file is needed to score a sample.
# `verify_manifest` checks every file's size and SHA-256 before anything is loaded.

# %%
mnist_dir = find_model("mnist", models_dir)
manifest = verify_manifest(mnist_dir)    # sizes and SHA-256 of every file
mnist = dl.load_run(mnist_dir, device=device)          # the EMA weights
reference = load_reference(find_model("mnist-classifier", models_dir),
                           device=device)
names = mnist.data["class_names"]
cost = manifest["training"]

# %% tags=["hide-input"]
widths = [mnist.model.config.channels * m
          for m in mnist.model.config.channel_mults]
epochs = cost["examples_seen"] / 60_000
display(Markdown("\n".join([
    "| the shipped model | |", "|---|---|",
    f"| network | U-Net, widths {widths}, "
    f"{manifest['parameters'] / 1e6:.2f} M parameters, 10 classes + "
    "\"no class\" |",
    f"| training | {cost['steps']:,} steps of {cost['batch_size']} digits: "
    f"{cost['examples_seen']:,} digits seen ({epochs:.1f} epochs) |",
    f"| time | {cost['wall_seconds'] / 3600:.1f} h, {cost['threads']} CPU "
    f"thread ({cost['machine']['cpu']}), {cost['precision']} |",
    f"| files | {manifest['total_bytes'] / 1e6:.1f} MB (EMA weights only) |",
    f"| library | diffusion_lib {manifest['library_version']} |",
])))

# %% [markdown]
# Sixty-four samples, asking for the digits 0 to 9 in turn (sample $i$ for digit
# $i \bmod 10$) with the default guidance weight, from 50 DDIM steps (chapter 8;
# `clip_denoised` keeps each step's estimate of $x_0$ inside $[-1, 1]$, as `sample`
# does for images). Every step is recorded for the animation that follows.

# %%
shape = (64, *mnist.data["sample_shape"])                # (64, 1, 28, 28)
asked = torch.arange(64) % 10                            # (64,) digit of each
guided = dl.ClassifierFreeGuidance(mnist.model, asked.to(device), guidance)
generator = torch.Generator(device=device).manual_seed(seed)
with torch.no_grad():
    path = dl.ddim_sample_loop(mnist.schedule, guided, shape, num_steps=50,
                               generator=generator, clip_denoised=True,
                               return_trajectory=True, progress=False)
path = path.cpu()                                        # (51, 64, 1, 28, 28)
digits_u8 = to_data_space(path[-1], mnist.data)          # (64, 28, 28, 1) uint8

# %% tags=["hide-input"] mystnb={"image": {"alt": "An 8 by 8 grid of 28x28 handwritten digits generated by the shipped MNIST model, asking for the digits 0 to 9 in turn"}}
fig, ax = plt.subplots(figsize=(5, 5))
show_image(ax, image_grid(digits_u8),
           f"shipped model: digits 0-9 in turn, w = {guidance:g}, DDIM 50")
plt.show()

# %%
# x_t after each DDIM step, the first 16 samples as one uint8 grid per frame
frames = [image_grid(to_data_space(x[:16], mnist.data)) for x in path]
ddim_t = dl.ddim_timesteps(mnist.schedule.num_timesteps, 50)[::-1]
fig, ax = plt.subplots(figsize=(3.5, 3.8), dpi=100)
show_image(ax, frames[0], cmap="gray")


def draw_mnist(i):
    ax.images[0].set_data(frames[i][..., 0])
    t = ddim_t[i] + 1 if i < len(ddim_t) else 0     # the paper's t
    ax.set_title(f"$x_t$ at t = {t}")


display(animation_html(
    fig, draw_mnist, list(range(len(frames))) + [len(frames) - 1] * 8,
    interval=120, caption="Sixteen of the samples above along their 50 "
    "DDIM steps, from noise at t = 1000 to digits at t = 0."))

# %% [markdown]
# How good are they? Scored by the reference classifier: the Frechet distance of the
# samples' features to the test digits', next to the floor that as many real training
# digits reach, and, for samples of a requested digit, the share the classifier reads
# as that digit, without guidance and with the default $w$. These are live
# measurements with `model_samples` samples (20 DDIM steps; more on a GPU):

# %%
n_live = model_samples
x_free = generate(mnist.model, mnist.schedule, shape[1:], n_live,
                  kind="images", sampler="ddim", steps=20,
                  seed=seed)                             # (n, 1, 28, 28)
live = {"no label": reference.score(x_free)}
for w in (0.0, guidance):
    x_k, y_k = generate_per_class(mnist.model, mnist.schedule, shape[1:],
                                  n_live // 10, range(10), guidance_scale=w,
                                  kind="images", sampler="ddim", steps=20,
                                  seed=seed + 1)
    live[f"digit k, w = {w:g}"] = reference.score(x_k, y_k)

# %% tags=["hide-input"]
recorded = manifest["quality"]
rows = ["| samples | Frechet distance (floor) | read as digit k |",
        "|---|---|---|"]
for label, r in live.items():
    read = (f"{r['class_accuracy']:.1%}" if "class_accuracy" in r else "")
    rows.append(f"| {label}, {r['num_samples']} (live) | "
                f"{r['frechet_distance']:.2f} ({r['frechet_floor']:.2f}) "
                f"| {read} |")
u = recorded["unconditional"]
rows.append(f"| no label, {recorded['num_samples']:,} (manifest) | "
            f"{u['frechet_distance']:.2f} ({u['frechet_floor']:.2f}) | |")
for w in (0.0, manifest["default_guidance"]):
    r = recorded[f"guidance_{w:g}"]
    rows.append(f"| digit k, w = {w:g}, {r['num_samples']:,} (manifest) | "
                f"{r['frechet_distance']:.2f} ({r['frechet_floor']:.2f}) | "
                f"{r['class_accuracy']:.1%} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# The figures of the manifest were measured by `make pretrained` with 10,000 samples
# and the MNIST files at hand. Three more of them need the training data, so the book
# reads them from the manifest instead of measuring them: the share of each digit
# among unlabelled samples, the distance of samples to their nearest training digit
# next to that of unseen test digits, and the bound in bits per dimension on test
# digits next to two baselines (`pixel_histogram_bpd` gives each pixel position its
# own histogram of grey levels, fitted to the training digits).

# %% tags=["nbval-check-output"]
shares = recorded["unconditional"]["class_shares"]
near = recorded["nearest_training_distance"]
bpd = recorded["bits_per_dim"]
print("unlabelled samples per digit:",
      " ".join(f"{s:.0%}" for s in shares))
print(f"median distance to the nearest training digit: samples "
      f"{near['samples_median']:.1f}, test digits {near['test_median']:.1f}")
print(f"bits/dim on {bpd['num_test_images']} test digits: "
      f"model {bpd['model']:.2f} +- {bpd['model_se']:.2f},")
print(f"    per-pixel histograms {bpd['pixel_histogram']:.2f}, "
      f"uniform {bpd['uniform']:.2f}")
assert all(0.06 <= s <= 0.14 for s in shares)
assert near["samples_median"] > near["test_median"] and bpd["model"] < 4

# %% [markdown]
# Read together:
#
# * Asked for a digit at the default $w = 2$, the samples are read as that digit
#   every time (1,000 of 1,000); without guidance, 94% of the time. Without a label,
#   every digit appears, each between 7% and 13% of the samples (MNIST itself has 9%
#   to 11%): the model has not dropped a class.
# * The samples are *further* from their nearest training digit than unseen test
#   digits are (distances in the $[-1, 1]$ pixel space of 784 values): the model makes
#   new digits rather than copies of the ones it was trained on.
# * Its bound, about 1.7 bits/dim, is far below the 8 bits of a model that knows
#   nothing, but no better than the per-pixel histograms, which get MNIST's black
#   background almost for free. The bits go where they went in the demo run: to the
#   finest scale, the last steps and the decoder, which the loss $L_\text{simple}$
#   weights down. A DDPM trained this way is a good sampler and a mediocre likelihood
#   model; {cite:t}`ho2020denoising` make the same point for CIFAR-10, and learning
#   the reverse variances is what later work used to close the gap.
# * The Frechet distance of the unlabelled samples is about 40 times its floor: the
#   classifier's features still tell them from real digits, mostly by the strokes of
#   the samples that are hard to read. It was still falling when training stopped
#   (5.1 after 1,000 steps, 2.1 after 3,000, 1.5 after 6,000, with 500 samples each:
#   `bench/results/pretrained/mnist-curve.json`). The conditional samples at $w = 0$
#   come much closer to their floor; guidance trades some of that for certainty
#   about the class, as chapter 9 measures.
#
# The model has 0.69 million parameters because a training step on this CPU had to
# stay under a second; the `ddpm-mnist` preset of the table above has nine times as
# many and costs about thirteen times more per step on a CPU
# (`bench/results/pretrained/mnist-sizes.json`). A longer run and that wider network,
# trained with the same command on a GPU (`--device cuda`), are what would lower the
# Frechet distance further.

# %% [markdown]
# ## MNIST and CIFAR-10 on a GPU
#
# Nothing in this notebook is specific to `digits`. With `dataset = "mnist"` the
# defaults above pick the `ddpm-mnist` U-Net of the presets table, and with `"cifar10"`
# the paper's network; `book/params/gpu.yml` trains for 20,000 steps of 128 images, and
# on a GPU the chapter also draws more samples for the grid (64) and the Frechet
# distance (up to 2,000) and evaluates the bound on 256 test images. CIFAR-10 needs far
# longer runs for good samples: the paper trained for 800,000 steps. For such runs the
# command line writes checkpoints and resumes where it stopped:
#
# ```bash
# python -m diffusion_lib train --dataset cifar10 --data-dir data \
#     --out runs/c10 --device cuda --precision bf16
# python -m diffusion_lib evaluate --run runs/c10
# ```
#
# ## Summary
#
# * The DDPM U-Net predicts $\epsilon$ from $(x_t, t)$: residual blocks with GroupNorm,
#   attention at one resolution, skips from the way down to the way up, and the
#   timestep added to every block through a sinusoidal embedding.
# * Training is Algorithm 1 with Adam, warm-up, clipping and an EMA of the weights; the
#   samples come from the EMA. The loss is nearly zero at large $t$, where the noise is
#   almost $x_t$; the hard steps, and what longer training improves, are the small and
#   middle ones.
# * Sampling is Algorithm 2: $T$ network calls per batch, from noise to images; the
#   images appear in the last few hundred steps.
# * Bits per dimension (a likelihood bound) and a Frechet distance in classifier
#   features measure the model, each next to a reference that real data or a trivial
#   model reaches.
#
# ## Exercises
#
# **Exercise 7.1** (show that). With a constant decay $d$ (no warm-up) and
# $\bar\theta_0 = 0$, show that after $k$ updates
# $\bar\theta_k = (1 - d) \sum_{j=1}^{k} d^{\,k-j}\, \theta_j$: the weights decay
# geometrically with the age of an iterate. If the weights grew steadily,
# $\theta_j = j$, by how many steps would the average lag behind the last weights
# once $k \gg 1/(1 - d)$? Check with the library's `EMA` for $d = 0.995$ (the digits
# default) and $k = 2000$.
#
# ```{admonition} Solution
# :class: dropdown
#
# Unroll $\bar\theta_k = d\, \bar\theta_{k-1} + (1 - d)\, \theta_k$ down to
# $\bar\theta_0 = 0$. The weight of an iterate of age $a = k - j$ is $(1 - d) d^a$;
# these weights sum to $1 - d^k \approx 1$, and their mean age is
# $\sum_a a (1 - d) d^a = d / (1 - d)$. With $\theta_j = j$ the average is the last
# value minus that mean age: it lags by $d/(1 - d) = 199$ steps for $d = 0.995$. The
# same lag is why an average over too many steps still remembers the random start of a
# short run, and why the library warms the decay up.
# ```

# %% tags=["hide-cell"]
# Exercise 7.1: the EMA of a single weight that grows by 1 per step
d, k = 0.995, 2000
weight = torch.nn.Linear(1, 1, bias=False)
torch.nn.init.zeros_(weight.weight)
average = EMA(weight, decay=d, warmup=False)
with torch.no_grad():
    for j in range(1, k + 1):
        weight.weight.fill_(float(j))
        average.update(weight, step=j - 1)
ages = torch.arange(k, dtype=torch.float64)          # k - j for j = k, ..., 1
formula = ((1 - d) * d**ages * (k - ages)).sum().item()
ema_value = average.model.weight.item()
print(f"EMA after {k} steps: {ema_value:.2f} (formula {formula:.2f}); "
      f"lag {k - ema_value:.1f} steps")
assert abs(ema_value - formula) < 1e-3 * k and abs(k - ema_value - 199) < 1

# %% [markdown]
# **Exercise 7.2** (predict, then run). The floor of the Frechet distance is the
# distance between two finite samples of the same data. Predict how it changes from
# 128 real images to 64 and to 32, then compute it with the same classifier.
#
# ```{admonition} Solution
# :class: dropdown
#
# It grows as the sample shrinks: the mean and covariance fitted to $n$ feature
# vectors carry random errors that shrink as $n$ grows, and the formula adds up their
# squares. Here it rises from about 1.8 with 128 images to about 5.5 with 32. A score
# is therefore only meaningful next to a floor computed with the same number of
# images, which is how this chapter reports it.
# ```

# %% tags=["hide-cell"]
# Exercise 7.2: the floor against the number of images
floors = {}
for n in (32, 64, 128):
    real_n = train_set.get_batch(0, n, seed=seed + 2)
    floors[n] = frechet_distance(extract_features(classifier, real_n),
                                 test_features)
print("floor with n images:",
      ", ".join(f"n = {n}: {value:.2f}" for n, value in floors.items()))
assert floors[32] > floors[64] > floors[128]

# %% [markdown]
# **Exercise 7.3** (show that, then compare). The simplest possible noise predictor
# ignores $t$ and answers $\hat\epsilon = x_t$. Show that its loss per pixel at step
# $t$ is $\bar\alpha_t\, \mathbb{E}[x_0^2] + (1 - \sqrt{1 - \bar\alpha_t})^2$. Compare
# it with the trained network's loss at each $t$ of the figure above: where is the
# network much better, and where does the trivial rule already do about as well?
#
# ```{admonition} Solution
# :class: dropdown
#
# $\epsilon - x_t = -\sqrt{\bar\alpha_t}\, x_0 + (1 - \sqrt{1 - \bar\alpha_t})\,
# \epsilon$, and $x_0$ and $\epsilon$ are independent with $\mathbb{E}\epsilon = 0$, so
# the cross term vanishes and the mean square is the claim. At large $t$ both terms
# vanish: the trivial rule is nearly perfect, and so is the network. Up to $t = 100$
# the rule's loss is above 1 (the whole image counts as error), while the network's
# is well below it: that gap is what the network has learned about digits.
# ```

# %% tags=["hide-cell"]
# Exercise 7.3: the loss of eps_hat = x_t, by formula and by measurement
second_moment = (x_eval**2).mean().item()                 # E[x_0^2] per pixel
print("   t   eps_hat = x_t   network")
for t in [10, 100, 500, T]:
    ab = schedule.alpha_bars[t - 1].item()
    trivial = ab * second_moment + (1 - (1 - ab) ** 0.5) ** 2
    steps = torch.full((len(x_eval),), t - 1, device=device)
    measured = dl.l_simple(schedule, lambda x_t, s: x_t, x_eval, steps,
                           generator=g)                   # (n,)
    se = measured.std().item() / len(measured) ** 0.5
    print(f"{t:4d}   {trivial:13.3f}   {per_t[t]:7.3f}")
    assert abs(measured.mean().item() - trivial) < 5 * se + 1e-6
    if t <= 100:
        assert per_t[t] < trivial

# %% [markdown]
# **Exercise 7.4** (with the exact oracle). For Gaussian data the best denoiser is
# known exactly: chapter 6's `GaussianMixtureOracle` with one component. Fit a
# Gaussian to the training digits (their mean and $64 \times 64$ covariance $C$) and
# run its exact denoiser on the real test digits. It is linear in $x_t$, so it is the
# best *linear* noise predictor for any data with those two moments. Show that its
# loss depends on the test images only through their deviations from the mean, then
# predict at which $t$ the trained network beats it, and measure.
#
# ```{admonition} Solution
# :class: dropdown
#
# With $a^2 = \bar\alpha_t$, $s^2 = 1 - \bar\alpha_t$ and $M = (a^2 C + s^2 I)^{-1}$,
# the oracle answers $\hat\epsilon = s M (x_t - a\mu)$. Its error is
# $(I - s^2 M)\,\epsilon - a s M (x_0 - \mu)$, and averaging over $\epsilon$ (the
# cross term vanishes) gives, per pixel,
#
# $$
# \frac{1}{D}\Big[\operatorname{tr}\big((I - s^2 M)^2\big)
#   + a^2 s^2 (x_0 - \mu)^\top M^2 (x_0 - \mu)\Big],
# $$
#
# which the code checks against the measured loss. Beating a linear rule takes
# knowing more than two moments: strokes, which pixels light up together. With the
# default run the network does so in the middle steps ($t$ = 10 to 100). At $t = 1$
# the noise is far below the gaps between grey levels and the short run still trails
# the linear rule; at large $t$ the linear rule is nearly exact (the answer is
# $\epsilon \approx x_t$) and the network has not quite caught up with it either.
# ```

# %% tags=["hide-cell"]
# Exercise 7.4: the exact denoiser of a Gaussian with the digits' moments
flat = train_set.get_batch(0, train_set.num_examples, seed=seed)
flat = flat.flatten(1).double().cpu()                     # (N, 64)
mean = flat.mean(0)
D, eye = flat.shape[1], torch.eye(flat.shape[1], dtype=torch.float64)
cov = torch.cov(flat.T) + 1e-6 * eye                      # a tiny ridge
gaussian = dl.GaussianMixture([1.0], mean[None], cov[None])
s64 = dl.NoiseSchedule.linear(T, dtype=torch.float64)
linear = dl.GaussianMixtureOracle(s64, gaussian)
x_cpu = x_eval.double().cpu()
dev = x_cpu.flatten(1) - mean                             # (n, 64)
g64 = torch.Generator().manual_seed(seed)
print("   t   linear   formula   network")
for t in [1, 10, 100, 500, T]:
    a2 = s64.alpha_bars[t - 1]
    s2 = 1 - a2
    M = torch.linalg.inv(a2 * cov + s2 * eye)
    R = eye - s2 * M
    quad = ((dev @ M @ M) * dev).sum(1).mean()
    formula = ((R @ R).trace() + a2 * s2 * quad).item() / D
    steps = torch.full((len(x_cpu),), t - 1)
    loss = dl.l_simple(s64, linear, x_cpu, steps, generator=g64)  # (n,)
    se = loss.std().item() / len(loss) ** 0.5
    print(f"{t:4d}   {loss.mean().item():6.3f}   {formula:7.3f}"
          f"   {per_t[t]:7.3f}")
    assert abs(loss.mean().item() - formula) < 5 * se + 1e-9
