# %% [markdown]
# # A Markov chain
#
# Chapter 2 looked at one step of the forward process. Chaining $T$ of them gives the
# whole process, a sequence $x_0, x_1, \dots, x_T$ in which each state is drawn from the
# previous one. This chapter writes down the distribution of the whole sequence,
# simulates it, checks the property that defines it, and measures what simulating it
# costs. That cost is the reason for the closed form of chapter 4.

# %% COLAB_SETUP
# %%
import matplotlib.pyplot as plt
import torch

import diffusion_lib as dl
from diffusion_lib.notebook import (
    check_device,
    check_parameter,
    seconds,
    show_source,
)

# %% tags=["parameters"]
seed = 0             # every random draw in the chapter comes from this seed
device = "cpu"       # "cuda" on a GPU runtime
num_samples = 10000  # chains run side by side

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("num_samples", num_samples, int, lambda v: v >= 100,
                "an int >= 100")
print(f"parameters ok: {seed=}, {device=}, {num_samples=}")

# %% [markdown]
# ## The joint distribution
#
# Each forward step looks only at the state just before it: $x_t$ is drawn from
# $q(x_t \mid x_{t-1})$, whatever happened at earlier steps. A sequence of random
# variables with this property, "given the present, the future does not depend on the
# past", is a **Markov chain**. For a Markov chain the probability of a whole path is the
# product of its steps, so the forward process of {cite:t}`ho2020denoising`
# (Eq. 2) is
#
# $$
# \begin{aligned}
# q(x_{1:T} \mid x_0) &= \prod_{t=1}^{T} q(x_t \mid x_{t-1}), \\
# q(x_t \mid x_{t-1}) &= \mathcal{N}\!\left(x_t;\ \sqrt{1-\beta_t}\, x_{t-1},\
#   \beta_t \mathbf{I}\right),
# \end{aligned}
# $$
#
# where $x_{1:T}$ is short for $x_1, \dots, x_T$. Like every factor, the product is
# written $q$, without parameters. The product also says how to sample a path: draw
# $x_1$ from $x_0$, then $x_2$ from $x_1$, and so on, one step after another. That is
# what `q_sample_chain` does:

# %%
show_source(dl.q_sample_chain)

# %% [markdown]
# ## Paths
#
# To see individual paths, take one-dimensional data: each $x_0$ is either $-1.5$ or
# $+1.5$, with equal probability. We run many chains in parallel (one per row of the
# tensor) and keep the whole trajectory; entry `t` of it is $x_t$.

# %%
schedule = dl.NoiseSchedule.linear().to(device)
T = schedule.num_timesteps
generator = torch.Generator(device=device).manual_seed(seed)

coin = torch.randint(0, 2, (num_samples, 1), generator=generator,
                     device=device)
x0 = 1.5 * (2 * coin - 1).float()              # (N, 1), each -1.5 or +1.5
path = dl.q_sample_chain(schedule, x0, generator=generator,
                         return_trajectory=True)   # entry t is x_t
print("path shape:", tuple(path.shape))            # (T + 1, N, 1)

# %% tags=["hide-input"] mystnb={"image": {"alt": "Left: three paths from x_0 = 1.5 and three from -1.5, with bands holding 90% of paths, merging as t grows. Right: histograms of x_t from two peaks at t = 50 to one bell at t = 1000"}}
steps = torch.arange(T + 1)
fig, (ax_paths, ax_hist) = plt.subplots(
    1, 2, figsize=(8, 3), gridspec_kw={"width_ratios": [3, 2]})
for start, color in [(1.5, "tab:blue"), (-1.5, "tab:red")]:
    starts_here = x0[:, 0] == start
    for row in starts_here.nonzero()[:3, 0]:         # three paths
        ax_paths.plot(steps, path[:, row, 0].cpu(), color=color, lw=0.7)
    group = path[::10, starts_here, 0]               # every 10th step
    ax_paths.fill_between(steps[::10], group.quantile(0.05, dim=1).cpu(),
                          group.quantile(0.95, dim=1).cpu(), color=color,
                          alpha=0.15, lw=0)
ax_paths.set(xlabel="$t$", ylabel="$x_t$",
             title="paths; bands hold 90% of all paths")
colors = plt.cm.viridis(torch.linspace(0, 0.9, 5).numpy())
styles = ["-", "--", "-.", ":", "-"]   # tell the steps apart in grayscale too
for t, color, style in zip([50, 200, 400, 600, T], colors, styles):
    ax_hist.hist(path[t, :, 0].cpu(), bins=80, range=(-4, 4), density=True,
                 histtype="step", color=color, ls=style, lw=2 if t == T else 1,
                 label=f"$t = {t}$")
ax_hist.set(xlabel="$x_t$", title="distribution of $x_t$")
ax_hist.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Each path wanders randomly, but the two groups drift towards zero and spread out; by
# $t \approx 600$ the two starting points can no longer be told apart from $x_t$, and the
# distribution of $x_t$ has turned from two narrow peaks into a single standard
# Gaussian.
#
# ## Checking the Markov property
#
# The Markov property can be tested on the simulated paths. If we predict $x_t$ from
# *both* $x_{t-1}$ and $x_{t-2}$ by least squares,
#
# $$
# x_t \approx a\, x_{t-1} + b\, x_{t-2},
# $$
#
# then the best coefficients should be $a = \sqrt{1-\beta_t}$ and $b = 0$: once
# $x_{t-1}$ is known, $x_{t-2}$ carries no further information. The leftover residual
# should have variance $\beta_t$, the fresh noise of step $t$. We fit the regression at
# $t = 500$ and compare each coefficient with its prediction, allowing five standard
# errors of the least-squares fit.

# %% tags=["nbval-check-output"]
t = 500
trajectory = path[:, :, 0].double().cpu()                   # (T + 1, N)
target = trajectory[t]                                      # x_t, (N,)
inputs = torch.stack([trajectory[t - 1], trajectory[t - 2]], 1)   # (N, 2)
coef = torch.linalg.lstsq(inputs, target[:, None]).solution[:, 0]  # a, b
residual = target - inputs @ coef
N = target.shape[0]
noise_var = residual.var().item()
# standard errors of the least-squares coefficients
coef_se = (noise_var * torch.linalg.inv(inputs.T @ inputs).diagonal()).sqrt()

beta = schedule.betas[t - 1].double().item()
a_ok = abs(coef[0].item() - (1 - beta) ** 0.5) < 5 * coef_se[0].item()
b_ok = abs(coef[1].item()) < 5 * coef_se[1].item()
var_ok = abs(noise_var / beta - 1) < 5 * (2 / (N - 1)) ** 0.5
print(f"t = {t}: sqrt(1 - beta_t) = {(1 - beta) ** 0.5:.4f}, "
      f"beta_t = {beta:.4f}")
print("a = sqrt(1 - beta_t) within 5 standard errors:", a_ok)
print("b = 0 within 5 standard errors:", b_ok)
print("residual variance = beta_t within 5 standard errors:", var_ok)
assert a_ok and b_ok and var_ok

# %% [markdown]
# ## The cost of simulating the chain
#
# The chain has one weakness: to get $x_t$ we must draw $x_1, x_2, \dots, x_{t-1}$
# first. Each step is cheap, but there are $t$ of them, so the cost of reaching $x_t$
# grows linearly with $t$. Training a diffusion model (chapter 7) needs, for every
# example of every batch, a noisy version $x_t$ at a randomly chosen $t$; simulating
# the chain would cost about $T/2 = 500$ steps per example, every time. This is what
# makes the step-by-step forward process inefficient in practice.
#
# Below we time `q_sample_chain` up to several $t$ on a batch of 256 images of 8×8
# pixels, and report each time relative to a single step. The exact ratios depend on the
# machine, so only rounded values are printed. `seconds`, a small timer of the book's
# helper module, keeps the fastest of a few runs (the others were slowed down by
# something else on the machine):

# %%
show_source(seconds)

# %% tags=["nbval-ignore-output"]
batch = torch.randn(256, 1, 8, 8, generator=generator, device=device)
chain_steps = [1, 10, 100, 1000]
times = {}
for t in chain_steps:
    times[t] = seconds(lambda: dl.q_sample_chain(
        schedule, batch, num_steps=t, generator=generator),
        repeats=5 if t < 1000 else 2, device=device)
for t in chain_steps[1:]:
    print(f"reaching x_{t} step by step takes about "
          f"{times[t] / times[1]:.0f} x as long as reaching x_1")
assert times[1000] / times[1] > 100, "x_1000 should cost far more than x_1"

# %% tags=["hide-input", "nbval-ignore-output"] mystnb={"image": {"alt": "Log-log plot of the time to reach x_t against t: the measured times follow the dotted line proportional to t"}}
fig, ax = plt.subplots(figsize=(4.5, 3.2))
ratios = [times[t] / times[1] for t in chain_steps]
ax.loglog(chain_steps, ratios, "o-", label="measured")
ax.loglog(chain_steps, chain_steps, "k:", label="proportional to $t$")
ax.set(xlabel="$t$", ylabel="time relative to $x_1$",
       title="reaching $x_t$ step by step")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The measured times follow the dotted line: reaching $x_{1000}$ costs about a thousand
# times as much as reaching $x_1$.
#
# ## Summary
#
# * The forward process is a Markov chain; its path distribution
#   $q(x_{1:T} \mid x_0)$ is the product of its steps.
# * Sampling it step by step is straightforward, and the simulated paths satisfy the
#   Markov property: given $x_{t-1}$, the earlier state $x_{t-2}$ does not help predict $x_t$.
# * Reaching $x_t$ this way costs $t$ steps. Chapter 4 shows that $x_t$ can be drawn
#   from $x_0$ in a single step instead, because the product of Gaussian steps has a
#   closed form.
#
# ## Exercises
#
# **Exercise 3.1** (show that, then compute exactly). Every path above starts at
# $+1.5$ or at $-1.5$. Given only $x_t$, how sure can we be of where it started? Show
# that, with $\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)$ and $x_t \mid x_0 \sim
# \mathcal{N}(\sqrt{\bar\alpha_t}\, x_0, 1 - \bar\alpha_t)$ (chapter 4 derives this),
#
# $$
# P(x_0 = +1.5 \mid x_t) = \frac{1}{1 + e^{-z}}, \qquad
# z = \frac{3 \sqrt{\bar\alpha_t}\; x_t}{1 - \bar\alpha_t}.
# $$
#
# Compare it at $t = 300$ and $x_t = 0.5$ with the exact answer of the library's
# mixtures (the data as two very narrow bumps; `GaussianMixture.posterior` of its
# noised version) and with the share of simulated paths that started at $+1.5$ among
# those passing near $0.5$ at $t = 300$.
#
# ```{admonition} Solution
# :class: dropdown
#
# Bayes' rule with equal prior weights: the posterior odds are the ratio of the two
# likelihoods, $\exp\big(-(x_t - \sqrt{\bar\alpha_t}\,1.5)^2 / 2(1-\bar\alpha_t) +
# (x_t + \sqrt{\bar\alpha_t}\,1.5)^2 / 2(1-\bar\alpha_t)\big) = e^z$: the squares
# cancel except for the cross term $2 \cdot 1.5 \sqrt{\bar\alpha_t}\, x_t$. At
# $t = 300$, $x_t = 0.5$ gives a probability of about $0.83$: the path most likely
# started at $+1.5$, but far from surely. The exact mixture gives the same number, and
# the simulated paths agree within their standard error. (This posterior is what a
# denoiser must work out; chapter 6 builds on it.)
# ```

# %% tags=["hide-cell"]
# Exercise 3.1: where did a path passing near 0.5 at t = 300 start?
t, c = 300, 0.5
ab = schedule.alpha_bars[t - 1].double().cpu()
formula = torch.sigmoid(3 * ab.sqrt() * c / (1 - ab)).item()
two_points = dl.GaussianMixture([0.5, 0.5], [[-1.5], [1.5]], 1e-8)
law = two_points.noised(ab.sqrt(), 1 - ab)                # the law of x_t
exact = law.posterior(torch.tensor([[c]]).double())[0, 1].item()
near = (trajectory[t] - c).abs() < 0.05                  # paths near c
started_up = (x0[:, 0].cpu() > 0)[near].double()
share = started_up.mean().item()
se = (formula * (1 - formula) / near.sum().item()) ** 0.5
print(f"P(x_0 = +1.5 | x_t = {c}): formula {formula:.3f}, exact {exact:.3f}, "
      f"paths {share:.2f}")
assert abs(formula - exact) < 1e-6 and abs(formula - 0.83) < 0.005
assert abs(share - formula) < 5 * se

# %% [markdown]
# **Exercise 3.2** (predict, then run). Regress $x_t$ on $x_{t-2}$ *alone*, at
# $t = 500$. Predict the coefficient and the variance of the residual from the
# $\beta$s of steps $t - 1$ and $t$, then fit it on the simulated paths.
#
# ```{admonition} Solution
# :class: dropdown
#
# Two steps in a row give $x_t = \sqrt{\alpha_t}\,(\sqrt{\alpha_{t-1}}\, x_{t-2} +
# \sqrt{\beta_{t-1}}\,\epsilon_{t-1}) + \sqrt{\beta_t}\,\epsilon_t$, with
# $\alpha = 1 - \beta$. The noise is independent of $x_{t-2}$, so the coefficient is
# $\sqrt{\alpha_t \alpha_{t-1}}$ and the residual is the noise, of variance
# $\alpha_t \beta_{t-1} + \beta_t = 1 - \alpha_t \alpha_{t-1}$: two steps together are
# one step with $1 - \beta = \alpha_t \alpha_{t-1}$. That is the closed form of
# chapter 4 in miniature.
# ```

# %% tags=["hide-cell"]
# Exercise 3.2: x_t on x_{t-2} alone
t = 500
a_t, a_prev = (schedule.alphas[t - 1].double().item(),
               schedule.alphas[t - 2].double().item())
inputs = trajectory[t - 2][:, None]                        # (N, 1)
fit = torch.linalg.lstsq(inputs, trajectory[t][:, None]).solution.item()
residual = trajectory[t] - fit * trajectory[t - 2]
coef_se = (residual.var() / inputs.square().sum()).sqrt().item()
predicted, noise = (a_t * a_prev) ** 0.5, 1 - a_t * a_prev
print(f"coefficient {fit:.4f} (predicted {predicted:.4f})")
print(f"residual variance {residual.var().item():.4f} (predicted {noise:.4f})")
assert abs(fit - predicted) < 5 * coef_se
assert abs(residual.var().item() / noise - 1) < 5 * (2 / (N - 1)) ** 0.5

# %% [markdown]
# **Exercise 3.3** (show that). For $s < t$, show that
# $\mathrm{Cov}(x_s, x_t) = \sqrt{\bar\alpha_t / \bar\alpha_s}\;\mathrm{Var}(x_s)$, and
# compute it for $s = 100$, $t = 500$ with this chapter's data ($x_0 = \pm 1.5$, so
# $\mathrm{Var}\,x_0 = 2.25$). How does the memory between two times decay?
#
# ```{admonition} Solution
# :class: dropdown
#
# Each step multiplies the covariance with $x_s$ by $\sqrt{\alpha}$, since its fresh
# noise is independent of $x_s$: $\mathrm{Cov}(x_s, x_t) = \sqrt{\alpha_t}\,
# \mathrm{Cov}(x_s, x_{t-1}) = \dots = \sqrt{\alpha_t \cdots \alpha_{s+1}}\,
# \mathrm{Var}(x_s)$, and that product is $\sqrt{\bar\alpha_t / \bar\alpha_s}$. With
# $\mathrm{Var}(x_s) = 2.25\,\bar\alpha_s + 1 - \bar\alpha_s$ (the data shrunk, plus
# the noise) this is about $0.63$ at $s = 100$, $t = 500$. The memory between two times
# decays with the product of the $\alpha$s between them, whatever happened before $s$:
# the Markov property again.
# ```

# %% tags=["hide-cell"]
# Exercise 3.3: covariance between x_100 and x_500
s, t = 100, 500
alpha_bars = schedule.alpha_bars.double().cpu()
var_s = 2.25 * alpha_bars[s - 1] + 1 - alpha_bars[s - 1]
theory = ((alpha_bars[t - 1] / alpha_bars[s - 1]).sqrt() * var_s).item()
products = ((trajectory[s] - trajectory[s].mean())
            * (trajectory[t] - trajectory[t].mean()))       # (N,)
print(f"Cov(x_{s}, x_{t}): theory {theory:.3f}, "
      f"paths {products.mean().item():.3f}")
assert abs(products.mean().item() - theory) < 5 * products.std().item() / N**0.5
assert abs(theory - 0.63) < 0.005
