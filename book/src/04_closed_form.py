# %% [markdown]
# # The closed form
#
# Chapter 3 ended on a problem: reaching $x_t$ by simulating the chain costs $t$ steps.
# This chapter removes the problem. Because every step is Gaussian and the noise of each
# step is independent of everything before it, the $t$ steps collapse into a single
# Gaussian with a simple mean and variance. We derive it, check it against the chain,
# measure what it saves, and meet the quantity that summarizes a schedule, the
# signal-to-noise ratio.

# %% COLAB_SETUP
# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import display

import diffusion_lib as dl
from diffusion_lib.notebook import (
    check_device,
    check_parameter,
    interact,
    seconds,
    show_source,
)

# %% tags=["parameters"]
seed = 0             # every random draw in the chapter comes from this seed
device = "cpu"       # "cuda" on a GPU runtime
num_samples = 10000  # draws behind each Monte Carlo check and histogram

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("num_samples", num_samples, int, lambda v: v >= 100,
                "an int >= 100")
print(f"parameters ok: {seed=}, {device=}, {num_samples=}")

# %% [markdown]
# ## Two new symbols
#
# Write the step variances through their complements, and multiply those up:
#
# $$
# \alpha_t = 1 - \beta_t, \qquad \bar\alpha_t = \prod_{s=1}^{t} \alpha_s
# = \alpha_1 \alpha_2 \cdots \alpha_t .
# $$
#
# Since every $\alpha_s$ lies in $(0, 1)$, $\bar\alpha_t$ decreases from
# $\bar\alpha_1 = \alpha_1$ towards $0$. `NoiseSchedule` computes both once, in double
# precision, when it is created; here is the start of its constructor:

# %%
show_source(dl.NoiseSchedule.__init__, until="alpha_bars_prev")

# %% [markdown]
# ## Deriving $q(x_t \mid x_0)$
#
# **Claim** ({cite:t}`ho2020denoising`, Eq. 4). For every $t = 1, \dots, T$,
#
# $$
# q(x_t \mid x_0) = \mathcal{N}\!\left(x_t;\ \sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t)\, \mathbf{I}\right),
# $$
#
# or, as a sampling instruction, $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\,
# \bar\epsilon_t$ with $\bar\epsilon_t \sim \mathcal{N}(0, \mathbf{I})$ independent of $x_0$.
#
# The proof uses one fact about Gaussians: **the sum of two independent Gaussian
# variables is Gaussian, and their means and variances add.** If
# $u \sim \mathcal{N}(0, a\mathbf{I})$ and $v \sim \mathcal{N}(0, b\mathbf{I})$ are
# independent, then $u + v \sim \mathcal{N}(0, (a + b)\mathbf{I})$.
#
# We argue by induction on $t$.
#
# *Base case, $t = 1$.* One step gives $x_1 = \sqrt{\alpha_1}\, x_0 + \sqrt{1-\alpha_1}\,
# \epsilon_1$, and $\bar\alpha_1 = \alpha_1$: this is the claim for $t = 1$.
#
# *Induction step.* Suppose the claim holds for $t - 1$, so that
# $x_{t-1} = \sqrt{\bar\alpha_{t-1}}\, x_0 + \sqrt{1-\bar\alpha_{t-1}}\, \bar\epsilon_{t-1}$.
# Step $t$ adds fresh noise $\epsilon_t$, independent of $x_0$ and of
# $\bar\epsilon_{t-1}$:
#
# $$
# \begin{aligned}
# x_t &= \sqrt{\alpha_t}\, x_{t-1} + \sqrt{1-\alpha_t}\, \epsilon_t \\
#     &= \sqrt{\alpha_t \bar\alpha_{t-1}}\, x_0
#        + \underbrace{\sqrt{\alpha_t - \alpha_t\bar\alpha_{t-1}}\,
#          \bar\epsilon_{t-1}}_{\text{variance } \alpha_t - \bar\alpha_t} \\
#     &\qquad + \underbrace{\sqrt{1-\alpha_t}\, \epsilon_t}_{\text{variance }
#          1 - \alpha_t} .
# \end{aligned}
# $$
#
# The first coefficient is $\sqrt{\bar\alpha_t}$, because $\alpha_t \bar\alpha_{t-1} =
# \bar\alpha_t$. The two noise terms are independent zero-mean Gaussians, so their sum
# is a zero-mean Gaussian of variance $(\alpha_t - \bar\alpha_t) + (1 - \alpha_t) =
# 1 - \bar\alpha_t$, which we may write $\sqrt{1-\bar\alpha_t}\, \bar\epsilon_t$ with
# $\bar\epsilon_t \sim \mathcal{N}(0, \mathbf{I})$, independent of $x_0$. That is the
# claim for $t$. $\square$
#
# The proof also shows what the closed form does *not* say: $\bar\epsilon_t$ is a
# combination of all the step noises $\epsilon_1, \dots, \epsilon_t$, so the closed form
# gives the right *distribution* of $x_t$, not the same sample as a particular run of the
# chain. The library implements the mean and variance as `q_mean_variance` and the
# one-jump sampler as `q_sample`:

# %%
display(show_source(dl.q_mean_variance))
display(show_source(dl.q_sample))

# %% [markdown]
# ## Check 1: the recursions
#
# The induction tracked two numbers per step: the coefficient $m_t$ of $x_0$ and the
# noise variance $v_t$, with $m_0 = 1$, $v_0 = 0$ and
#
# $$
# m_t = \sqrt{\alpha_t}\, m_{t-1}, \qquad v_t = \alpha_t v_{t-1} + \beta_t .
# $$
#
# Running these recursions in double precision must reproduce $\sqrt{\bar\alpha_t}$ and
# $1 - \bar\alpha_t$ at every $t$, up to rounding errors of order $10^{-15}$:

# %% tags=["nbval-check-output"]
schedule64 = dl.NoiseSchedule.linear(dtype=torch.float64)
T = schedule64.num_timesteps
m, v = 1.0, 0.0                                   # m_0 and v_0
max_error = 0.0
for t in range(1, T + 1):
    alpha = schedule64.alphas[t - 1].item()
    beta = schedule64.betas[t - 1].item()
    m, v = alpha**0.5 * m, alpha * v + beta
    alpha_bar = schedule64.alpha_bars[t - 1].item()
    error = max(abs(m - alpha_bar**0.5), abs(v - (1 - alpha_bar)))
    max_error = max(max_error, error)
print("recursions = closed form at every t, to 1e-12:", max_error < 1e-12)
assert max_error < 1e-12

# %% [markdown]
# ## Check 2: the chain and the closed form agree
#
# Now the random version. Start many copies of one point $x_0 = (1.5, -0.5)$, run the
# chain once with its whole trajectory, and separately draw $x_t$ with `q_sample` at a
# few $t$. Both sets of samples should have mean $\sqrt{\bar\alpha_t}\, x_0$ and variance
# $1 - \bar\alpha_t$ in each coordinate. With $N$ samples the standard error of a mean is
# $\sqrt{(1-\bar\alpha_t)/N}$ and that of a variance $(1-\bar\alpha_t)\sqrt{2/(N-1)}$;
# we require every estimate to be within five standard errors.

# %% tags=["nbval-check-output"]
schedule = dl.NoiseSchedule.linear().to(device)
generator = torch.Generator(device=device).manual_seed(seed)
N = num_samples
point = torch.tensor([1.5, -0.5], device=device)
x0 = point.expand(N, 2)                                  # (N, 2)
chain = dl.q_sample_chain(schedule, x0, generator=generator,
                          return_trajectory=True)        # entry t is x_t


def agrees(samples, t):
    """Mean and variance of samples (N, 2) within 5 standard errors."""
    mean, variance = dl.q_mean_variance(schedule, x0[:1], t - 1)
    mean, variance = mean[0], variance[0, 0]             # (2,), ()
    mean_se = (variance / N).sqrt()
    var_se = variance * (2 / (N - 1)) ** 0.5
    mean_ok = ((samples.mean(0) - mean).abs() < 5 * mean_se).all()
    var_ok = ((samples.var(0) - variance).abs() < 5 * var_se).all()
    return bool(mean_ok and var_ok)


print("    t  sqrt(alpha_bar_t)  1 - alpha_bar_t  chain ok  q_sample ok")
for t in [1, 10, 100, 250, 500, 750, T]:
    jumped = dl.q_sample(schedule, x0, t - 1, generator=generator)  # (N, 2)
    ok_chain, ok_jump = agrees(chain[t], t), agrees(jumped, t)
    alpha_bar = schedule64.alpha_bars[t - 1].item()
    print(f"{t:5d}  {alpha_bar**0.5:17.4f}  {1 - alpha_bar:15.4f}  "
          f"{ok_chain!s:>8}  {ok_jump!s:>11}")
    assert ok_chain and ok_jump

# %% [markdown]
# The agreement is not limited to means and variances: the whole distributions match.
# For a clearer picture take data with some structure, two narrow bumps at $-1.5$ and
# $+1.5$ (a Gaussian mixture, `dl.GaussianMixture`). Since $x_t$ is $x_0$ scaled by
# $\sqrt{\bar\alpha_t}$ plus independent Gaussian noise of variance $1 - \bar\alpha_t$,
# its exact density is again a mixture, with each bump scaled and widened
# (`mixture.noised`). Below, histograms of the chain's $x_t$ and of `q_sample`'s $x_t$,
# and that exact density.

# %%
# 1-D data: two bumps of standard deviation 0.1 at -1.5 and +1.5
bumps = dl.GaussianMixture([0.5, 0.5], [[-1.5], [1.5]], 0.1**2)
cpu_generator = torch.Generator().manual_seed(seed)   # mixtures draw on the CPU
data = bumps.sample(N, generator=cpu_generator).float().to(device)   # (N, 1)
bump_chain = dl.q_sample_chain(schedule, data, generator=generator,
                               return_trajectory=True)   # (T + 1, N, 1)
grid = torch.linspace(-4, 4, 401, dtype=torch.float64)[:, None]   # (401, 1)


def density(t):
    """The exact density of x_t on the grid: the bumps scaled and widened."""
    alpha_bar = schedule64.alpha_bars[t - 1] if t > 0 else torch.tensor(1.0)
    law = bumps.noised(alpha_bar.sqrt(), 1 - alpha_bar)
    return law.log_prob(grid).exp()


def show_marginal(ax, t):
    if t > 0:
        jumped = dl.q_sample(schedule, data, t - 1, generator=generator)
    else:
        jumped = data
    common = dict(bins=60, range=(-4, 4), density=True)
    ax.hist(bump_chain[t, :, 0].cpu(), alpha=0.5, label="chain", **common)
    ax.hist(jumped[:, 0].cpu(), histtype="step", color="k", label="q_sample",
            **common)
    ax.plot(grid[:, 0], density(t), "--", color="tab:red", label="exact")
    ax.set(title=f"$t = {t}$", xlim=(-4, 4), yticks=[])

# %% tags=["hide-input"] mystnb={"image": {"alt": "Six histograms of x_t at t = 0 to 1000: the simulated chain, q_sample and the exact density (dashed) agree at every step, two peaks merging into one bell"}}
shown = [0, 50, 150, 300, 500, T]
fig, axes = plt.subplots(2, 3, figsize=(7.5, 4), sharey=True)
for ax, t in zip(axes.flat, shown):
    show_marginal(ax, t)
axes[0, 0].set_ylim(0, 2.2)
axes[0, 0].legend(fontsize=8, loc="upper center")
fig.tight_layout()
plt.show()

# %% [markdown]
# When you run this notebook in Jupyter or Colab, the next cell (hidden in the web
# version) adds a slider to look at any $t$.

# %% tags=["remove-cell"]
def show_one(t):
    fig, ax = plt.subplots(figsize=(5, 3))
    show_marginal(ax, t)
    ax.legend(fontsize=8)
    plt.show()


_ = interact(show_one, t=(0, T, 10, 150))   # a slider: 0..T in steps of 10

# %% [markdown]
# ## What the closed form saves
#
# `q_sample` costs the same at every $t$: one multiply-add. The chain costs $t$ steps.
# Timing both on a batch of 256 images of 8×8 pixels (rounded ratios; the exact values
# depend on the machine):

# %% tags=["nbval-ignore-output"]
# seconds(fn): the fastest of a few runs of fn() (chapter 3)
batch = torch.randn(256, 1, 8, 8, generator=generator, device=device)
for t in [10, 100, T]:
    chain_time = seconds(lambda: dl.q_sample_chain(
        schedule, batch, num_steps=t, generator=generator),
        repeats=5 if t < T else 2, device=device)
    jump_time = seconds(
        lambda: dl.q_sample(schedule, batch, t - 1, generator=generator),
        device=device)
    print(f"x_{t}: the chain takes about {chain_time / jump_time:.0f} x "
          "as long as q_sample")

# %% [markdown]
# The closed form also handles a different $t$ for every example of a batch in one call,
# which is exactly what training needs: each image gets its own random noise level.

# %%
B = batch.shape[0]
t = torch.randint(1, T + 1, (B,), generator=generator, device=device)
noisy = dl.q_sample(schedule, batch, t - 1, generator=generator)  # one call
print("t of the first five examples:", t[:5].tolist())
print("noisy batch:", tuple(noisy.shape))                # (B, C, H, W)

# %% [markdown]
# ## The signal-to-noise ratio
#
# The closed form splits $x_t$ into a signal part and a noise part,
# $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \bar\epsilon_t$. For data of
# unit variance, the first has variance $\bar\alpha_t$ and the second $1-\bar\alpha_t$.
# Their ratio is the **signal-to-noise ratio** {cite:p}`kingma2021variational`
#
# $$
# \mathrm{SNR}(t) = \frac{\bar\alpha_t}{1 - \bar\alpha_t},
# $$
#
# which decreases from very large (almost clean data) to almost zero (almost pure
# noise). It is a convenient single description of a schedule: $\bar\alpha_t =
# \mathrm{SNR}(t) / (1 + \mathrm{SNR}(t))$ gives everything back, and $\mathrm{SNR}(t) = 1$
# marks the step at which signal and noise weigh the same. `NoiseSchedule` stores it as
# `snr`:

# %% tags=["nbval-check-output"]
for name in ["linear", "cosine"]:
    s = dl.NoiseSchedule.from_name(name, dtype=torch.float64)
    snr_ok = torch.allclose(s.snr, s.alpha_bars / (1 - s.alpha_bars))
    decreasing = bool((s.snr[1:] < s.snr[:-1]).all())
    crossing = int((s.snr < 1).nonzero()[0]) + 1   # paper's first t, SNR < 1
    print(f"{name}: snr = alpha_bar / (1 - alpha_bar): {snr_ok}, "
          f"decreasing: {decreasing}")
    print(f"    SNR(1) = {s.snr[0].item():.1e}, "
          f"SNR(T) = {s.snr[-1].item():.1e}, SNR(t) < 1 from t = {crossing}")
    assert snr_ok and decreasing

# %% tags=["hide-input"] mystnb={"image": {"alt": "SNR(t) on a log scale for the linear (solid) and cosine (dashed) schedules, both falling from about 10^4; the cosine one stays higher until the last steps"}}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
steps = torch.arange(1, T + 1)
for name, style in [("linear", "-"), ("cosine", "--")]:
    s = dl.NoiseSchedule.from_name(name, dtype=torch.float64)
    ax.plot(steps, s.snr, style, label=name)
ax.axhline(1, color="k", lw=0.5)
ax.set(yscale="log", xlabel="$t$", ylabel=r"SNR$(t)$",
       title="signal-to-noise ratio of $x_t$")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# On a log scale the difference between the schedules is plain: the cosine schedule
# lowers the SNR at a nearly steady pace over most of the steps, while the linear
# schedule brings it down fast and then spends its last few hundred steps at very low
# SNR, where $x_t$ is essentially noise.
#
# ## Summary
#
# * With $\alpha_t = 1 - \beta_t$ and $\bar\alpha_t = \prod_{s \le t} \alpha_s$, the
#   forward process has the closed form $q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}
#   \, x_0, (1 - \bar\alpha_t)\mathbf{I})$, because sums of independent Gaussians are
#   Gaussian.
# * It matches the chain in distribution (checked above), and reaches any $t$ in one
#   step instead of $t$.
# * $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$ summarizes a schedule.
#
# The sampling instruction $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\,
# \bar\epsilon_t$ is an instance of a general device, the reparameterization trick,
# which chapter 5 looks at in its own right.
#
# ## Exercises
#
# **Exercise 4.1** (show that). The proof above jumps from $x_0$. Show that from any
# earlier step $s < t$,
# $q(x_t \mid x_s) = \mathcal{N}\big(\sqrt{\bar\alpha_t / \bar\alpha_s}\, x_s,\
# (1 - \bar\alpha_t / \bar\alpha_s)\,\mathbf{I}\big)$. Check it: jump from the
# chain's $x_{100}$ to $t = 500$ with this formula, and compare the result with
# $q(x_{500} \mid x_0)$ using the helper `agrees` of Check 2.
#
# ```{admonition} Solution
# :class: dropdown
#
# The steps $s + 1, \dots, t$ form a chain of their own, started at $x_s$, with the
# same recursions as in the proof; its product of $\alpha$s is
# $\alpha_{s+1} \cdots \alpha_t = \bar\alpha_t / \bar\alpha_s$. The induction then
# gives the mean $\sqrt{\bar\alpha_t / \bar\alpha_s}\, x_s$ and the variance
# $1 - \bar\alpha_t / \bar\alpha_s$. Consistently, composing it with
# $q(x_s \mid x_0)$ gives back $q(x_t \mid x_0)$: the means multiply to
# $\sqrt{\bar\alpha_t}\, x_0$ and the variances add to
# $(\bar\alpha_t / \bar\alpha_s)(1 - \bar\alpha_s) + 1 - \bar\alpha_t /
# \bar\alpha_s = 1 - \bar\alpha_t$.
# ```

# %% tags=["hide-cell"]
# Exercise 4.1: from x_100 to x_500 in one jump
s, t = 100, 500
ratio = schedule.alpha_bars[t - 1] / schedule.alpha_bars[s - 1]
noise = torch.randn(chain[s].shape, generator=generator, device=device)
x_t_from_s = ratio.sqrt() * chain[s] + (1 - ratio).sqrt() * noise
print(f"alpha_bar_500 / alpha_bar_100 = {ratio.item():.4f}; the jump follows "
      f"q(x_500 | x_0): {agrees(x_t_from_s, t)}")
assert agrees(x_t_from_s, t)

# %% [markdown]
# **Exercise 4.2** (show that, then compare with the oracle). Let the data be
# one-dimensional and Gaussian, $x_0 \sim \mathcal{N}(0, \sigma^2)$. Then $x_0$ and
# $\epsilon$ are independent Gaussians and $x_t$ is a linear combination of them. Show
# that the best prediction of the noise from $x_t$ is
#
# $$
# \mathbb{E}[\epsilon \mid x_t] = \frac{\sqrt{1 - \bar\alpha_t}}
# {\bar\alpha_t \sigma^2 + 1 - \bar\alpha_t}\; x_t ,
# $$
#
# and compare it, for $\sigma = 0.5$, with `GaussianMixtureOracle` for a mixture of one
# component (the exact denoiser that chapter 6 uses).
#
# ```{admonition} Solution
# :class: dropdown
#
# For two jointly Gaussian variables with mean zero,
# $\mathbb{E}[\epsilon \mid x_t] = \mathrm{Cov}(\epsilon, x_t)\, x_t /
# \mathrm{Var}(x_t)$. Here $\mathrm{Cov}(\epsilon, x_t) = \sqrt{1 - \bar\alpha_t}$ (only
# the noise term of $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\,
# \epsilon$ is correlated with $\epsilon$) and $\mathrm{Var}(x_t) = \bar\alpha_t
# \sigma^2 + 1 - \bar\alpha_t$. Two limits are worth reading: at small $t$ the
# prediction is nearly $0$, since $x_t$ is almost all data; at large $t$ it is nearly
# $x_t$ itself, since $x_t$ is almost all noise. The oracle agrees to rounding error
# (it works in float64).
# ```

# %% tags=["hide-cell"]
# Exercise 4.2: the exact denoiser of Gaussian data, by hand and by the library
sigma = 0.5
gaussian = dl.GaussianMixture([1.0], [[0.0]], sigma**2)     # one component
oracle = dl.GaussianMixtureOracle(schedule64, gaussian)
x_t = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]   # (7, 1)
worst = 0.0
for t in [1, 10, 100, 500, T]:
    ab = schedule64.alpha_bars[t - 1]
    by_hand = (1 - ab).sqrt() * x_t / (ab * sigma**2 + 1 - ab)
    exact = oracle(x_t, torch.full((7,), t - 1))
    worst = max(worst, (exact - by_hand).abs().max().item())
print(f"largest difference, formula against oracle: {worst:.1e}")
assert worst < 1e-12

# %% [markdown]
# **Exercise 4.3** (predict, then run). Take $T = 2000$ steps instead of $1000$, each
# with half the variance: $\beta_t$ from $0.5 \cdot 10^{-4}$ to $0.01$. Predict how
# $\bar\alpha$ after $2t$ of the new steps compares with $\bar\alpha_t$ of the old
# schedule. Then build `dl.NoiseSchedule.linear(2000, 0.5e-4, 0.01)` and compare.
#
# ```{admonition} Solution
# :class: dropdown
#
# For small steps $\log \bar\alpha_t = \sum_s \log(1 - \beta_s) \approx
# -\sum_s \beta_s$: what matters is the total variance added, not how it is cut into
# steps. $2t$ half steps add the same total as $t$ whole ones, so the new
# $\bar\alpha_{2t}$ is close to the old $\bar\alpha_t$ everywhere: within 4% at
# every $t$ (the difference comes from the neglected $\beta^2$ terms and is largest at
# the end, where $\bar\alpha$ itself is tiny). The closed form makes this plain; by
# simulation, the finer chain would cost twice as many steps for the same result.
# ```

# %% tags=["hide-cell"]
# Exercise 4.3: twice the steps, half the variance each
fine = dl.NoiseSchedule.linear(2000, 0.5e-4, 0.01, dtype=torch.float64)
# entry 2t - 1 of the fine schedule is its alpha_bar after 2t steps
log_ratio = (fine.alpha_bars[1::2] / schedule64.alpha_bars).log()   # (T,)
print(f"alpha_bar after 2t fine steps / after t old steps: within "
      f"{log_ratio.abs().max().exp().item() - 1:.1%} at every t")
assert log_ratio.abs().max() < 0.04

# %% [markdown]
# **Exercise 4.4** (predict, then run). The signal-to-noise ratio above assumes data
# of unit variance. Suppose the data has variance $4$ (it was not standardized). Is
# the step at which signal and noise weigh the same earlier or later than $t = 260$,
# where $\mathrm{SNR}(t) = 1$ for the linear schedule? Compute it.
#
# ```{admonition} Solution
# :class: dropdown
#
# Later. The signal part of $x_t$ now has variance $4 \bar\alpha_t$, so signal and
# noise balance when $4\,\mathrm{SNR}(t) = 1$, that is $\bar\alpha_t = 1/5$ instead
# of $1/2$: at $t = 397$ instead of $260$. Data with a larger spread survives the same
# schedule for longer, which is one reason why the library standardizes its 2-D data
# and scales images to $[-1, 1]$: the schedule is designed for data of about unit
# variance.
# ```

# %% tags=["hide-cell"]
# Exercise 4.4: when do signal and noise balance for data of variance 4?
snr = schedule64.snr
balance = {v: int((v * snr < 1).nonzero()[0]) + 1 for v in (1, 4)}
print("signal variance = noise variance from t =", balance,
      "(data variance: t)")
assert balance == {1: 260, 4: 397}
