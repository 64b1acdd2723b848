# %% [markdown]
# # Faster sampling, and where to go next
#
# Algorithm 2 needs one network call per step, $T = 1000$ calls per sample: sampling the
# 16 digits of chapter 7 took as long as about a hundred steps of training. This
# chapter measures what happens when we take fewer steps, with the sampler of
# *denoising diffusion implicit models* (DDIM, {cite:ts}`song2021denoising`), which
# reuses the network trained for DDPM unchanged. It then looks at what the network
# predicts from another angle, the *score*, which connects DDPM with score-based models
# and points to where the field went next.
#
# To measure sample quality without the noise of a particular training run, the
# denoiser here is the exact one: for data drawn from a Gaussian mixture (chapter 6's
# `8gaussians`), `GaussianMixtureOracle` computes $\mathbb{E}[\epsilon \mid x_t]$ in
# closed form, the best any network could do. Whatever is lost below is lost by the
# sampler, not by the network.
#
# As in the earlier chapters, the math is 1-indexed ($t = 1, \dots, T$) and the library
# is 0-indexed: the paper's step $t$ is the library's `t - 1`.

# %% COLAB_SETUP
# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import diffusion_lib as dl
from diffusion_lib import build_model, load_dataset
from diffusion_lib.metrics import toy_report
from diffusion_lib.notebook import (
    check_device,
    check_parameter,
    find_model,
    seconds,
    show_image,
    show_source,
)
from diffusion_lib.pretrained import load_reference, verify_manifest
from diffusion_lib.training import to_data_space
from diffusion_lib.training.conditional import class_grid

# %% tags=["parameters"]
seed = 0               # every random draw in the chapter comes from this seed
device = "cpu"         # where the U-Net of the timing runs ("cuda": a GPU)
num_samples = 2000     # samples per sampler setting (at most 5000 are used)
models_dir = ""        # folder of the shipped models; "" finds book/models
model_samples = 100    # shipped MNIST model: samples per number of steps

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("num_samples", num_samples, int, lambda v: v >= 100,
                "an int >= 100")
check_parameter("models_dir", models_dir, str, lambda v: True, "a folder")
check_parameter("model_samples", model_samples, int, lambda v: v >= 20,
                "an int >= 20")
N = min(num_samples, 5000)
print(f"parameters ok: {seed=}, {device=}, {num_samples=}, {models_dir=}, "
      f"{model_samples=}")

# %% [markdown]
# The data and the exact denoiser, in the standardized space a network would see:

# %%
eight = load_dataset("8gaussians", split="test", seed=seed)
mixture = eight.training_mixture             # 8 isotropic bumps in 2-D
schedule = dl.NoiseSchedule.linear()         # T = 1000, as in DDPM
oracle = dl.GaussianMixtureOracle(schedule, mixture)   # E[eps | x_t]
T = schedule.num_timesteps
bump_std = mixture.covariances[0, 0, 0].sqrt().item()
print(f"{mixture.num_components} components, std {bump_std:.3f} each; T = {T}")

# %% [markdown]
# ## DDIM: the same marginals, another process
#
# The DDPM objective only ever uses the marginals $q(x_t \mid x_0) =
# \mathcal{N}(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t)\mathbf{I})$, never the
# Markov chain that produced them. {cite:ts}`song2021denoising` observe that many
# processes share these marginals, most of them not Markov, and that each has its own
# reverse step. Given a noise prediction $\hat\epsilon = \epsilon_\theta(x_t, t)$, first
# estimate the data point (the closed form of chapter 4, solved for $x_0$),
#
# $$
# \hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\,\hat\epsilon}{\sqrt{\bar\alpha_t}},
# $$
#
# then jump to any earlier step $s < t$ by putting $\hat x_0$ back at the noise level
# of step $s$ (Song, Meng and Ermon, Eq. 12):
#
# $$
# \begin{aligned}
# x_s &= \sqrt{\bar\alpha_s}\,\hat x_0
#   + \sqrt{1 - \bar\alpha_s - \sigma_{t,s}^2}\;\hat\epsilon
#   + \sigma_{t,s}\, z, \qquad z \sim \mathcal{N}(0, \mathbf{I}), \\
# \sigma_{t,s} &= \eta \sqrt{\frac{1 - \bar\alpha_s}{1 - \bar\alpha_t}}
#   \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_s}},
# \end{aligned}
# $$
#
# with $\bar\alpha_0 = 1$ (so the last jump, to $s = 0$, returns $\hat x_0$). The middle
# term reuses the predicted noise as the "direction pointing to $x_t$"; $\eta$ sets how
# much fresh noise replaces it. Two choices of $\eta$ matter:
#
# * $\eta = 0$: no fresh noise. Sampling is a deterministic function of $x_T$, an
#   *implicit* model, like a GAN's generator.
# * $\eta = 1$ with every step ($s = t - 1$): $\sigma_{t,t-1}^2 = \tilde\beta_t$, the
#   posterior variance of chapter 6, and the update is exactly DDPM's Algorithm 2.
#
# Because the step can jump from $t$ to any $s < t$, sampling can visit a short
# increasing subsequence $\tau_1 < \dots < \tau_S$ of the steps $\{1, \dots, T\}$: $S$
# network calls instead of $T$. The library's `ddim_step` is one jump (its source is
# folded below), and `ddim_sample_loop` walks a subsequence, by default
# `ddim_timesteps(T, S)`, evenly spaced. Like every index of the library, these are
# 0-indexed: the library's index $i$ is the paper's step $\tau = i + 1$, so its
# subsequence always ends at $\tau_S = T$ and starts at $\tau_1 = 1$ here.

# %%
display(show_source(dl.ddim_step, collapsed=True))
indices = dl.ddim_timesteps(T, 10)
print("ddim_timesteps(1000, 10), 0-indexed:")
print("   ", indices)
print("the paper's tau:")
print("   ", [i + 1 for i in indices])

# %% [markdown]
# **Check 1.** With the *true* noise in place of $\hat\epsilon$ and $\eta = 0$, a DDIM
# jump from $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon$ lands
# on $\sqrt{\bar\alpha_s}\, x_0 + \sqrt{1 - \bar\alpha_s}\,\epsilon$: the same data
# point and the same noise, at the noise level of step $s$. The jump moves along the
# marginals. (In float64: at $t = T$ the division by $\sqrt{\bar\alpha_t} \approx 0.006$
# magnifies float32 rounding to about $10^{-4}$.)

# %% tags=["nbval-check-output"]
schedule64 = dl.NoiseSchedule.linear(dtype=torch.float64)
generator = torch.Generator().manual_seed(seed)
x0 = mixture.sample(N, generator=generator)              # (N, 2) float64
noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
ok = True
for t, s in [(1000, 500), (500, 100), (100, 1), (1000, 1)]:   # paper's steps
    t_lib, s_lib = torch.full((N,), t - 1), torch.full((N,), s - 1)
    x_t = dl.q_sample(schedule64, x0, t_lib, noise)
    jumped = dl.ddim_step(schedule64, noise, x_t, t_lib, s_lib, eta=0.0)
    target = dl.q_sample(schedule64, x0, s_lib, noise)
    ok = ok and torch.allclose(jumped, target, atol=1e-10)
print("DDIM with the true noise follows q(x_s | x_0):", ok)
assert ok

# %% [markdown]
# **Check 2.** DDIM with $\eta = 1$ on all $T$ steps and DDPM's `p_sample_loop`, fed the
# same random numbers, produce the same samples (in float64, up to rounding):

# %% tags=["nbval-check-output"]
n_check = 200
oracle64 = dl.GaussianMixtureOracle(schedule64, mixture)
ddpm = dl.p_sample_loop(schedule64, oracle64, (n_check, 2), progress=False,
                        generator=torch.Generator().manual_seed(seed))
ddim_full = dl.ddim_sample_loop(
    schedule64, oracle64, (n_check, 2), num_steps=T, eta=1.0, progress=False,
    generator=torch.Generator().manual_seed(seed))
same = torch.allclose(ddpm, ddim_full, atol=1e-10)
print("DDIM(eta = 1, all steps) == DDPM:", same)
assert same

# %% [markdown]
# **Check 3.** With $\eta = 0$ the sampler draws no random numbers after $x_T$: two runs
# from the same $x_T$ agree exactly, whatever generator they are handed.

# %% tags=["nbval-check-output"]
x_T = torch.randn(n_check, 2, generator=torch.Generator().manual_seed(seed))
runs = [dl.ddim_sample_loop(schedule, oracle, x_T=x_T, num_steps=20, eta=0.0,
                            progress=False,
                            generator=torch.Generator().manual_seed(s))
        for s in (1, 2)]
print("eta = 0 is deterministic given x_T:", torch.equal(runs[0], runs[1]))
assert torch.equal(runs[0], runs[1])

# %% [markdown]
# ## Quality against the number of steps
#
# For each number of steps $S$ we draw `N` samples with DDIM at $\eta = 0$ and
# $\eta = 1$ and score them with `toy_report` (chapter 6). The headline number is
# $\mathrm{KL}(p_\text{data} \,\Vert\, q_\text{samples})$: the exact log density of the
# data against that of a Gaussian mixture fitted to the samples, averaged over data
# points. Its **floor** is what a fresh sample of real data scores (the fit is not
# perfect at finite `N`). We also count the share of samples that land on one of the
# eight bumps (within 3 of its standard deviations); for real data it is
# $1 - e^{-9/2} \approx 98.9\%$, since a 2-D Gaussian puts 1.1% of its mass further out.

# %%
step_counts = [2, 5, 10, 20, 50, 100, 200, 1000]
results = {}                                  # (eta, S) -> report
sampling_seconds = {}
for eta in (0.0, 1.0):
    for S in step_counts:
        start = time.perf_counter()
        x = dl.ddim_sample_loop(schedule, oracle, (N, 2), num_steps=S,
                                eta=eta, progress=False,
                                generator=torch.Generator().manual_seed(seed))
        sampling_seconds[eta, S] = time.perf_counter() - start
        results[eta, S] = toy_report(eight.to_output(x), eight, seed=seed)
        results[eta, S]["points"] = x
kl_floor = results[0.0, 1000]["kl_floor"]

# %% tags=["nbval-ignore-output"]
rows = ["| steps $S$ | KL, $\\eta = 0$ | KL, $\\eta = 1$ "
        "| on a bump, $\\eta = 0$ | on a bump, $\\eta = 1$ |",
        "|---:|---:|---:|---:|---:|"]


def kl_text(kl):
    """No exponents: 4,334, not 4.33e+03; 3 significant digits below 1000."""
    return f"{kl:,.0f}" if kl >= 1000 else f"{kl:.3g}"


for S in step_counts:
    a, b = results[0.0, S], results[1.0, S]
    rows.append(f"| {S} | {kl_text(a['kl'])} | {kl_text(b['kl'])} | "
                f"{a['in_mode_fraction']:.1%} | {b['in_mode_fraction']:.1%} |")
data_in_mode = 1 - np.exp(-3 ** 2 / 2)   # 2-D Gaussian: within 3 std
rows.append(f"| data (floor) | {kl_text(kl_floor)} | {kl_text(kl_floor)} | "
            f"{data_in_mode:.1%} | {data_in_mode:.1%} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# **Check.** With all $T$ steps both samplers reach the data's own level, within a few
# times the floor's statistical noise; with 5 steps neither does:

# %% tags=["nbval-check-output"]
full_ok = all(results[eta, T]["kl"] < kl_floor + 0.05 for eta in (0.0, 1.0))
few_bad = all(results[eta, 5]["kl"] > 10 * kl_floor for eta in (0.0, 1.0))
print("1000 steps: KL within 0.05 nats of the floor:", full_ok)
print("5 steps: KL more than 10x the floor:", few_bad)
assert full_ok and few_bad

# %% tags=["hide-input"] mystnb={"image": {"alt": "KL divergence against the number of sampling steps, log-log: both samplers fall towards the data floor, eta = 0 lower at few steps"}}
fig, ax = plt.subplots(figsize=(6, 3.6))
for eta, style, marker in [(0.0, "-", "o"), (1.0, "--", "s")]:
    ax.plot(step_counts, [results[eta, S]["kl"] for S in step_counts],
            linestyle=style, marker=marker, color="k", fillstyle="none",
            label=fr"DDIM, $\eta = {eta:g}$")
ax.axhline(kl_floor, color="0.5", linestyle=":", label="real data (floor)")
ax.set(xscale="log", yscale="log", xlabel="sampling steps $S$ (network calls)",
       ylabel=r"KL$(p_\mathrm{data} \Vert q)$, nats",
       title="quality against steps, exact denoiser")
ax.legend()
fig.tight_layout()
plt.show()

# %% tags=["hide-input"] mystnb={"image": {"alt": "Samples at 5, 20 and 1000 steps for eta = 0 (top) and eta = 1 (bottom): a filled disc at 5 steps, eight sharp bumps at 1000"}}
fig, axes = plt.subplots(2, 3, figsize=(8, 5.6), sharex=True, sharey=True)
for row, eta in enumerate((0.0, 1.0)):
    for col, S in enumerate((5, 20, 1000)):
        points = results[eta, S]["points"]
        axes[row, col].scatter(points[:, 0], points[:, 1], s=1, color="k",
                               alpha=0.4)
        axes[row, col].set(title=fr"$\eta = {eta:g}$, {S} steps",
                           aspect="equal", xlim=(-2.2, 2.2), ylim=(-2.2, 2.2))
fig.tight_layout()
plt.show()

# %% [markdown]
# Four things to read off. With very few steps both samplers fail the same way: each
# jump replaces $x_t$ by a blend of $\hat x_0 = \mathbb{E}[x_0 \mid x_t]$, and at high
# noise that conditional mean lies *between* the bumps, so the samples end up spread
# over a disc. From 10 to 200 steps the deterministic sampler ($\eta = 0$) has the
# lower KL at the same cost (the ratios are printed below: 1.2 at 10 steps, between
# about 1.8 and 2.7 from 20 to 200): fresh noise injected at a coarse step has too few
# later steps to be removed. At 1000 steps the order flips, both near the floor.
#
# The share on a bump shows the other side of the same coin. At 100 and 200 steps,
# $\eta = 1$ puts *more* samples on a bump than the data itself does (100.0% at 200
# steps, against 98.9%): its bumps are too narrow, over-concentrated. A coarse jump
# with $\eta = 1$ adds fresh noise of variance $\sigma_{t,s}^2$, the spread the jump
# would have if $x_0$ were known; it is not, and over a long jump the true spread of
# $x_s$ given $x_t$ is larger (chapter 6's information terms). The last jump then
# returns a conditional mean, which pulls each sample towards the centre of its bump.
# The root-mean-square distance of the samples to their nearest centre, printed below,
# measures this; the KL counts it as an error, while the share on a bump rewards it.
# With all steps both samplers are at the data's own level, bump widths included:
# DDPM was never wrong, only slow.

# %% tags=["nbval-ignore-output"]
def spread(points):
    """RMS distance per coordinate to the nearest centre: a bump's std."""
    nearest = torch.cdist(points.double(), mixture.means).argmin(1)
    return (points.double() - mixture.means[nearest]).pow(2).mean().sqrt()


print("KL(eta = 1) / KL(eta = 0) at")
for group in ((10, 20, 50), (100, 200)):
    print("    " + ", ".join(
        f"{S} steps: {results[1.0, S]['kl'] / results[0.0, S]['kl']:.2f}"
        for S in group))
print(f"std of the bumps, data {bump_std:.3f}; samples:")
for S in (50, 200, T):
    print(f"    {S:4d} steps: eta = 0 {spread(results[0.0, S]['points']):.3f},"
          f" eta = 1 {spread(results[1.0, S]['points']):.3f}")

# %% [markdown]
# The spacing of the subsequence matters too. `ddim_sample_loop` takes any increasing
# `timesteps`; Song, Meng and Ermon also use a *quadratic* spacing, dense near
# $t = 0$ where the details are decided:

# %%
rows = ["| steps $S$ | KL, uniform | KL, quadratic |", "|---:|---:|---:|"]
quadratic_kl = {}


def quadratic(S):
    """S library indices 0..T-1 spaced quadratically (fewer if two coincide)."""
    return np.unique(np.round((T - 1) * np.linspace(0, 1, S) ** 2)
                     .astype(int)).tolist()


for S in (5, 10, 20, 50):
    taus = quadratic(S)
    x = dl.ddim_sample_loop(schedule, oracle, (N, 2), timesteps=taus, eta=0.0,
                            progress=False,
                            generator=torch.Generator().manual_seed(seed))
    quadratic_kl[len(taus)] = toy_report(eight.to_output(x), eight,
                                         seed=seed)["kl"]
    rows.append(f"| {S} ({len(taus)} distinct) | {results[0.0, S]['kl']:.3g} "
                f"| {quadratic_kl[len(taus)]:.3g} |")
print("quadratic, 10 steps (0-indexed):", quadratic(10))

# %% tags=["nbval-ignore-output"]
display(Markdown("\n".join(rows)))

# %% [markdown]
# On this data the quadratic spacing wins at every budget: small, sharp bumps are
# exactly the detail that the last, low-noise steps resolve. (For natural images the
# DDIM paper found quadratic better on CIFAR-10 and uniform on others; it is a choice
# to measure, not a law.)
#
# ### The same question on real digits
#
# The exact denoiser isolates the sampler's error; on images no exact denoiser exists,
# but the MNIST model shipped with the book (chapter 7) shows whether the lesson
# carries over. The same starting noise goes through DDIM ($\eta = 0$) with 5 to 50
# steps, and each set of samples is scored by the reference classifier of chapter 7:
# the Frechet distance of its features to the test digits', next to the floor that as
# many real training digits reach.

# %%
mnist_dir = find_model("mnist", models_dir)
verify_manifest(mnist_dir)                 # sizes and SHA-256 of every file
mnist = dl.load_run(mnist_dir, device=device)
reference = load_reference(find_model("mnist-classifier", models_dir),
                           device=device)
x_T = torch.randn(model_samples, *mnist.data["sample_shape"],
                  generator=torch.Generator().manual_seed(seed)).to(device)
digit_steps = [5, 10, 20, 50]
digit_samples, digit_fd = {}, {}
for S in digit_steps:
    with torch.no_grad():
        x = dl.ddim_sample_loop(mnist.schedule, mnist.model, num_steps=S,
                                x_T=x_T, clip_denoised=True,
                                progress=False).cpu()
    digit_samples[S] = to_data_space(x, mnist.data)      # (n, 28, 28, 1)
    digit_fd[S] = reference.frechet(reference.features(x))
digit_floor = reference.floor(model_samples)

# %% tags=["hide-input"] mystnb={"image": {"alt": "Left: Frechet distance of MNIST samples against the number of DDIM steps, falling from 5 to 20 steps and flat after, above the real-data floor. Right: the same eight samples at 5, 10, 20 and 50 steps, one row each"}}
fig, (ax, ax_images) = plt.subplots(1, 2, figsize=(8, 3.4),
                                    gridspec_kw={"width_ratios": [1.2, 1]})
ax.plot(digit_steps, [digit_fd[S] for S in digit_steps], "ko-",
        fillstyle="none", label="shipped model, DDIM")
ax.axhline(digit_floor, color="0.5", linestyle=":",
           label=f"{model_samples} real digits (floor)")
ax.set(xscale="log", xlabel="DDIM steps $S$", ylabel="Frechet distance",
       title="MNIST, reference features", ylim=(0, None))
ax.set_xticks(digit_steps, [str(S) for S in digit_steps])
ax.minorticks_off()
ax.legend(fontsize=8)
picture = class_grid([digit_samples[S][:8] for S in digit_steps])
show_image(ax_images, picture, "the same 8 samples")
H = digit_samples[5].shape[1]
ax_images.set_yticks([1 + i * (H + 1) + H / 2 for i in range(len(digit_steps))],
                     [f"{S} steps" for S in digit_steps])
fig.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
print(f"Frechet distance of {model_samples} samples (floor "
      f"{digit_floor:.2f}):")
print("  " + ", ".join(f"{S} steps: {digit_fd[S]:.2f}" for S in digit_steps))

# %% [markdown]
# **Check.** Five steps are worse than twenty, and going from 20 to 50 steps changes
# the distance by less than half as much as going from 5 to 20:

# %% tags=["nbval-check-output"]
steep = digit_fd[5] > digit_fd[20]
flat = abs(digit_fd[20] - digit_fd[50]) < 0.5 * (digit_fd[5] - digit_fd[20])
print("5 steps worse than 20:", steep)
print("20 -> 50 steps changes less than half as much as 5 -> 20:", flat)
assert steep and flat

# %% [markdown]
# The digits tell the same story as the mixture: the first few steps of the budget
# buy most of the quality, and after about twenty the distance is set by the network
# rather than by the sampler. That is why `sample` uses 50 DDIM steps for this model
# by default, and why its manifest's figures are measured with 20.
#
# ## Time per sample
#
# With the oracle, a step costs almost nothing; with a real network, each step is one
# forward pass, and the time per sample is the number of steps times the cost of a
# call. We time the chapter 7 U-Net for 8x8 digits (untrained: the cost does not depend
# on the weights) on `device`, one batch of 64 images:

# %%
net = build_model("digits").to(device).eval()
x = torch.randn(64, 1, 8, 8, device=device)
t = torch.full((64,), T - 1, device=device)
with torch.no_grad():
    for _ in range(3):                                       # warm-up
        net(x, t)
    # the fastest of 20 calls (seconds, chapter 3)
    call_seconds = seconds(lambda: net(x, t), repeats=20, device=device)
per_image = call_seconds / 64                 # seconds per image per step

# %% tags=["nbval-ignore-output"]
print(f"one call of the digits U-Net on 64 images ({device}): "
      f"{call_seconds * 1e3:.0f} ms")
for S in (10, 50, 100, 1000):
    print(f"  {S:5d} steps: {S * per_image * 1e3:8.1f} ms per image, "
          f"{S * call_seconds:6.1f} s for a grid of 64")

# %% tags=["hide-input"] mystnb={"image": {"alt": "KL against sampling time per image for the digits U-Net on this machine, log-log: quality improves with time up to the DDPM cost"}}
fig, ax = plt.subplots(figsize=(6, 3.6))
for eta, style, marker in [(0.0, "-", "o"), (1.0, "--", "s")]:
    ax.plot([S * per_image * 1e3 for S in step_counts],
            [results[eta, S]["kl"] for S in step_counts], linestyle=style,
            marker=marker, color="k", fillstyle="none",
            label=fr"DDIM, $\eta = {eta:g}$")
ax.axhline(kl_floor, color="0.5", linestyle=":", label="real data (floor)")
ax.set(xscale="log", yscale="log",
       xlabel="ms per image (digits U-Net, this machine)",
       ylabel=r"KL$(p_\mathrm{data} \Vert q)$, nats",
       title="quality against time")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The curve is the one of the steps, stretched by the cost of a call: time per sample
# is proportional to the number of steps, so DDIM with 50 steps costs a twentieth of
# DDPM's time, for the quality in the table above. A larger network multiplies every
# point by the same factor. The performance appendix shows what a call costs for the
# CIFAR-10 U-Net design (at width 32 on the CPU, where the results so far come from):
# images per second of DDPM and of DDIM with 10 and 20 steps, next to diffusers'
# pipelines, measured by `bench/sample_throughput.py`.
#
# ## The score view
#
# What does $\epsilon_\theta$ estimate? Write the noised data's density as
# $p_t(x_t) = \int q(x_t \mid x_0)\, p(x_0)\, dx_0$. The gradient of the log of the
# Gaussian $q(x_t \mid x_0)$ is
#
# $$
# \nabla_{x_t} \log q(x_t \mid x_0) = -\frac{x_t - \sqrt{\bar\alpha_t}\, x_0}{1 - \bar\alpha_t}
# = -\frac{\epsilon}{\sqrt{1 - \bar\alpha_t}},
# $$
#
# and differentiating under the integral gives
#
# $$
# \nabla \log p_t(x_t) = \mathbb{E}[\nabla_{x_t} \log q(x_t \mid x_0) \mid x_t].
# $$
#
# So the best noise predictor, the minimiser of $L_\text{simple}$, is a scaled *score*
# (the gradient of the log density) of the noised data {cite:p}`vincent2011connection`:
#
# $$
# \epsilon^*(x_t, t) = \mathbb{E}[\epsilon \mid x_t]
# = -\sqrt{1 - \bar\alpha_t}\; \nabla_{x_t} \log p_t(x_t).
# $$
#
# Equivalently, by Tweedie's formula {cite:p}`efron2011tweedie`,
#
# $$
# \mathbb{E}[x_0 \mid x_t] = \frac{x_t + (1 - \bar\alpha_t)\, \nabla \log p_t(x_t)}{\sqrt{\bar\alpha_t}},
# $$
#
# the $\hat x_0$ of DDIM. A network trained on $L_\text{simple}$ is a score estimator.
#
# **Check 1.** For the mixture, $p_t$ is known in closed form (`mixture.noised`, chapter
# 4), so its score can be taken by automatic differentiation of the log density,
# independently of the oracle's formula, and compared with the oracle's noise
# prediction (both in float64):

# %% tags=["nbval-check-output"]
generator = torch.Generator().manual_seed(seed)
worst = 0.0
for t in [1, 10, 100, 500, 1000]:                       # the paper's t
    ab = schedule64.alpha_bars[t - 1]
    p_t = mixture.noised(ab.sqrt(), 1 - ab)              # law of x_t
    x_t = p_t.sample(500, generator=generator).requires_grad_(True)  # (500, 2)
    score = torch.autograd.grad(p_t.log_prob(x_t).sum(), x_t)[0]  # grad log p_t
    eps = oracle64(x_t.detach(), torch.full((500,), t - 1))  # E[eps | x_t]
    gap = (eps + (1 - ab).sqrt() * score).abs().max().item()
    worst = max(worst, gap / eps.abs().max().item())
print("eps* = -sqrt(1 - alpha_bar_t) * grad log p_t, relative error < 1e-6:",
      worst < 1e-6)
assert worst < 1e-6

# %% [markdown]
# **Check 2.** $\mathbb{E}[\epsilon \mid x_t]$ is a conditional mean, so its error
# $\epsilon - \epsilon^*(x_t)$ averages to zero and is uncorrelated with $x_t$. Over
# fresh pairs $(x_0, \epsilon)$, within five standard errors:

# %% tags=["nbval-check-output"]
generator = torch.Generator().manual_seed(seed + 1)
ok = True
for t in [10, 100, 500]:
    t_lib = torch.full((N,), t - 1)
    x0 = mixture.sample(N, generator=generator)          # (N, 2) float64
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    x_t = dl.q_sample(schedule, x0, t_lib, noise)
    residual = noise - oracle(x_t, t_lib)                # (N, 2)
    # its mean, and its covariance with x_t
    for stat in (residual, residual * (x_t - x_t.mean(0))):
        se = stat.std(0) / N ** 0.5
        ok = ok and bool((stat.mean(0).abs() < 5 * se).all())
print("residual has mean 0 and no correlation with x_t:", ok)
assert ok

# %% tags=["hide-input"] mystnb={"image": {"alt": "The score field of the noised data at three noise levels: arrows point to the eight bumps at small t, to their circle at t = 200, to the origin at large t"}}
grid = torch.linspace(-2, 2, 11, dtype=torch.float64)
gx, gy = torch.meshgrid(grid, grid, indexing="xy")
points = torch.stack([gx.flatten(), gy.flatten()], 1)       # (121, 2)
fig, axes = plt.subplots(1, 3, figsize=(9, 3.6), sharey=True)
for ax, t in zip(axes, [20, 200, 800]):
    score = oracle.score(points, torch.full((len(points),), t - 1))  # (121, 2)
    direction = score / score.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ax.scatter(mixture.means[:, 0], mixture.means[:, 1], s=90, marker="o",
               linewidths=1.5, facecolors="none", edgecolors="0.45")
    ax.quiver(points[:, 0], points[:, 1], direction[:, 0], direction[:, 1],
              color="k", angles="xy", scale=14, width=0.008)
    ax.set(title=f"t = {t}", aspect="equal", xlim=(-2.3, 2.3),
           ylim=(-2.3, 2.3))
fig.suptitle(r"direction of $\nabla \log p_t$ (arrows) and the eight means "
             "(circles)")
fig.tight_layout()
plt.show()

# %% [markdown]
# At small $t$ the arrows point to the nearest bump; at $t = 200$ to the circle on
# which the bumps lie, whose blur $p_t$ now is; at large $t$, where $p_t$ is nearly a
# single Gaussian, they all point to the centre. Sampling follows these arrows
# from a large $t$ down to a small one. In this view DDPM's Algorithm 2 is a noisy
# gradient ascent on $\log p_t$ with a shrinking $t$, close to the annealed Langevin
# dynamics of score-based models {cite:p}`song2019generative`.
#
# The two samplers of this chapter follow the same arrows but solve different
# equations. In the continuous-time view of {cite:ts}`song2021scorebased`, DDPM's
# steps discretize a reverse-time *stochastic* differential equation, which keeps
# injecting noise, while DDIM with $\eta = 0$ discretizes the *probability flow*, an
# ordinary differential equation without noise. Their solutions are different: one is
# a random path, the other a deterministic map from $x_T$ to $x_0$. What the two
# equations share is the marginal density at every $t$, which is $p_t$ for both; that
# is why either one turns $p_T$ into the data. The solver and its step sizes then
# decide how many network calls a good sample costs.
#
# ## Where to go next
#
# * **One framework, three readings.** {cite:t}`luo2022understanding` derives
#   diffusion models as hierarchical variational autoencoders, then shows that
#   predicting $x_0$, predicting $\epsilon$ and predicting the score are the same
#   model with different weightings, the thread of chapters 6 and 8. It is the
#   natural next read after this book.
# * **Better samplers.** Higher-order ODE solvers sample in 10-20 steps: DPM-Solver
#   {cite:p}`lu2022dpmsolver` and the Heun sampler of {cite:t}`karras2022elucidating`,
#   which also untangles the design choices (noise levels, preconditioning, loss
#   weights). Distillation trains a student to take two steps in one, repeatedly
#   {cite:p}`salimans2022progressive`.
# * **Better likelihoods and schedules.** Learned reverse variances and the cosine
#   schedule {cite:p}`nichol2021improved` (the library has `NoiseSchedule.cosine`).
# * **Conditioning and guidance.** Class- or text-conditional models, steered at
#   sampling time by classifier-free guidance {cite:p}`ho2022classifierfree`.
# * **Scale.** Running the diffusion in the latent space of an autoencoder makes
#   high-resolution images affordable {cite:p}`rombach2022high`.
#
# ## Summary
#
# * DDIM keeps DDPM's marginals and network and changes the reverse process: a jump
#   from $t$ to any $s < t$ through $\hat x_0$ and $\hat\epsilon$ (Eq. 12), with
#   $\eta$ setting the fresh noise; $\eta = 1$ on every step is DDPM (checked above).
# * With the exact denoiser, quality against steps was measured: DDIM at $\eta = 0$
#   with 100-200 steps comes within a few hundredths of a nat of 1000-step DDPM, and
#   quadratically spaced steps get as close with 50 steps on this data. Time per sample
#   is steps times the cost of a network call.
# * With few steps, fresh noise ($\eta = 1$) costs quality, and coarse stochastic
#   jumps make the bumps too narrow: a high share of samples on a bump is not, alone,
#   a sign of quality.
# * The noise predictor is a scaled score, $\epsilon^* = -\sqrt{1 - \bar\alpha_t}\,
#   \nabla \log p_t$ (checked against automatic differentiation of the exact density),
#   which links DDPM to score-based models: the reverse SDE (DDPM) and the probability
#   flow ODE (DDIM, $\eta = 0$) are different equations with the same marginals.
#
# ## Exercises
#
# **Exercise 8.1** (show that). Show that with $\eta = 1$ and a jump of one step,
# $s = t - 1$, the DDIM variance $\sigma_{t,t-1}^2$ is the posterior variance
# $\tilde\beta_t$ of chapter 6, at every $t$.
#
# ```{admonition} Solution
# :class: dropdown
#
# With $s = t - 1$, $\bar\alpha_t / \bar\alpha_{t-1} = \alpha_t$, so
# $1 - \bar\alpha_t / \bar\alpha_s = \beta_t$ and
# $\sigma_{t,t-1}^2 = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\, \beta_t =
# \tilde\beta_t$. The middle coefficient then matches too: Check 2 above shows that the
# whole update is Algorithm 2.
# ```

# %% tags=["hide-cell"]
# Exercise 8.1: sigma_(t, t-1)^2 with eta = 1, for t = 2..T
ab64 = schedule64.alpha_bars
ratio = ab64[1:] / ab64[:-1]            # alpha_bar_t / alpha_bar_(t-1)
sigma2 = (1 - ab64[:-1]) / (1 - ab64[1:]) * (1 - ratio)
same = torch.allclose(sigma2, schedule64.posterior_variance[1:], rtol=1e-12)
print("sigma_(t,t-1)^2 = beta_tilde_t for t = 2..T:", same)
assert same

# %% [markdown]
# **Exercise 8.2** (predict, then compute with the oracle). At $t = 800$ the arrows of
# the score field all point to the centre, as if the noised data were one Gaussian.
# Exercise 4.2 gave the exact noise prediction for Gaussian data; in two dimensions,
# with the data's mean $m$ and covariance $\Sigma$, it reads
# $\epsilon^*(x_t) \approx \sqrt{1 - \bar\alpha_t}\, C_t^{-1} (x_t - \sqrt{\bar\alpha_t}\,
# m)$ with $C_t = \bar\alpha_t \Sigma + (1 - \bar\alpha_t)\mathbf{I}$. At which of
# $t = 20, 200, 800, 1000$ do you expect this Gaussian approximation to be close to the
# exact denoiser of the eight bumps? Measure the relative error.
#
# ```{admonition} Solution
# :class: dropdown
#
# Close at $t = 800$ and $1000$, far off at $20$ and $200$. Once the noise is much
# wider than the circle of bumps, $p_t$ is the data blurred into one round bump, and
# only its mean and covariance matter; the approximation's error is then of the order
# of a millionth. At $t = 200$ the density is still a ring, whose score points to the
# circle, not to the centre, and at $t = 20$ it is eight bumps: the Gaussian
# approximation is wrong by about the size of the prediction itself. A denoiser that
# only knew the data's mean and covariance would be fine for the first steps of
# sampling and useless for the last ones, where the structure appears.
# ```

# %% tags=["hide-cell"]
# Exercise 8.2: the data as one Gaussian, against the exact denoiser
mean, cov = mixture.mean(), mixture.covariance()
eye = torch.eye(2, dtype=torch.float64)
cpu = torch.Generator().manual_seed(seed)
errors = {}
for t in (20, 200, 800, T):
    ab = schedule64.alpha_bars[t - 1]
    x_t = mixture.noised(ab.sqrt(), 1 - ab).sample(N, generator=cpu)
    exact = oracle64(x_t, torch.full((N,), t - 1))
    c_t = ab * cov + (1 - ab) * eye
    centred = x_t - ab.sqrt() * mean
    gaussian = (1 - ab).sqrt() * centred @ torch.linalg.inv(c_t)
    errors[t] = ((exact - gaussian).norm(dim=1).mean()
                 / exact.norm(dim=1).mean()).item()
print("relative error of the Gaussian approximation:")
print("    " + ", ".join(f"t = {t}: {e:.1e}" for t, e in errors.items()))
assert errors[800] < 1e-3 and errors[T] < 1e-3
assert errors[200] > 0.2 and errors[20] > 0.5

# %% [markdown]
# **Exercise 8.3** (predict, then run). DDIM's $\eta$ can take any value between 0 and 1.
# At 200 steps the bumps came out narrower than the data's with $\eta = 1$, and
# close to it with $\eta = 0$. Predict the width with $\eta = 0.5$, then sample.
#
# ```{admonition} Solution
# :class: dropdown
#
# In between, and much closer to $\eta = 0$: less fresh noise than with $\eta = 1$,
# so less of the too-small variance of a known $x_0$ replaces the predicted noise, and
# the bumps come out wider than at $\eta = 1$ (0.099 against 0.093 here, with 0.101
# at $\eta = 0$). $\eta$ interpolates between the deterministic probability flow and
# DDPM's stochastic steps.
# ```

# %% tags=["hide-cell"]
# Exercise 8.3: eta = 0.5 at 200 steps
half = dl.ddim_sample_loop(schedule, oracle, (N, 2), num_steps=200, eta=0.5,
                           progress=False,
                           generator=torch.Generator().manual_seed(seed))
widths = {eta: spread(results[eta, 200]["points"]).item() for eta in (0.0, 1.0)}
widths[0.5] = spread(half).item()
print(f"std of the bumps at 200 steps (data {bump_std:.3f}):")
print("    " + ", ".join(f"eta = {eta:g}: {w:.3f}"
                         for eta, w in sorted(widths.items())))
assert widths[1.0] < widths[0.5] and widths[1.0] < widths[0.0]
