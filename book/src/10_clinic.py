# %% [markdown]
# # Why are my samples bad? A clinic
#
# The questions asked most often about diffusion models are practical ones: my samples
# are noise, is my loss normal, when do I stop training, how many sampling steps are
# enough, is the model copying my small dataset? This chapter answers them with
# measurements. It has what a real project lacks: data whose exact denoiser is known
# (the Gaussian mixtures of chapters 6 and 8), so every error can be split into its
# parts, and metrics with floors, so every number can be read.
#
# The first part splits the gap between a trained model's samples and the data into
# the network's error, the sampler's error and the bound's gap, in two dimensions
# and in 64 (8x8 digits modelled as ten Gaussians). The second part is a clinic:
# each common failure is reproduced on 2-D data or 8x8 digits in seconds, with its
# **symptom** (what you would see), its **diagnosis** (the measurement that tells it
# apart) and its **fix** (the same run, fixed, measured again). The last part runs
# the library's health check, `evaluate --check`, which reads a run folder and names
# the failures of this chapter that apply.
#
# As in the earlier chapters, the math is 1-indexed ($t = 1, \dots, T$) and the library
# 0-indexed: the paper's step $t$ is the library's `t - 1`.

# %% COLAB_SETUP
# %%
import math
import pathlib
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.distributions import Normal

import diffusion_lib as dl
from diffusion_lib import TrainConfig, load_dataset, metrics
from diffusion_lib.diagnose import check_run, ema_early_weight
from diffusion_lib.diagnose_samples import memorisation_ratio
from diffusion_lib.metrics import fitted_mixture_kl, frechet_distance
from diffusion_lib.notebook import check_device, check_parameter, show_image

# %% tags=["parameters"]
seed = 0               # every random draw in the chapter comes from this seed
device = "cpu"         # where the networks train ("cuda": a GPU)
num_samples = 1000     # samples behind each score
train_steps = 1000     # optimizer steps of each training run
batch_size = 256       # points per step

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("num_samples", num_samples, int, lambda v: v >= 200,
                "an int >= 200")
check_parameter("train_steps", train_steps, int, lambda v: v >= 100,
                "an int >= 100")
check_parameter("batch_size", batch_size, int, lambda v: v >= 16,
                "an int >= 16")
N = min(num_samples, 5000)
print(f"parameters ok: {seed=}, {device=}, {num_samples=}, {train_steps=}, "
      f"{batch_size=}")

# %% [markdown]
# ## The patient and the reference
#
# The data is chapter 6's `8gaussians`: eight round bumps on a circle, whose density
# is known exactly. `eight.mixture` is that density in the data's own space; a network
# trains on the standardized points, whose law is `eight.training_mixture`, and
# `GaussianMixtureOracle` is the exact noise predictor $\mathbb{E}[\epsilon \mid x_t]$
# there. The score of a set of samples is the KL divergence of chapter 8,
# $\mathrm{KL}(p_\text{data} \Vert q)$ with $q$ a mixture fitted to the samples; its
# **floor** is what a fresh sample of real data scores.
#
# Every run of this chapter is a small MLP (two residual blocks of width 64) trained
# by the library's `train`, with the defaults of 2-D data except the number of steps
# and the batch; each run writes a run folder, so the health check can read it at
# the end.

# %%
eight = load_dataset("8gaussians", split="test", seed=seed)
mixture = eight.training_mixture            # the law the network sees
schedule = dl.NoiseSchedule.linear()        # T = 1000
T = schedule.num_timesteps
oracle = dl.GaussianMixtureOracle(schedule, mixture)
runs = pathlib.Path(tempfile.mkdtemp(prefix="clinic-"))
SMALL = dict(hidden=64, depth=2, time_embed_dim=32)


def fit(name, dataset="8gaussians", model=SMALL, **settings):
    """A training run of the chapter, in the run folder runs/name."""
    options = dict(steps=train_steps, batch_size=batch_size, seed=seed,
                   log_every=max(1, train_steps // 30),
                   checkpoint_every=train_steps, sample_every=0)
    options.update(settings)
    return dl.train(TrainConfig(dataset=dataset, out=str(runs / name),
                                model_overrides=model, device=device,
                                progress=False, **options))


def kl(points):
    """KL(p_data || q_samples) in nats, for points in the training space."""
    x = torch.as_tensor(points, dtype=torch.float64)
    return fitted_mixture_kl(eight.to_output(x), eight.mixture,
                             num_points=10_000, seed=seed)[0]


def draw(model, steps=None, shape=None, **options):
    """N samples (default (N, 2)) in the training space: DDPM, or DDIM with
    `steps` steps."""
    g = torch.Generator().manual_seed(seed)
    shape = (N, 2) if shape is None else shape
    if steps is None:
        return dl.p_sample_loop(schedule, model, shape, generator=g,
                                progress=False, **options)
    return dl.ddim_sample_loop(schedule, model, shape, num_steps=steps,
                               generator=g, progress=False, **options)


def net(result, use_ema=True):
    """The network of a run, on the CPU, for the oracle-side computations."""
    return (result.ema_model if use_ema else result.model).cpu().eval()


floor = kl(mixture.sample(N, generator=torch.Generator().manual_seed(seed)))
print(f"KL floor (fresh data, {N} points): {floor:.3f} nats")

# %% [markdown]
# ## Part 1: where the error comes from
#
# A trained model's samples differ from the data for three separate reasons, and the
# oracle lets us measure each one apart:
#
# * **the network**: $\epsilon_\theta(x_t, t)$ is not $\mathbb{E}[\epsilon \mid
#   x_t]$. We measure $\mathbb{E}\,\lVert \epsilon_\theta(x_t, t) - \epsilon^*(x_t, t)
#   \rVert^2$ at each $t$ directly, not the training loss, most of which is the
#   irreducible $\mathbb{E}\,\lVert \epsilon - \epsilon^* \rVert^2$;
# * **the sampler**: even the exact denoiser gives imperfect samples with few steps;
#   we sample the oracle with DDIM and DDPM;
# * **the bound**: the training objective is a bound on $-\log p_\theta(x_0)$; for the
#   mixture, $-\log p(x_0)$ itself is known, so the gap of the bound can be measured
#   for the oracle and for the network.
#
# Three networks: a short run (a fifth of the steps), the full run, and a network
# twice as wide (width 128) trained as long as the full run.

# %%
short = fit("short", steps=max(20, train_steps // 5))
full = fit("full")
wide = fit("wide", model=dict(hidden=128, depth=2, time_embed_dim=32))
networks = {"short": net(short), "full": net(full), "wide": net(wide)}

t_grid = [1, 10, 50, 100, 200, 400, 600, 800, 1000]     # the paper's t


def error_per_t(models, exact_model, law):
    """E ||model(x_t, t) - exact_model(x_t, t)||^2 per coordinate, x_0 ~ law,
    at each t of t_grid: a list per model."""
    g = torch.Generator().manual_seed(seed)
    x0 = law.sample(2000, generator=g).float()               # (2000, D)
    noise = torch.randn(x0.shape, generator=g)
    errors = {name: [] for name in models}
    with torch.no_grad():
        for t in t_grid:
            t_lib = torch.full((len(x0),), t - 1)
            x_t = dl.q_sample(schedule, x0, t_lib, noise)
            exact = exact_model(x_t, t_lib)
            for name, model in models.items():
                gap = (model(x_t, t_lib) - exact).pow(2).mean()
                errors[name].append(gap.item())
    return errors


network_error = error_per_t(networks, oracle, mixture)

# %% tags=["hide-input"] mystnb={"image": {"alt": "Squared error of three trained networks against the exact noise prediction, per timestep, log scale: largest at small t, falling with training and width"}}
fig, ax = plt.subplots(figsize=(6, 3.6))
for (name, errors), style in zip(network_error.items(), ["--", "-", ":"]):
    ax.plot(t_grid, errors, style, marker="o", color="k", fillstyle="none",
            label=name)
ax.set(xscale="log", yscale="log", xlabel="t (paper's, 1..T)",
       ylabel=r"$E\,\Vert\epsilon_\theta - \epsilon^*\Vert^2$ / D",
       title="the network's error against the exact denoiser")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The network's error is largest at small $t$ (here it peaks near $t = 50$), where
# $\epsilon^*$ changes sharply from one side of a bump to the other and the network
# must resolve the bumps' shapes; at large $t$ the exact answer is nearly linear in
# $x_t$. Training longer lowers the curve tenfold at large $t$; at small $t$ neither
# the longer run nor the wider network gains much within this budget, and that is
# the error the samples show. Now the samples: the oracle with several samplers,
# and each network with DDPM.

# %%
scores = {"oracle, DDPM (1000 steps)": kl(draw(oracle)),
          "oracle, DDIM 10 steps": kl(draw(oracle, 10))}
with torch.no_grad():
    for name, model in networks.items():
        scores[f"{name} network, DDPM"] = kl(draw(model))

# %% tags=["nbval-ignore-output"]
for name, value in scores.items():
    print(f"{name:<30} KL {value:6.3f}   ({value - floor:+.3f} over the floor)")

# %% [markdown]
# Read the table as a budget. With DDPM the oracle sits at the floor: the sampler
# costs nothing at 1000 steps, and everything the networks lose with DDPM is the
# network's. With 10 DDIM steps the oracle alone is far above the floor: there the
# sampler's share can be as large as the network's. At the defaults
# of a real run (DDIM with tens of steps on a network trained for a while), both
# matter, and the oracle tells you how much of each.
#
# **Check.** The sampler's error vanishes at 1000 steps and not at 10; the network's
# error is what separates the networks from the oracle with DDPM:

# %% tags=["nbval-check-output"]
oracle_ddpm = scores["oracle, DDPM (1000 steps)"]
sampler_free = oracle_ddpm < floor + 0.05
sampler_bites = scores["oracle, DDIM 10 steps"] > oracle_ddpm + 0.1
network_costs = all(scores[f"{n} network, DDPM"] > oracle_ddpm
                    for n in networks)
print("oracle with DDPM within 0.05 nats of the floor:", sampler_free)
print("oracle with 10 DDIM steps over 0.1 nats above DDPM:", sampler_bites)
print("every network with DDPM above the oracle:", network_costs)
assert sampler_free and sampler_bites and network_costs

# %% [markdown]
# ### The bound's gap
#
# Training minimises a bound $L(x_0) \ge -\log p_\theta(x_0)$ (chapter 6). For the
# mixture, the data's own $-\log p(x_0)$ is exact, `mixture.log_prob`, so we can see
# how loose the bound is for the best possible denoiser and for a network. The bound
# in nats is the KL terms of `variational_bound` plus a Gaussian decoder
# $-\log \mathcal{N}(x_0; \mu_\theta(x_1, 1), \sigma_1^2 \mathbf{I})$ for continuous
# data, as in chapter 6 (`variational_bound`'s own decoder is for 8-bit images).

# %%
def bound_nats(model, x0, generator):
    """One-draw estimate of L(x_0) in nats per point, (B,), for x0 (B, D)."""
    with torch.no_grad():
        bound = dl.variational_bound(schedule, model, x0, generator=generator)
        bits = bound.prior_bpd + bound.terms_bpd[:, 1:].sum(1)   # per dim
        kls = bits * x0.shape[1] * math.log(2)                    # nats
        first = torch.zeros(len(x0), dtype=torch.long)
        x_1 = dl.q_sample(schedule, x0, first, generator=generator)
        p = dl.p_mean_variance(schedule, model(x_1, first), x_1, first)
        std = (0.5 * p.log_variance).exp()
        decoder = -Normal(p.mean, std).log_prob(x0).sum(1)
    return kls + decoder


B = min(N, 200)
x0_b = mixture.sample(B, generator=torch.Generator().manual_seed(seed))
nll = -mixture.log_prob(x0_b)                               # exact, nats
gap = {}
for name, model in [("oracle", oracle), ("full network", networks["full"])]:
    g = torch.Generator().manual_seed(seed)
    gap[name] = bound_nats(model, x0_b.float(), g).double() - nll

# %% tags=["nbval-ignore-output"]
print(f"-log p(x_0), exact: {nll.mean():.3f} nats per point")
for name, g_ in gap.items():
    print(f"bound - (-log p), {name}: {g_.mean():.3f} "
          f"+- {g_.std() / len(g_) ** 0.5:.3f}")

# %% [markdown]
# **Check.** The bound of the exact denoiser is above $-\log p(x_0)$ (within five
# standard errors: each is a one-draw estimate), and the network's bound is above
# the oracle's:

# %% tags=["nbval-check-output"]
se = {n: g_.std().item() / len(g_) ** 0.5 for n, g_ in gap.items()}
above = gap["oracle"].mean().item() > -5 * se["oracle"]
paired = gap["full network"] - gap["oracle"]
worse = paired.mean().item() > -5 * paired.std().item() / len(paired) ** 0.5
print("oracle's bound >= -log p(x_0):", above)
print("network's bound >= oracle's bound:", worse)
assert above and worse

# %% [markdown]
# Even with the exact denoiser the bound is loose: its reverse steps are Gaussians
# with fixed variances, while the true reverse steps of mixture data are not
# Gaussian at the noise levels where the bumps separate. That gap is a property of
# the model family, not of training; a lower training loss cannot remove it.
#
# ### The same budget in 64 dimensions
#
# Two dimensions are kind to every part of the model. To see the budget at the size
# of an image, we need 64-dimensional data whose exact denoiser is still known. Take
# the 8x8 digits of chapter 7 (64 pixels in $[-1, 1]$) and replace each of the ten
# classes by one Gaussian with that class's mean and covariance, plus $0.1\,
# \mathbf{I}$ so that the pixels no digit touches still vary a little. The result is
# a mixture of ten Gaussians in 64 dimensions: its draws look like blurred digits,
# and `GaussianMixtureOracle` gives its $\mathbb{E}[\epsilon \mid x_t]$ exactly.
#
# The networks train on 20,000 draws saved as a `.npy` file of points, so the
# library standardizes each pixel, and the oracle works in that standardized space.
# In 64 dimensions a KL divergence from samples is out of reach, so the score is
# the Frechet distance of chapter 7 taken against the exact mixture's own mean and
# covariance, with its floor: what $N$ fresh draws of the mixture score.

# %%
digits = load_dataset("digits", split="train")
pixels = digits.all_data().reshape(len(digits), -1).double()   # (1500, 64)
labels = digits.labels()
D64 = pixels.shape[1]
counts = torch.stack([(labels == k).sum() for k in range(10)]).double()
class_means = torch.stack([pixels[labels == k].mean(0) for k in range(10)])
class_covs = torch.stack([torch.cov(pixels[labels == k].T)
                          for k in range(10)])                  # (10, 64, 64)
digit_mixture = dl.GaussianMixture(counts, class_means,
                                   class_covs + 0.1 * torch.eye(D64))
draws = digit_mixture.sample(20_000,
                             generator=torch.Generator().manual_seed(seed))
np.save(runs / "digit_mixture.npy", draws.numpy())
pixel_space = load_dataset(str(runs / "digit_mixture.npy"))
mixture64 = digit_mixture.standardized(pixel_space.mean, pixel_space.std)
oracle64 = dl.GaussianMixtureOracle(schedule, mixture64)


def frechet_to(law, samples):
    """Frechet distance of (N, D) samples to the exact moments of a mixture."""
    s = torch.as_tensor(samples, dtype=torch.float64)
    return metrics.gaussian_frechet_distance(s.mean(0), torch.cov(s.T),
                                             law.mean(), law.covariance())


def fd64(samples):
    """Frechet distance of samples (training space) to the exact mixture."""
    return frechet_to(mixture64, samples)


floor64 = fd64(mixture64.sample(N, generator=torch.Generator().manual_seed(1)))
print(f"Frechet floor (fresh draws, {N} points): {floor64:.2f}")

# %% tags=["hide-input"] mystnb={"image": {"alt": "Two rows of 8x8 digits: real ones from the digits set above, draws of the ten-Gaussian mixture below, which look like blurred digits"}}
g = torch.Generator().manual_seed(seed)
fig, axes = plt.subplots(2, 10, figsize=(7, 1.7))
for k in range(10):
    real = pixels[labels == k][0]
    fake = dl.GaussianMixture([1.0], class_means[k:k + 1],
                              (class_covs[k] + 0.1 * torch.eye(D64))[None]
                              ).sample(1, generator=g)[0]
    show_image(axes[0, k], real.reshape(1, 8, 8))
    show_image(axes[1, k], fake.reshape(1, 8, 8))
axes[0, 0].set_ylabel("digits", fontsize=8)
axes[1, 0].set_ylabel("mixture", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Three networks again, now of width 128 (short and full run) and 256, trained for
# at least 1000 steps of at least 256 points (64 dimensions need more than two):
# each is sampled with DDPM, with DDIM at 50 and 10 steps, and with DDIM at 50 steps
# and $\eta = 1$, which adds fresh noise at each step as DDPM does (chapter 8).

# %%
steps64 = max(train_steps, 1000)
MID, WIDE = (dict(hidden=h, depth=2, time_embed_dim=32) for h in (128, 256))
data64 = str(runs / "digit_mixture.npy")
batch64 = max(batch_size, 256)
every64 = steps64 // 10                  # the full run keeps ten checkpoints
runs64 = {name: fit(f"d64_{name}", data64, model, steps=steps,
                    batch_size=batch64, checkpoint_every=every64,
                    keep_checkpoints=10)
          for name, model, steps in [("short", MID, steps64 // 5),
                                     ("full", MID, steps64),
                                     ("wide", WIDE, steps64)]}
nets64 = {name: net(result) for name, result in runs64.items()}
samplers = {"DDPM": dict(), "DDIM 50": dict(steps=50),
            "DDIM 50, eta 1": dict(steps=50, eta=1.0),
            "DDIM 10": dict(steps=10)}
table64 = {}
with torch.no_grad():
    for name, model in {"oracle": oracle64, **nets64}.items():
        table64[name] = {s: fd64(draw(model, shape=(N, D64), **options))
                         for s, options in samplers.items()}

# %% tags=["nbval-ignore-output"]
print(f"Frechet distance to the exact mixture (floor {floor64:.2f})")
print(f"{'':>8}" + "".join(f"{s:>16}" for s in samplers))
for name, row in table64.items():
    print(f"{name:>8}" + "".join(f"{v:16.2f}" for v in row.values()))

# %% [markdown]
# With DDPM the budget reads as in two dimensions: the oracle is at the floor, and
# the networks' excess is their own error, smaller for the longer run. With DDIM at
# $\eta = 0$ it does not: the exact denoiser loses little at 50 steps, but the
# networks, fine under DDPM, are off by orders of magnitude. The two errors do not
# add up; the deterministic sampler multiplies the network's.
#
# Why: with $\sigma_t = \sqrt{(1 - \bar\alpha_t) / \bar\alpha_t}$, a DDIM step with
# $\eta = 0$ is exactly an Euler step of $y = x / \sqrt{\bar\alpha}$ against
# $\sigma$,
#
# $$
# \frac{x_{t'}}{\sqrt{\bar\alpha_{t'}}} = \frac{x_t}{\sqrt{\bar\alpha_t}}
#   + (\sigma_{t'} - \sigma_t)\, \epsilon_\theta(x_t, t),
# $$
#
# so an error $\delta$ in $\epsilon_\theta$ at step $t$ moves the sample by
# $(\sigma_t - \sigma_{t'})\,\delta$, and nothing later pulls it back. $\sigma$ runs
# from 157 at $t = T$ down to 0.01 at $t = 1$: the steps at high noise, where a
# network's error looks negligible in the loss, carry most of the weight. DDPM's
# fresh noise at every step (and DDIM's with $\eta = 1$) lets the later steps
# correct what the earlier ones got wrong. The figure shows the networks' error per
# pixel, and the same error weighted by $\sigma_t^2$, the factor that DDIM applies
# to it:

# %%
sigma = ((1 - schedule.alpha_bars) / schedule.alpha_bars).sqrt()   # (T,)
error64 = error_per_t(nets64, oracle64, mixture64)             # per pixel

# %% tags=["hide-input"] mystnb={"image": {"alt": "Two panels over the timestep, log scales: the per-pixel error of three networks in 64 dimensions, largest at middle t; and the same weighted by sigma squared, which rises steeply towards t = T"}}
weights = np.array([sigma[t - 1].item() ** 2 for t in t_grid])
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
for (name, errors), style in zip(error64.items(), ["--", "-", ":"]):
    axes[0].plot(t_grid, errors, style, marker="o", color="k",
                 fillstyle="none", label=name)
    axes[1].plot(t_grid, weights * np.array(errors), style, marker="o",
                 color="k", fillstyle="none", label=name)
axes[0].set(ylabel="error per pixel", title="the network's error")
axes[1].set(ylabel=r"error $\times\ \sigma_t^2$", title="as DDIM weighs it")
for ax in axes:
    ax.set(xscale="log", yscale="log", xlabel="t (paper's, 1..T)")
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# **Check.** In 64 dimensions the sampler alone costs little at 50 steps, DDPM keeps
# the full and wide networks within a few floors, DDIM with $\eta = 0$ multiplies
# their error at least tenfold, $\eta = 1$ removes over 90% of that, and the wider
# network suffers least:

# %% tags=["nbval-check-output"]
oracle64_ok = table64["oracle"]["DDIM 50"] < 1.5 * floor64
ddpm_ok = all(table64[n]["DDPM"] < 4 * floor64 for n in ("full", "wide"))
multiplied = all(table64[n]["DDIM 50"] > 10 * table64[n]["DDPM"]
                 for n in ("full", "wide"))
noise_helps = all(table64[n]["DDIM 50, eta 1"] < table64[n]["DDIM 50"] / 10
                  for n in ("full", "wide"))
width_helps = table64["wide"]["DDIM 50"] < table64["full"]["DDIM 50"]
print("oracle, DDIM 50 within 1.5 floors:", oracle64_ok)
print("full and wide networks, DDPM within 4 floors:", ddpm_ok)
print("DDIM 50 (eta 0) over 10x DDPM for both:", multiplied)
print("eta 1 over 10x better than eta 0 for both:", noise_helps)
print("the wider network suffers less from DDIM:", width_helps)
assert oracle64_ok and ddpm_ok and multiplied and noise_helps and width_helps

# %% [markdown]
# The bound's gap in 64 dimensions, per pixel, for the exact denoiser and the full
# network, as in two dimensions:

# %%
x0_b64 = mixture64.sample(B, generator=torch.Generator().manual_seed(seed))
nll64 = -mixture64.log_prob(x0_b64)                      # exact, nats
gap64 = {}
for name, model in [("oracle", oracle64), ("full network", nets64["full"])]:
    g = torch.Generator().manual_seed(seed)
    gap64[name] = (bound_nats(model, x0_b64.float(), g).double()
                   - nll64) / D64

# %% tags=["nbval-ignore-output"]
print(f"-log p(x_0), exact: {nll64.mean() / D64:.3f} nats per pixel")
for name, g_ in gap64.items():
    print(f"bound - (-log p), {name}: {g_.mean():.4f} "
          f"+- {g_.std() / len(g_) ** 0.5:.4f} nats per pixel")

# %% tags=["nbval-check-output"]
se64 = gap64["oracle"].std().item() / B ** 0.5
paired64 = gap64["full network"] - gap64["oracle"]
above64 = gap64["oracle"].mean().item() > -5 * se64
worse64 = paired64.mean().item() > -5 * paired64.std().item() / B ** 0.5
print("oracle's bound >= -log p(x_0):", above64)
print("network's bound >= oracle's bound:", worse64)
assert above64 and worse64

# %% [markdown]
# So, at the defaults, which part dominates? With DDPM, the network's: the sampler
# costs nothing at 1000 steps, and the bound's gap does not touch the samples. With
# a fast deterministic sampler, the sampler's own error is small at 50 steps, but it
# turns the network's small error at high noise into the largest term of all. More
# training steps and width shrink the network's error everywhere, and that is what
# the fast sampler needs most; until then, $\eta > 0$ buys most of the quality back.
#
# ## Part 2: the clinic
#
# ### Case 1: data that is not standardized
#
# **Symptom:** samples from a run on raw points (or images in 0..255) are nowhere
# near the data, although the loss looked fine. **Diagnosis:** the forward process
# is built for data of unit scale: $x_T = \sqrt{\bar\alpha_T}\, x_0 + \dots$ with
# $\sqrt{\bar\alpha_T} = 0.0064$, so data at scale 200 still shows at $t = T$, where
# sampling starts from $\mathcal{N}(0, \mathbf{I})$. The prior term $L_T =
# \mathrm{KL}(q(x_T \mid x_0) \Vert \mathcal{N}(0, \mathbf{I}))$ (`prior_bpd`)
# measures the mismatch; it should be about 0. **Fix:** standardize (the library
# does, for every points dataset) or scale images to $[-1, 1]$.
#
# We measure the prior term for the standardized mixture and for the same mixture
# 150 times wider, and sample the exact denoiser of the wide one from
# $\mathcal{N}(0, \mathbf{I})$ (DDIM with 50 steps, to save time):

# %%
raw = mixture.standardized(torch.zeros(2), torch.full((2,), 1 / 150.0))
raw_oracle = dl.GaussianMixtureOracle(schedule, raw)     # data 150x wider
prior = {}
for name, law in [("standardized", mixture), ("150x", raw)]:
    x0 = law.sample(N, generator=torch.Generator().manual_seed(seed))
    prior[name] = dl.prior_bpd(schedule, x0.float()).mean().item()
raw_kl = kl(draw(raw_oracle, 50) / 150.0)            # scored back at unit scale
unclipped = draw(oracle, 50)                         # the same, standardized
unclipped_kl = kl(unclipped)

# %% tags=["nbval-check-output"]
print(f"L_T, standardized data: {prior['standardized']:.4f} bits/dim")
print(f"L_T, data 150x wider:  {prior['150x']:.2f} bits/dim")
print("KL of the exact denoiser's samples (DDIM 50 steps):")
print(f"    {unclipped_kl:.2f} (standardized), {raw_kl:.2f} (150x)")
assert prior["standardized"] < 1e-3 and prior["150x"] > 0.1
assert raw_kl > unclipped_kl + 0.1       # even the exact denoiser misses

# %% [markdown]
# The prior term shows the mismatch: the wide data has not become noise at $t = T$,
# so sampling starts from the wrong law. Even the exact denoiser of the wide data
# then misses with a deterministic sampler, which carries the wrong start to the
# end (DDPM's fresh noise at every step gives it a chance to forget the start). A
# network has it worse still: it must also learn a denoiser for inputs two orders of
# magnitude larger than the noise, with optimizer settings tuned for unit scale.
# That is why the library standardizes points before training, and the health check
# flags far outliers after it.
#
# The same mistake on images. The library reads 8-bit images and scales them to
# $[-1, 1]$ itself, and it refuses float images, whose range it would have to
# guess; a training loop of your own is where images in $[0, 1]$ (what most image
# loaders return) or in raw 8-bit units (0..255) slip in. Here is what the
# exact denoiser of part 1's ten-Gaussian digits gives when the same digits live in
# each of the three ranges, sampled with DDIM (50 steps) and shown the way every
# image sampler shows its output: as pixels in $[-1, 1]$.

# %%
ones = torch.ones(D64)
ranges = {"[-1, 1]": (0.0, 1.0), "[0, 1]": (-1.0, 2.0),
          "0..255": (-1.0, 1 / 127.5)}
range_samples, range_prior = {}, {}
for name, (a, b) in ranges.items():
    law = digit_mixture.standardized(a * ones, b * ones)     # (x - a) / b
    x0 = law.sample(N, generator=torch.Generator().manual_seed(seed))
    range_prior[name] = dl.prior_bpd(schedule, x0.float()).mean().item()
    range_samples[name] = draw(dl.GaussianMixtureOracle(schedule, law), 50,
                               shape=(N, D64)).clamp(-1, 1)   # as shown
pixel_floor = frechet_to(digit_mixture, digit_mixture.sample(   # shown too
    N, generator=torch.Generator().manual_seed(1)).clamp(-1, 1))
range_fd = {name: frechet_to(digit_mixture, x)
            for name, x in range_samples.items()}

# %% tags=["hide-input"] mystnb={"image": {"alt": "Three rows of ten 8x8 samples of the exact denoiser: digits in [-1, 1] look like blurred digits; digits in [0, 1], shown as [-1, 1] pixels, are grey and faint; digits in 0..255 are blotches of black and white"}}
fig, axes = plt.subplots(3, 10, figsize=(7, 2.4))
for row, (name, x) in zip(axes, range_samples.items()):
    for ax, image in zip(row, x[:10]):
        show_image(ax, image.reshape(1, 8, 8))
    row[0].set_ylabel(f"data in\n{name}", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Data in $[0, 1]$ shown as $[-1, 1]$ gives grey, washed-out images: the background,
# which should be $-1$ (white here), sits at 0. Raw 8-bit units are worse: the prior
# term shows that such data has not become noise at $t = T$, and the samples are
# saturated blotches. **Diagnosis:** the share of background pixels (below $-0.5$)
# against the data's, and the prior term. **Fix:** scale the 8-bit pixels as
# $u / 127.5 - 1$, or hand the library uint8 images and let it do so.

# %% tags=["nbval-check-output"]
background = {name: (x < -0.5).double().mean().item()
              for name, x in range_samples.items()}
data_background = (pixels < -0.5).double().mean().item()
print(f"background pixels in the digits: {data_background:.0%}")
print(f"Frechet distance in pixel space (floor {pixel_floor:.2f})")
for name, x in range_samples.items():
    print(f"data in {name:<7}: L_T {range_prior[name]:6.3f} bits/dim, "
          f"background {background[name]:4.0%}, FD {range_fd[name]:6.1f}")
assert range_fd["[-1, 1]"] < 1.5 * pixel_floor            # the fix
assert background["[0, 1]"] < 0.01 < 0.3 < data_background
assert range_fd["[0, 1]"] > 10 * pixel_floor
assert range_prior["0..255"] > 0.1 > 1e-3 > range_prior["[-1, 1]"]
assert range_fd["0..255"] > range_fd["[0, 1]"]

# %% [markdown]
# ### Case 2: no EMA, or an EMA too slow for the run
#
# **Symptom:** samples that look like a blob, or like the untrained network's, after
# a run whose loss went down. **Diagnosis:** samples come from the EMA of the weights
# (chapter 7), and with decay $d$ and no warm-up, the EMA after $n$ steps still puts
# the weight $d^{n/2}$ on the first half of the run and the random initialisation
# (`ema_early_weight`). With $d = 0.9999$ that is $0.9999^{500} = 95\%$ after 1000
# steps. **Fix:** a decay whose window $1/(1 - d)$ is a fraction of the run, or the
# warm-up $\min(d, (1 + k)/(10 + k))$ the library uses by default; meanwhile, the raw
# weights of the same run (`use_ema=False`) show what the network has learned
# (both sampled with DDIM, 50 steps).

# %%
slow = fit("ema_slow", ema_decay=0.9999, ema_warmup=False)
early = ema_early_weight(train_steps, 0.9999, warmup=False)
with torch.no_grad():
    slow_kl = {"EMA 0.9999, no warm-up": kl(draw(net(slow), 50)),
               "the same run's raw weights": kl(draw(net(slow, False), 50))}

# %% tags=["nbval-ignore-output"]
print(f"EMA weight on the first half of the run: {early:.0%}")
for name, value in slow_kl.items():
    print(f"KL, {name}: {value:.2f}")
assert early > 0.5
ema_kl, raw_weights_kl = slow_kl.values()
assert ema_kl > 2 * raw_weights_kl

# %% [markdown]
# The opposite mistake is no EMA at all. **Symptom:** samples a little worse than
# they should be, and different from one checkpoint to the next. **Diagnosis:** with
# a flat learning rate (the paper's recipe), the last weights still jump with every
# step; an EMA averages those jumps away. **Fix:** an EMA whose window is a fraction
# of the run (0.995 here: about 200 steps), or a learning rate decayed to 0, which
# stills the last weights (the library's default for points, used by part 1's runs).
# Two runs with a flat learning rate, identical but for the EMA (the EMA does not
# change training, so the first run's samples are the second's raw weights), and
# part 1's full run with and without its EMA:

# %%
flat = {"no EMA": fit("no_ema", lr_decay="none", ema_decay=0.0),
        "EMA 0.995": fit("flat_ema", lr_decay="none", ema_decay=0.995)}
with torch.no_grad():
    flat_kl = {name: kl(draw(net(result))) for name, result in flat.items()}
    decayed_raw_kl = kl(draw(net(full, use_ema=False)))

# %% tags=["nbval-ignore-output"]
for name, value in flat_kl.items():
    print(f"flat learning rate, {name:<9}: KL {value:.3f} "
          f"({value - floor:+.3f} over the floor)")
print(f"decayed learning rate, no EMA:   KL {decayed_raw_kl:.3f}, "
      f"with EMA {scores['full network, DDPM']:.3f}")
assert flat_kl["no EMA"] > flat_kl["EMA 0.995"]

# %% [markdown]
# ### Case 3: a learning rate too high, and too low
#
# **Symptom:** the loss stops falling early, or jumps and climbs (too high); or falls
# slowly and ends higher than usual (too low). **Diagnosis:** the loss curve against a
# healthy run's, and the learning rate against the default of the data (5e-3 for 2-D
# points, with a half-cosine decay to 0). **Fix:** the default.

# %%
lr_runs = {"lr 0.3 (60x)": fit("lr_high", lr=0.3),
           "lr 5e-3 (default)": full,
           "lr 5e-5 (1/100)": fit("lr_low", lr=5e-5)}
lr_kl = {"lr 5e-3 (default)": scores["full network, DDPM"]}   # part 1's
lr_loss = {}
with torch.no_grad():
    for name, result in lr_runs.items():
        if name not in lr_kl:
            lr_kl[name] = kl(draw(net(result)))
        lr_loss[name] = float(result.losses[-len(result.losses) // 10:].mean())

# %% tags=["hide-input"] mystnb={"image": {"alt": "Training loss against step for three learning rates: the default falls lowest, the high one stalls, the low one falls slowly"}}
fig, ax = plt.subplots(figsize=(6, 3.6))
window = max(1, train_steps // 50)
for (name, result), style in zip(lr_runs.items(), ["--", "-", ":"]):
    smooth = np.convolve(result.losses, np.ones(window) / window, "valid")
    ax.plot(result.steps[window - 1:], smooth, style, color="k", label=name)
ax.set(yscale="log", xlabel="step", ylabel="loss (running mean)",
       title="the loss under three learning rates")
ax.legend()
fig.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
for name in lr_runs:
    print(f"{name:<18} final loss {lr_loss[name]:.3f}, KL {lr_kl[name]:.2f}")
default = "lr 5e-3 (default)"
assert all(lr_kl[n] > lr_kl[default] for n in lr_runs if n != default)
assert all(lr_loss[n] > lr_loss[default] for n in lr_runs if n != default)

# %% [markdown]
# ### Case 4: too few DDIM steps, or the wrong spacing
#
# **Symptom:** blurred or shrunken bumps with a fast sampler. **Diagnosis:** sample
# the same network with DDPM: if that is fine, the sampler is at fault, not the
# network (the health check does exactly this). **Fix:** more steps, or steps spaced
# where the details are decided. Here with the exact denoiser, 10 DDIM steps spaced
# evenly, quadratically (dense near $t = 1$, where the bumps take shape), and the
# other way round (dense near $t = T$, where nothing is decided yet):

# %%
spacings = {"even": dl.ddim_timesteps(T, 10),
            "quadratic": np.unique(np.round(
                (T - 1) * np.linspace(0, 1, 10) ** 2).astype(int)).tolist(),
            "dense at high noise": np.unique(np.round(
                (T - 1) * (1 - (1 - np.linspace(0, 1, 10)) ** 2)
            ).astype(int)).tolist()}
spacing_kl = {"even": scores["oracle, DDIM 10 steps"]}     # part 1's
for name, taus in list(spacings.items())[1:]:
    g = torch.Generator().manual_seed(seed)
    x = dl.ddim_sample_loop(schedule, oracle, (N, 2), timesteps=taus,
                            generator=g, progress=False)
    spacing_kl[name] = kl(x)

# %% tags=["nbval-check-output"]
for name, value in spacing_kl.items():
    print(f"10 DDIM steps, {name:<19} KL {value:.2f}")
print(f"DDPM, 1000 steps:                     KL {oracle_ddpm:.2f}")
assert spacing_kl["quadratic"] < spacing_kl["even"]
assert spacing_kl["dense at high noise"] > spacing_kl["even"]

# %% [markdown]
# ### Case 5: clipping $\hat x_0$ on data outside $[-1, 1]$
#
# **Symptom:** samples piled up on the edges of a square. **Diagnosis:** image
# samplers clip the predicted $\hat x_0$ to $[-1, 1]$, the range of images scaled for
# DDPM; standardized points reach beyond it (here most of them). The share
# of samples outside $[-1, 1]$ against the data's tells it. **Fix:** clip only data
# that lives in $[-1, 1]$ (the library clips images and never points).

# %%
data_points = mixture.sample(N, generator=torch.Generator().manual_seed(seed))
clipped = draw(oracle, 50, clip_denoised=True)     # unclipped: case 1's
clipped_kl = kl(clipped)


def outside(points):
    """The share of points with a coordinate beyond [-1, 1]."""
    return (points.abs() > 1).any(1).double().mean().item()


# %% tags=["nbval-check-output"]
print(f"outside [-1, 1]: data {outside(data_points):.0%}, clipped "
      f"{outside(clipped):.0%}, unclipped {outside(unclipped):.0%}")
print(f"KL: clipped {clipped_kl:.2f}, unclipped {unclipped_kl:.2f}")
assert outside(clipped) < 0.01 and outside(data_points) > 0.2
assert clipped_kl > unclipped_kl + 0.1

# %% [markdown]
# ### Case 6: a Frechet distance from too few samples
#
# **Symptom:** a model's Frechet distance (chapter 7) that changes when only the
# number of samples changes. **Diagnosis:** the distance between two finite samples
# of the *same* law is not 0; for two samples of $N$ points of a $D$-dimensional
# standard Gaussian its expectation is, to first order in $1/N$,
#
# $$
# \mathbb{E}\,\mathrm{FD} \approx \frac{2D}{N} + \frac{D(D + 1)}{2(N - 1)},
# $$
#
# the first term from the two sample means, the second from the two sample
# covariances (for nearby covariances the trace term is a quarter of their squared
# Frobenius distance). The bias falls as $1/N$ and grows as $D^2$: with 64 features
# and 100 samples, it is about 21. **Fix:** compare models at the same $N$, next to the
# data-vs-data floor at that $N$, or fit $a + b/N$ over several $N$ and report $a$.

# %%
D = 16
fd = {}
g = torch.Generator().manual_seed(seed)
for n in (50, 100, 200, 400, min(N, 1000)):
    fd[n] = np.mean([frechet_distance(torch.randn(n, D, generator=g),
                                      torch.randn(n, D, generator=g))
                     for _ in range(5)])
slope, intercept = np.polyfit([1 / n for n in fd], list(fd.values()), 1)

# %% tags=["nbval-check-output"]
for n, value in fd.items():
    formula = 2 * D / n + D * (D + 1) / (2 * (n - 1))
    print(f"N = {n:4d}: FD {value:6.3f}, formula {formula:6.3f}")
print(f"fit a + b/N: a = {intercept:.3f} (the unbiased distance: 0)")
assert fd[50] > 5 * fd[min(N, 1000)] and abs(intercept) < 0.1

# %% [markdown]
# ### Case 7: stopping on the loss
#
# **Symptom:** the loss has been flat for a while, so training stops. **Diagnosis:**
# most of $L_\text{simple}$ is the irreducible $\mathbb{E}\,\lVert \epsilon -
# \epsilon^* \rVert^2$, the same for every network (chapter 6), so a large
# improvement of the samples moves the loss very little. Part 1's full 64-D run kept
# a checkpoint every tenth of its steps; here are its loss and the Frechet distance
# of its samples (DDIM, 50 steps, $\eta = 1$) at each. **Fix:** stop on a sample
# metric with a floor, not on the loss.

# %%
history = runs64["full"]
along = {}
with torch.no_grad():
    for step in range(every64, steps64 + 1, every64):
        model = dl.load_run(runs / "d64_full", step=step).model
        window = (history.steps > step - every64) & (history.steps <= step)
        along[step] = (float(history.losses[window].mean()),
                       fd64(draw(model, 50, shape=(N, D64), eta=1.0)))

# %% tags=["hide-input"] mystnb={"image": {"alt": "Two panels over the training steps of the 64-dimensional run: the loss falls fast and then is nearly flat, while the Frechet distance over its floor keeps falling by orders of magnitude"}}
fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
points = np.array([(step, loss, fd) for step, (loss, fd) in along.items()])
axes[0].plot(points[:, 0], points[:, 1], "-o", color="k", fillstyle="none")
axes[0].set(xlabel="step", ylabel="loss", title="the loss")
axes[1].plot(points[:, 0], points[:, 2] - floor64, "-o", color="k",
             fillstyle="none")
axes[1].set(xlabel="step", ylabel="Frechet distance - floor", yscale="log",
            title="the samples")
fig.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
middle = min(along, key=lambda step: abs(step - 0.4 * steps64))
(loss_mid, fd_mid), (loss_end, fd_end) = along[middle], along[steps64]
loss_change = 1 - loss_end / loss_mid
fd_change = 1 - (fd_end - floor64) / (fd_mid - floor64)
print(f"step {middle} to {steps64}: loss {loss_mid:.4f} -> {loss_end:.4f} "
      f"({loss_change:.0%} lower)")
print(f"Frechet distance over the floor: {fd_mid - floor64:.2f} -> "
      f"{fd_end - floor64:.2f} ({fd_change:.0%} lower)")
assert loss_change < 0.1 and fd_change > 0.5

# %% [markdown]
# ### Case 8: memorisation
#
# **Symptom:** samples that are (nearly) copies of training examples. **Diagnosis:**
# the distance of each sample to its nearest training example, against the distance
# of a training example to its nearest other one (`memorisation_ratio`): about 1 for
# fresh data, near 0 for copies. The limit is exact: on $n$ points, the minimiser of
# $L_\text{simple}$ is the denoiser of the *empirical* distribution, a mixture of $n$
# infinitely narrow bumps, and sampling it can only return the training points. A
# network that fitted its loss perfectly would memorise. **Fix:** more data, a
# shorter run, or a smaller network; check on held-out data.

# %%
sizes = {"width 64": (SMALL, max(100, train_steps // 2)),
         "width 256, 8x longer": (WIDE, 4 * train_steps)}
memo = {}
for n in (10, 100, 1000):
    points = eight.mixture.sample(n, generator=torch.Generator().manual_seed(n))
    np.save(runs / f"points{n}.npy", points.numpy())
    for size, (model, steps) in sizes.items():
        result = fit(f"memo{n}_{model['hidden']}", str(runs / f"points{n}.npy"),
                     model, batch_size=min(n, 64), steps=steps)
        with torch.no_grad():
            samples = torch.as_tensor(result.sample(min(N, 300), seed=seed,
                                                    sampler="ddim", steps=50))
        memo[n, size] = memorisation_ratio(samples, points)
ten = eight.mixture.sample(10, generator=torch.Generator().manual_seed(10))
empirical = dl.GaussianMixture(torch.ones(10), ten, 1e-8)   # n narrow bumps
copies = draw(dl.GaussianMixtureOracle(schedule, empirical), 50)
fresh = eight.mixture.sample(N, generator=torch.Generator().manual_seed(seed))

# %% tags=["nbval-ignore-output"]
print(f"fresh data:               {memorisation_ratio(fresh, ten):.2f}")
print(f"exact empirical denoiser: {memorisation_ratio(copies, ten):.3f}")
print(f"{'network on':<12}" + "".join(f"{s:>22}" for s in sizes))
for n in (10, 100, 1000):
    print(f"{n:5d} points" + "".join(f"{memo[n, s]:22.2f}" for s in sizes))
big = "width 256, 8x longer"
assert memorisation_ratio(copies, ten) < 0.05
assert 0.6 < memorisation_ratio(fresh, ten) < 1.6
assert all(memo[10, s] < memo[1000, s] for s in sizes)
assert memo[10, big] < memo[10, "width 64"]
if train_steps >= 1000:        # the book's runs: the big network crosses 1
    assert memo[10, big] < 1 < min(memo[100, big], memo[1000, big])

# %% [markdown]
# The small network, trained for a few hundred steps, is far from the limit: its
# ratios are above 1 (its samples are blurrier than the data), but ordered: the
# smaller the dataset, the closer its samples come to the training points. The
# network four times as wide, trained eight times as long, is sharper everywhere,
# but only on 10 points does it cross below 1, the ratio of fresh data, towards the
# memorising limit of 0: its samples sit closer to the training points than the
# training points sit to each other. On 100 and 1000 points the same network and
# run stay above 1. Neither network has reached the limit; every further step of
# training on 10 points fits the empirical denoiser, and so the copies, more
# closely.
#
# ## Part 3: the health check of a run folder
#
# `check_run` (and `python -m diffusion_lib evaluate --run RUN --check`) reads a run
# folder and reports every diagnosis of this chapter that applies: the loss curve
# (a rise, a fall still going on, the final value against a band measured for each
# built-in toy and the 8x8 digits), the EMA against the run length (too slow, or
# none), the learning rate against the default, the data's range, and the samples
# against the data, with a too-coarse DDIM told apart from a bad network. Each
# finding names its cause and its fix.

# %%
named = {}
for name in ("ema_slow", "no_ema", "lr_high"):
    findings = check_run(runs / name, num_samples=200, seed=seed,
                         sampler="ddim", steps=50)
    flagged = [f for f in findings if f.severity != "ok"]
    named[name] = {f.name for f in flagged}
    print(f"{name}: {len(flagged)} finding(s)")
    for f in flagged:
        print(f"  [{f.severity}] {f.name}: {f.summary}")
        print(f"      fix: {f.fix}")

# %% tags=["nbval-check-output"]
expected = {"ema_slow": "ema_too_slow", "no_ema": "no_ema",
            "lr_high": "lr_too_high"}
for run, finding in expected.items():
    print(f"{finding} named for {run}:", finding in named[run])
assert all(finding in named[run] for run, finding in expected.items())

# %% [markdown]
# ## Summary
#
# * With the exact denoiser, a model's error splits into the network's (largest at
#   small $t$ in 2-D, where training longer helps least), the sampler's (nothing at
#   1000 DDPM steps, large at 10 DDIM steps) and the bound's gap, which stays even
#   for the best denoiser.
# * In 64 dimensions the parts stop adding up: DDIM with $\eta = 0$ is an Euler
#   scheme in $\sigma_t$, which multiplies the network's error at high noise by up
#   to $\sigma_T = 157$. Networks that are within a few floors under DDPM are off
#   by orders of magnitude under it; $\eta = 1$, a wider network or longer training
#   bring them back.
# * Each failure of the clinic has a number that tells it apart: the prior term and
#   the samples' pixel range for unscaled data, the EMA's weight on the early run (or
#   no EMA under a flat learning rate), the loss curve against a healthy one, DDPM
#   against DDIM for the sampler, the share of samples outside $[-1, 1]$ for
#   clipping, the $1/N$ bias for the Frechet distance, a sample metric for when to
#   stop, and the nearest-training-example ratio for memorisation, which falls
#   towards the exact empirical denoiser's 0 as the network and the run grow on a
#   small dataset.
# * `evaluate --check` runs these diagnoses on any run folder.
#
# ## Exercises
#
# **Exercise 10.1** (compute). An EMA with decay 0.999 and no warm-up runs for 2000
# steps. What weight does it keep on the first 1000 steps and the initialisation?
# And with the library's warm-up?
#
# ```{admonition} Solution
# :class: dropdown
#
# Without warm-up, $0.999^{1000} = e^{1000 \ln 0.999} \approx 0.37$: more than a
# third of the EMA is the first half of the run. With the warm-up, the decay at step
# $k$ is $\min(0.999, (1 + k)/(10 + k))$, which is below 0.999 until step 8990, so the
# weight is $\prod_{k=1000}^{1999} (1 + k)/(10 + k) = \prod_{j=1}^{9} (1000 + j) /
# (2000 + j) \approx 2^{-9} \approx 0.002$.
# ```

# %% tags=["hide-cell"]
# Exercise 10.1: the EMA's weight on the first half, by formula and by function
no_warmup = 0.999 ** 1000
with_warmup = np.prod([(1000 + j) / (2000 + j) for j in range(1, 10)])
print(f"{no_warmup:.3f} {with_warmup:.4f}")
assert abs(ema_early_weight(2000, 0.999, warmup=False) - no_warmup) < 1e-9
assert abs(ema_early_weight(2000, 0.999, warmup=True) - with_warmup) < 1e-9

# %% [markdown]
# **Exercise 10.2** (predict, then measure). With 64 features, how many samples does
# a Frechet distance need before its bias, for a perfect model, is below 1? Check
# with two samples of a 64-dimensional standard Gaussian.
#
# ```{admonition} Solution
# :class: dropdown
#
# The bias is about $2D/N + D(D + 1)/(2(N - 1))$; with $D = 64$ the second term
# dominates, $2080/(N - 1)$, so $N \approx 2200$ gives about 1 (2048 gives 1.08).
# ```

# %% tags=["hide-cell"]
# Exercise 10.2: the Frechet distance of two samples of N(0, I_64), N = 2200
g = torch.Generator().manual_seed(seed)
D, n = 64, 2200
measured = np.mean([frechet_distance(torch.randn(n, D, generator=g),
                                     torch.randn(n, D, generator=g))
                    for _ in range(2)])
formula = 2 * D / n + D * (D + 1) / (2 * (n - 1))
print(f"measured {measured:.3f}, formula {formula:.3f}")
assert 0.8 < measured < 1.2 and abs(measured - formula) < 0.15
