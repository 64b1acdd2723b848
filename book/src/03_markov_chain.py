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
import inspect
import time

import matplotlib.pyplot as plt
import torch
from IPython.display import Code, display

import diffusion_lib as dl
from diffusion_lib.notebook import check_device, check_parameter

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
# q(x_{1:T} \mid x_0) = \prod_{t=1}^{T} q(x_t \mid x_{t-1}),
# \qquad
# q(x_t \mid x_{t-1}) = \mathcal{N}\!\left(x_t;\ \sqrt{1-\beta_t}\, x_{t-1},\ \beta_t \mathbf{I}\right),
# $$
#
# where $x_{1:T}$ is short for $x_1, \dots, x_T$. Like every factor, the product is
# written $q$, without parameters. The product also says how to sample a path: draw
# $x_1$ from $x_0$, then $x_2$ from $x_1$, and so on, one step after another. That is
# what `q_sample_chain` does:

# %%
display(Code(inspect.getsource(dl.q_sample_chain), language="python"))

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
styles = ["-", "--", "-.", ":", "-"]   # line styles tell the steps apart in grayscale too
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
# machine, so only rounded values are printed.

# %% tags=["nbval-ignore-output"]
def seconds(fn, repeats=5):
    """The fastest of a few runs of fn(), in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


batch = torch.randn(256, 1, 8, 8, generator=generator, device=device)
chain_steps = [1, 10, 100, 1000]
times = {}
for t in chain_steps:
    times[t] = seconds(lambda: dl.q_sample_chain(
        schedule, batch, num_steps=t, generator=generator),
        repeats=5 if t < 1000 else 2)
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
