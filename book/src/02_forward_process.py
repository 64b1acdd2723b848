# %% [markdown]
# # The forward process
#
# The forward process is the half of a diffusion model that involves no learning at all:
# a recipe that takes a data point and destroys it, gradually, with Gaussian noise.
# Because the recipe is fixed, we can study it completely, and everything the reverse
# process will later have to undo is decided here. This chapter looks at a single step
# of the recipe, at the schedule that sets the size of each step, and at one detail of
# the step, a factor $\sqrt{1-\beta_t}$, without which the whole construction would fail.

# %% COLAB_SETUP
# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import display

import diffusion_lib as dl
from diffusion_lib.notebook import (
    animation_html,
    check_device,
    check_parameter,
    interact,
    show_image,
    show_source,
)

# %% tags=["parameters"]
seed = 0            # every random draw in the chapter comes from this seed
device = "cpu"      # "cuda" on a GPU runtime
dataset = "digits"  # the image: digits, mnist, fashion-mnist or cifar10
download = False    # let torchvision download mnist, ... into ./data
num_samples = 2000  # 2-D points, and draws behind each Monte Carlo check

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("dataset", dataset, str,
                lambda v: v.lower() in dl.data.IMAGE_NAMES,
                f"one of {', '.join(dl.data.IMAGE_NAMES)}")
check_parameter("download", download, bool, lambda v: True, "True or False")
check_parameter("num_samples", num_samples, int, lambda v: v >= 100,
                "an int >= 100")
print(f"parameters ok: {seed=}, {device=}, {dataset=},")
print(f"               {download=}, {num_samples=}")

# %% [markdown]
# ## One step
#
# Given the previous state $x_{t-1}$, the forward process draws the next one from a
# Gaussian ({cite:t}`ho2020denoising`, Eq. 2):
#
# $$
# q(x_t \mid x_{t-1}) = \mathcal{N}\!\left(x_t;\ \sqrt{1-\beta_t}\, x_{t-1},\ \beta_t \mathbf{I}\right),
# \qquad t = 1, \dots, T.
# $$
#
# In words: shrink the previous state by the factor $\sqrt{1-\beta_t}$, then add
# independent Gaussian noise of variance $\beta_t$ to every coordinate. As a sampling
# instruction, with $\epsilon \sim \mathcal{N}(0, \mathbf{I})$,
#
# $$
# x_t = \sqrt{1-\beta_t}\, x_{t-1} + \sqrt{\beta_t}\, \epsilon .
# $$
#
# The number $\beta_t \in (0, 1)$ is the *variance of step $t$*. `diffusion_lib` writes
# this step as `q_step`; `show_source` (from the book's helper module) prints the
# library's own code:

# %%
show_source(dl.q_step)

# %% [markdown]
# The step takes the 0-indexed `t` of the library, so the paper's step $t$ is
# `q_step(schedule, x, t - 1)`. As a first check, take one fixed point
# $x_{t-1}$, apply step $t = T$ to many copies of it, and compare the Monte Carlo mean
# and variance of $x_T$ with $\sqrt{1-\beta_T}\, x_{t-1}$ and $\beta_T$. With $N$
# copies the mean has a standard error of $\sqrt{\beta_T / N}$, the variance one of
# $\beta_T \sqrt{2/(N-1)}$; we allow five of each.

# %% tags=["nbval-check-output"]
schedule = dl.NoiseSchedule.linear().to(device)   # the DDPM schedule, below
T = schedule.num_timesteps
generator = torch.Generator(device=device).manual_seed(seed)

t = T
N = num_samples
beta = schedule.betas[t - 1]
point = torch.tensor([1.5, -0.5], device=device)
x_prev = point.expand(N, 2)                                 # (N, 2)
x_t = dl.q_step(schedule, x_prev, t - 1, generator=generator)   # (N, 2)

mean_error = (x_t.mean(0) - (1 - beta).sqrt() * point).abs()
var_error = (x_t.var(0) - beta).abs()
mean_ok = (mean_error < 5 * (beta / N).sqrt()).all().item()
var_ok = (var_error < 5 * beta * (2 / (N - 1)) ** 0.5).all().item()
print(f"beta_T = {beta.item():.3f}")
print("mean = sqrt(1 - beta_T) x_(T-1) within 5 standard errors:", mean_ok)
print("variance = beta_T within 5 standard errors:", var_ok)
assert mean_ok and var_ok

# %% [markdown]
# ## The variance schedule
#
# The sequence $\beta_1, \dots, \beta_T$ is the **variance schedule**. It is chosen
# before training and never learned. Ho et al. use $T = 1000$ steps with $\beta_t$
# increasing linearly from $\beta_1 = 10^{-4}$ to $\beta_T = 0.02$: tiny steps at the
# start, where the data still has fine detail to lose, larger ones at the end, where
# little is left. Every step is small, which is what makes each reverse step close to a
# Gaussian (chapter 1).

# %%
display(show_source(dl.linear_betas))

for t in [1, 2, 500, 999, 1000]:
    print(f"beta_{t} = {schedule.betas[t - 1].item():.6f}")

# %% [markdown]
# A `NoiseSchedule` stores these betas together with every quantity derived from them,
# as tensors named after the formulas (`betas`, `alphas`, `alpha_bars`, ...), computed in
# double precision. Two of them appear in this chapter:
#
# $$
# \alpha_t = 1 - \beta_t, \qquad \bar\alpha_t = \prod_{s=1}^{t} \alpha_s .
# $$
#
# Unrolling the step shows what $\bar\alpha_t$ means: the mean of $x_t$ given $x_0$ is
# $\sqrt{\alpha_t} \cdots \sqrt{\alpha_1}\, x_0 = \sqrt{\bar\alpha_t}\, x_0$, so
# $\bar\alpha_t$ is the fraction of the data's variance that survives $t$ steps.
# Chapter 4 derives the full distribution of $x_t$ given $x_0$.
#
# ## Why the factor $\sqrt{1-\beta_t}$?
#
# The step does not only add noise: it also shrinks the previous state. Suppose
# $x_{t-1}$ has variance $v_{t-1}$ in some coordinate. The noise is independent of it,
# and variances of independent terms add, so
#
# $$
# v_t = (1-\beta_t)\, v_{t-1} + \beta_t
# \quad\Longleftrightarrow\quad
# v_t - 1 = (1-\beta_t)\,(v_{t-1} - 1).
# $$
#
# If the data has unit variance, $v_t = 1$ at every step: the process is **variance
# preserving**. If it does not, the distance to $1$ shrinks by the factor $1-\beta_t$ at
# every step, so $v_T - 1 = \bar\alpha_T\,(v_0 - 1)$, which is nearly $0$. Meanwhile the
# mean $\sqrt{\bar\alpha_t}\, x_0$ decays to almost $0$. Whatever the data, $x_T$ ends up
# close to $\mathcal{N}(0, \mathbf{I})$, a distribution we know and can sample from to
# start the reverse process.
#
# Without the factor, the step would be $x_t = x_{t-1} + \sqrt{\beta_t}\, \epsilon$. Then
# $v_t = v_{t-1} + \beta_t$ grows without bound, and the mean stays $x_0$ forever: the
# end of the chain still depends on the data, so it is not a fixed distribution we could
# start from. Let us run both versions on the swiss roll, a 2-D data set standardized to
# unit variance. The library has no step without the factor (nobody should use one), so
# we write it with `dl.reparameterize`, which returns `mean + std * eps`.

# %%
points = dl.load_dataset("swissroll", device=device)  # standardized 2-D
x0 = points.get_batch(0, num_samples, seed=seed)      # (N, 2)

# with the factor: the library's chain; entry t is x_t, (T + 1, N, 2)
preserved = dl.q_sample_chain(schedule, x0, generator=generator,
                              return_trajectory=True)
# without it: x_t = x_{t-1} + sqrt(beta_t) eps
x = x0
exploding = [x0]
for t in range(1, T + 1):
    beta = schedule.betas[t - 1]
    x = dl.reparameterize(x, beta.sqrt(), generator=generator)
    exploding.append(x)
exploding = torch.stack(exploding)                    # (T + 1, N, 2)

# theory: variance 1 with the factor, 1 + beta_1 + ... + beta_t without
ts = torch.arange(T + 1)
betas = schedule.betas.cpu().double()
theory_exploding = 1 + torch.cat([torch.zeros(1), betas.cumsum(0)])

# %% tags=["hide-input"] mystnb={"image": {"alt": "Left: the variance of x_t stays at 1 with the factor (solid) and grows to about 11 without it (dashed). Middle and right: x_T (grey dots) around the swiss roll x_0 (black), tight with the factor, spread out without"}}
fig, axes = plt.subplots(1, 3, figsize=(8, 2.9),
                         gridspec_kw={"width_ratios": [1.4, 1, 1]})
ax = axes[0]
ax.plot(ts, preserved.var(1).mean(1).cpu(), "-",
        label=r"with $\sqrt{1-\beta_t}$")
ax.plot(ts, exploding.var(1).mean(1).cpu(), "--", label="without")
ax.plot(ts, torch.ones(T + 1), "k:", label="theory")
ax.plot(ts, theory_exploding, "k:")
ax.set(xlabel="$t$", title="variance of $x_t$ (Monte Carlo)")
ax.legend(fontsize=8)
for ax, path, name in [(axes[1], preserved, "with"),
                       (axes[2], exploding, "without")]:
    end, start = path[T].cpu(), x0.cpu()
    # light grey and black: the two sets stay apart in grayscale too
    ax.scatter(end[:, 0], end[:, 1], s=1, alpha=0.5, color="0.65",
               label="$x_T$")
    ax.scatter(start[:, 0], start[:, 1], s=0.3, color="black", label="$x_0$")
    ax.set(xlim=(-10, 10), ylim=(-10, 10), aspect="equal",
           title=fr"{name} $\sqrt{{1-\beta_t}}$")
    ax.legend(fontsize=8, loc="upper right", markerscale=5)
fig.tight_layout()
plt.show()

# %% [markdown]
# The numbers behind the figure: the variance at $t = T$, and the correlation between a
# coordinate of $x_0$ and the same coordinate of $x_T$. With the factor, the correlation
# is $\sqrt{\bar\alpha_T} \approx 0.006$: $x_T$ has forgotten $x_0$. Without it, the
# correlation is $1/\sqrt{1 + \sum_s \beta_s} \approx 0.3$: $x_T$ still remembers where
# it started. (The standard error of a sample correlation $\rho$ is about
# $(1-\rho^2)/\sqrt{N}$.)

# %% tags=["nbval-check-output"]
def correlation(a, b):
    """Pearson correlation of two (N,) samples."""
    a, b = a - a.mean(), b - b.mean()
    return ((a * b).mean() / (a.square().mean() * b.square().mean()).sqrt())


var_end = theory_exploding[T].item()
cases = {  # name: (path, Var x_T, corr(x_0, x_T)) in theory
    "with": (preserved, 1.0, schedule.sqrt_alpha_bars[T - 1].item()),
    "without": (exploding, var_end, var_end ** -0.5),
}
for name, (path, var_theory, corr_theory) in cases.items():
    var_mc = path[T].var(0).mean().item()
    corr_mc = correlation(path[0, :, 0], path[T, :, 0]).item()
    # relative error of a variance: standard error sqrt(2 / (N - 1))
    var_ok = abs(var_mc / var_theory - 1) < 5 * (2 / (N - 1)) ** 0.5
    corr_ok = abs(corr_mc - corr_theory) < 5 * (1 - corr_theory**2) / N**0.5
    print(f"{name} the factor: theory Var x_T = {var_theory:.2f}, "
          f"corr(x_0, x_T) = {corr_theory:.3f}")
    print("    Monte Carlo agrees within 5 standard errors:",
          var_ok and corr_ok)
    assert var_ok and corr_ok

# %% [markdown]
# ## Watching it happen
#
# Here are the swiss roll and an image from the `dataset` parameter (an 8×8 digit by
# default) going through the same linear schedule. Each frame is one state of a single
# run of the chain, so every point and every pixel moves continuously from frame to
# frame. Press play.

# %%
# pixels scaled to [-1, 1]
images = dl.load_dataset(dataset, download=download, device=device)
image = images.get_batch(0, 1, seed=seed)             # (1, C, H, W)


def run_chain(schedule_name):
    """Forward runs of the points and of the image, from a fresh generator.

    Returns the two trajectories, (T + 1, N, 2) and (T + 1, 1, C, H, W).
    """
    chosen = dl.NoiseSchedule.from_name(schedule_name).to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    return (dl.q_sample_chain(chosen, x0, generator=g, return_trajectory=True),
            dl.q_sample_chain(chosen, image, generator=g,
                              return_trajectory=True))


paths = {name: run_chain(name) for name in ["linear", "cosine"]}


def show_points(ax, x):
    x = x.cpu()
    ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
    ax.set(xlim=(-4, 4), ylim=(-4, 4), aspect="equal",
           xticks=[], yticks=[])

# %% tags=["hide-input"]
frames = [0, 25, 50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 550, 600,
          700, 800, 900, T]
point_path, image_path = paths["linear"]
# 5 inches at 100 dpi: 500 pixels wide, a title in 17-pixel letters
fig, (ax_points, ax_image) = plt.subplots(1, 2, figsize=(5, 2.8), dpi=100)
fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.86, wspace=0.1)


def draw(t):
    ax_points.clear()
    ax_image.clear()
    show_points(ax_points, point_path[t, :500])   # 500 keep the frames small
    show_image(ax_image, image_path[t, 0])
    alpha_bar = schedule.alpha_bars[t - 1].item() if t > 0 else 1.0
    fig.suptitle(fr"linear schedule, $t = {t}$, "
                 fr"$\bar\alpha_t = {alpha_bar:.3f}$", fontsize=12)


display(animation_html(
    fig, draw, frames, interval=300,
    caption="The swiss roll and a digit under the linear schedule, from "
            "t = 0 to t = 1000: both dissolve into noise as alpha-bar falls "
            "from 1 to 0. Press play, or step through the frames."))

# %% [markdown]
# ## Linear and cosine schedules
#
# The linear schedule works, but {cite:t}`nichol2021improved` noticed that with it
# $\bar\alpha_t$ falls close to zero well before $t = T$: the last few hundred steps
# turn noise into noise and contribute little, and the data is destroyed quickly in the
# middle of the chain. This matters most for small images (64×64 pixels and below).
# They proposed
# to choose $\bar\alpha_t$ directly, as a squared cosine that decreases slowly at both
# ends,
#
# $$
# \bar\alpha_t = \frac{f(t)}{f(0)}, \qquad
# f(t) = \cos^2\!\left(\frac{t/T + s}{1 + s} \cdot \frac{\pi}{2}\right), \qquad s = 0.008,
# $$
#
# and to deduce the steps from it, $\beta_t = 1 - \bar\alpha_t / \bar\alpha_{t-1}$,
# clipped at $0.999$ so that the last step stays a step.

# %%
show_source(dl.cosine_betas)

# %% [markdown]
# Below, the two schedules side by side, through three quantities: the step variances
# $\beta_t$, the surviving signal $\bar\alpha_t$, and the **signal-to-noise ratio**
# $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$, the variance of the data part of
# $x_t$ over that of its noise part (chapter 4 explains it). The ratio spans many orders
# of magnitude, so it is plotted on a log scale.

# %% tags=["hide-input"] mystnb={"image": {"alt": "beta_t, alpha-bar_t and SNR(t) against t for the linear (solid) and cosine (dashed) schedules: the cosine alpha-bar falls later and more evenly"}}
schedules = {name: dl.NoiseSchedule.from_name(name, dtype=torch.float64)
             for name in ["linear", "cosine"]}
steps = torch.arange(1, T + 1)                    # the paper's t = 1..T
fig, axes = plt.subplots(1, 3, figsize=(8, 2.6))
for (name, s), style in zip(schedules.items(), ["-", "--"]):
    axes[0].plot(steps, s.betas, style, label=name)
    axes[1].plot(steps, s.alpha_bars, style, label=name)
    axes[2].plot(steps, s.snr, style, label=name)
axes[0].set(yscale="log", title=r"$\beta_t$", xlabel="$t$")
axes[1].set(title=r"$\bar\alpha_t$", xlabel="$t$")
axes[2].set(yscale="log", title=r"SNR$(t)$", xlabel="$t$")
axes[2].axhline(1, color="k", lw=0.5)
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The same facts as numbers. The linear schedule keeps almost no signal at the end
# ($\bar\alpha_T \approx 4 \cdot 10^{-5}$) and spends a large share of its steps in
# nearly pure noise; the cosine schedule reaches the midpoint $\bar\alpha_t = 1/2$
# later and wastes fewer steps.

# %% tags=["nbval-check-output"]
for name, s in schedules.items():
    alpha_bars = s.alpha_bars
    # index + 1: the paper's first t with alpha_bar_t < 1/2
    half = int((alpha_bars < 0.5).nonzero()[0]) + 1
    wasted = (alpha_bars < 1e-2).double().mean().item()
    print(f"{name}: alpha_bar_T = {alpha_bars[-1].item():.1e}, "
          f"alpha_bar_t < 1/2 from t = {half},")
    print(f"    alpha_bar_t < 0.01 in {wasted:.0%} of the steps")
    assert alpha_bars[-1] < 1e-4

# %% [markdown]
# What this means for the data: the figure below shows the same run of the chain
# (same noise draws) under both schedules, at the same timesteps. Under the cosine
# schedule the image and the roll stay recognizable for longer.

# %% tags=["hide-input"] mystnb={"image": {"alt": "The swiss roll and a digit at t = 0 to 800 under the linear and the cosine schedule: with the cosine schedule both keep their shape for longer"}}
shown = [0, 100, 200, 300, 400, 600, 800]
fig, axes = plt.subplots(4, len(shown), figsize=(7.5, 4.8))
for block, name in enumerate(["linear", "cosine"]):
    point_path, image_path = paths[name]
    for col, t in enumerate(shown):
        show_points(axes[2 * block, col], point_path[t])
        show_image(axes[2 * block + 1, col], image_path[t, 0])
        axes[2 * block, col].set_title(f"$t = {t}$", fontsize=9)
    axes[2 * block, 0].set_ylabel(name, fontsize=9)
    axes[2 * block + 1, 0].set_ylabel(name, fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# When you run this notebook in Jupyter or Colab, the next cell (hidden in the web
# version) adds a slider for $t$ and a choice of schedule, and redraws the two panels
# for any step.

# %% tags=["remove-cell"]
def show_step(t, schedule):
    point_path, image_path = paths[schedule]
    fig, (ax_points, ax_image) = plt.subplots(1, 2, figsize=(6, 3))
    show_points(ax_points, point_path[t])
    show_image(ax_image, image_path[t, 0])
    alpha_bars = schedules[schedule].alpha_bars
    alpha_bar = alpha_bars[t - 1].item() if t > 0 else 1.0
    fig.suptitle(fr"{schedule} schedule, $t = {t}$, "
                 fr"$\bar\alpha_t = {alpha_bar:.3f}$")
    plt.show()


# a slider for t (0..T in steps of 10, starting at 300) and two buttons
_ = interact(show_step, t=(0, T, 10, 300), schedule=["linear", "cosine"])

# %% [markdown]
# ## Summary
#
# * One forward step shrinks the state by $\sqrt{1-\beta_t}$ and adds Gaussian noise of
#   variance $\beta_t$; it has no learnable parameters.
# * The shrinking keeps the variance at $1$ and drives any data towards
#   $\mathcal{N}(0, \mathbf{I})$; without it the variance explodes and $x_T$ keeps
#   the memory of $x_0$.
# * The schedule $\beta_1, \dots, \beta_T$ sets the pace. The cosine schedule spreads the
#   destruction more evenly over the steps than the linear one.
#
# Chapter 3 chains the steps into the full forward process and asks what it costs to
# simulate.
#
# ## Exercises
#
# **Exercise 2.1** (show that). Let the data have unit variance in a coordinate, and
# let $x_1, x_2, \dots$ follow the forward steps. Show that the correlation between
# that coordinate of $x_0$ and of $x_t$ is $\sqrt{\bar\alpha_t}$. From which $t$ is it
# below $1/2$, for the linear and for the cosine schedule? Check the linear answer on
# the swiss-roll chains of this chapter.
#
# ```{admonition} Solution
# :class: dropdown
#
# The noise of step $t$ is independent of $x_0$ and of $x_{t-1}$, so
# $\mathrm{Cov}(x_0, x_t) = \sqrt{1-\beta_t}\,\mathrm{Cov}(x_0, x_{t-1})$. Repeating
# down to $\mathrm{Cov}(x_0, x_0) = \mathrm{Var}\, x_0 = 1$ gives
# $\mathrm{Cov}(x_0, x_t) = \sqrt{\bar\alpha_t}$. The variance of $x_t$ stays $1$ (the
# variance-preserving property above), so the correlation is the covariance. It falls
# below $1/2$ when $\bar\alpha_t < 1/4$: from $t = 369$ for the linear schedule, and
# only from $t = 665$ for the cosine one, which keeps the signal longer. The cell
# finds both and measures the correlation on the simulated chains at $t = 369$.
# ```

# %% tags=["hide-cell"]
# Exercise 2.1: corr(x_0, x_t) = sqrt(alpha_bar_t) falls below 1/2
below = {name: int((s.alpha_bars < 0.25).nonzero()[0]) + 1   # paper's t
         for name, s in schedules.items()}
print("correlation < 1/2 from t =", below)
t = below["linear"]
rho = schedule.sqrt_alpha_bars[t - 1].item()
measured = correlation(preserved[0, :, 0], preserved[t, :, 0]).item()
print(f"t = {t}: sqrt(alpha_bar_t) = {rho:.3f}, measured {measured:.3f}")
assert below == {"linear": 369, "cosine": 665}
assert abs(measured - rho) < 5 * (1 - rho**2) / N**0.5

# %% [markdown]
# **Exercise 2.2** (predict, then run). Double every $\beta_t$ of the linear schedule
# (from $2 \cdot 10^{-4}$ to $0.04$). Since $\log(1 - 2\beta) \approx 2 \log(1 -
# \beta)$ for small $\beta$, predict the new $\bar\alpha_t$ from the old one, and from
# it the first $t$ at which the new $\bar\alpha_t$ is below $1/2$ (it is $t = 260$ for
# the original schedule). Then build the schedule with `dl.NoiseSchedule(betas)` and
# check.
#
# ```{admonition} Solution
# :class: dropdown
#
# $\log \bar\alpha_t = \sum_{s \le t} \log(1 - \beta_s)$, so doubling every
# $\beta_s$ roughly doubles $\log \bar\alpha_t$: the new $\bar\alpha_t$ is about the
# square of the old one. It falls below $1/2$ where the old one falls below
# $1/\sqrt 2 \approx 0.71$, at $t = 182$, and the schedule, exactly computed, agrees.
# The approximation drops terms of order $\beta^2$, tiny at every step but adding up
# over a thousand of them: at $t = T$ the true value is 13% below the square.
# ```

# %% tags=["hide-cell"]
# Exercise 2.2: twice the step variances
linear64 = schedules["linear"]
doubled = dl.NoiseSchedule(2 * linear64.betas, dtype=torch.float64)
predicted = int((linear64.alpha_bars**2 < 0.5).nonzero()[0]) + 1
actual = int((doubled.alpha_bars < 0.5).nonzero()[0]) + 1
end_ratio = (doubled.alpha_bars[-1] / linear64.alpha_bars[-1] ** 2).item()
print(f"alpha_bar_t < 1/2 from t = {actual} (predicted {predicted}); "
      f"at t = T, new / old^2 = {end_ratio:.2f}")
assert actual == predicted == 182 and abs(end_ratio - 0.87) < 0.01

# %% [markdown]
# **Exercise 2.3** (predict, then compute exactly). In chapter 1's figure the eight
# blobs of `8gaussians` blur into a ring before the ring fills in. A mixture of two equal Gaussians of
# standard deviation $\sigma$ whose centres are $d$ apart has a dip between them
# exactly when $d > 2\sigma$. In the standardized `8gaussians` data, neighbouring
# centres are $1.08$ apart and each blob has a standard deviation of $0.105$. After $t$
# steps the centres are $\sqrt{\bar\alpha_t}$ times closer and the blobs' variance is
# $\bar\alpha_t \cdot 0.105^2 + 1 - \bar\alpha_t$. Use the rule to predict the $t$ at
# which neighbouring blobs merge. Then find it exactly: the law of $x_t$ is again a
# Gaussian mixture, `mixture.noised(sqrt(alpha_bar_t), 1 - alpha_bar_t)` (chapter 4
# derives it); find the first $t$ at which its density halfway between two
# neighbouring centres reaches the density at a centre.
#
# ```{admonition} Solution
# :class: dropdown
#
# The rule gives $\bar\alpha_t \cdot 1.08^2 = 4\,(\bar\alpha_t \cdot 0.105^2 + 1 -
# \bar\alpha_t)$, so $\bar\alpha_t \approx 0.78$, reached at $t = 153$. The exact
# density says $t = 161$: the other six blobs also put a little mass between the two,
# and the rule ignores them. The density at the origin overtakes that at a centre much
# later, at $t = 229$, when the ring fills in.
# ```

# %% tags=["hide-cell"]
# Exercise 2.3: when do neighbouring blobs merge?
mixture = dl.load_dataset("8gaussians").training_mixture
spacing = (mixture.means[0] - mixture.means[1]).norm().item()
blob_var = mixture.covariances[0, 0, 0].item()
ab_rule = 4 / (spacing**2 - 4 * blob_var + 4)     # the rule, solved
t_rule = int((linear64.alpha_bars < ab_rule).nonzero()[0]) + 1
midpoint = (mixture.means[0] + mixture.means[1]) / 2
merged = {}                                        # event: first t (paper's)
for t in range(1, T + 1):
    ab = linear64.alpha_bars[t - 1]
    law = mixture.noised(ab.sqrt(), 1 - ab)        # the law of x_t
    centre, between, origin = law.log_prob(torch.stack(
        [law.means[0], ab.sqrt() * midpoint, torch.zeros(2).double()]))
    if between >= centre:
        merged.setdefault("ring", t)
    if origin >= centre:
        merged.setdefault("filled", t)
        break
print(f"spacing {spacing:.2f}, blob std {blob_var**0.5:.3f}: "
      f"the rule predicts t = {t_rule}")
print(f"exact density: blobs merge at t = {merged['ring']}, "
      f"the ring fills in at t = {merged['filled']}")
assert t_rule == 153 and merged == {"ring": 161, "filled": 229}
