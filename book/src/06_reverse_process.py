# %% [markdown]
# # The reverse process
#
# Chapters 2-5 built the forward process, which turns data into noise. A generative
# model needs the way back. This chapter completes the picture of
# {cite:t}`ho2020denoising`: the reverse of one forward step given the data point
# (the *posterior*), a model $p_\theta$ that imitates it without knowing the data point,
# the variational bound that measures the imitation, derived step by step and checked
# on data whose answers are known exactly, the $\epsilon$-parameterization that turns
# the bound into a plain regression, and a network trained live on 2-D data and
# compared with the exact denoiser.
#
# As in the earlier chapters, the math is 1-indexed ($t = 1, \dots, T$) and the library
# is 0-indexed: the paper's step $t$ is the library's `t - 1`.

# %% COLAB_SETUP
# %%
import math
import time

import matplotlib.pyplot as plt
import torch
from IPython.display import display
from torch.distributions import Normal

import diffusion_lib as dl
from diffusion_lib import TrainConfig, train
from diffusion_lib.data import TOY_NAMES
from diffusion_lib.metrics import toy_report
from diffusion_lib.notebook import check_device, check_parameter, show_source

# %% tags=["parameters"]
seed = 0               # every random draw in the chapter comes from this seed
device = "cpu"         # "cuda" on a GPU runtime
dataset = "8gaussians" # a 2-D toy: "8gaussians", "swissroll", "moons", ...
train_steps = 3000     # optimizer steps of the live training run
batch_size = 512       # examples per step
num_samples = 1000     # samples per model and Monte Carlo check

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("dataset", dataset, str, lambda v: len(v) > 0, "a dataset name")
check_parameter("train_steps", train_steps, int, lambda v: v >= 1,
                "an int >= 1")
check_parameter("batch_size", batch_size, int, lambda v: v >= 1, "an int >= 1")
check_parameter("num_samples", num_samples, int, lambda v: v >= 100,
                "an int >= 100")
print(f"parameters ok: {seed=}, {device=}, {dataset=},")
print(f"    {train_steps=}, {batch_size=}, {num_samples=}")

# %% [markdown]
# ## The posterior $q(x_{t-1} \mid x_t, x_0)$
#
# Reversing one forward step, $q(x_{t-1} \mid x_t)$, would require the whole data
# distribution. Given the data point $x_0$ as well, the reverse step is a Gaussian
# we can write down. By Bayes' rule and the Markov property of the chain,
#
# $$
# \begin{aligned}
# q(x_{t-1} \mid x_t, x_0)
# &= \frac{q(x_t \mid x_{t-1})\, q(x_{t-1} \mid x_0)}{q(x_t \mid x_0)} \\
# &\propto \exp\Big(-\frac{\lVert x_t - \sqrt{\alpha_t}\, x_{t-1}\rVert^2}{2\beta_t}
# - \frac{\lVert x_{t-1} - \sqrt{\bar\alpha_{t-1}}\, x_0\rVert^2}
#        {2(1-\bar\alpha_{t-1})}\Big),
# \end{aligned}
# $$
#
# where the denominator does not depend on $x_{t-1}$. The exponent is quadratic in
# $x_{t-1}$; collecting terms, it is
#
# $$
# \begin{aligned}
# &-\frac{1}{2}\Big(\frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar\alpha_{t-1}}\Big)
#   \lVert x_{t-1}\rVert^2 \\
# &+ \Big(\frac{\sqrt{\alpha_t}}{\beta_t}\, x_t
#   + \frac{\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_{t-1}}\, x_0\Big)^{\!\top} x_{t-1}
#   + \text{const}.
# \end{aligned}
# $$
#
# Completing the square, a Gaussian's precision is the coefficient of
# $-\tfrac12\lVert x_{t-1}\rVert^2$ and its mean is the linear coefficient divided by the
# precision. Since $\alpha_t(1-\bar\alpha_{t-1}) + \beta_t = 1 - \bar\alpha_t$, the
# precision is $(1-\bar\alpha_t) / (\beta_t (1-\bar\alpha_{t-1}))$, and
# ({cite:t}`ho2020denoising`, Eq. 6-7)
#
# $$
# \begin{aligned}
# q(x_{t-1} \mid x_t, x_0) &= \mathcal{N}\big(x_{t-1};\ \tilde\mu_t(x_t, x_0),\
#   \tilde\beta_t \mathbf{I}\big), \\
# \tilde\mu_t(x_t, x_0) &= \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\, x_0
#   + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\, x_t, \\
# \tilde\beta_t &= \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t ,
# \end{aligned}
# $$
#
# with $\bar\alpha_0 = 1$. The two coefficients of $\tilde\mu_t$ are precomputed by
# `NoiseSchedule` as `posterior_mean_coef1` and `posterior_mean_coef2`:

# %%
show_source(dl.q_posterior_mean_variance)

# %% [markdown]
# **Check.** Draw many pairs $(x_{t-1}, x_t)$ from the chain started at one point
# $x_0 = 1$ (1-D), keep the pairs whose $x_t$ lies near a chosen value $c$, and compare
# the mean and variance of the kept $x_{t-1}$ with $\tilde\mu_t(c, x_0)$ and
# $\tilde\beta_t$. The window around $c$ is narrow but not a point, so we compare the
# *residuals* $x_{t-1} - \tilde\mu_t(x_t, x_0)$ (mean $0$, variance $\tilde\beta_t$,
# whatever $x_t$ is), within five standard errors. The table's rounded numbers depend
# on the random draws; the line after it is the check.

# %% tags=["nbval-ignore-output"]
schedule64 = dl.NoiseSchedule.linear(dtype=torch.float64)
T = schedule64.num_timesteps
generator = torch.Generator().manual_seed(seed)
N = 200 * num_samples                                  # pairs per timestep
x0 = torch.ones(N, 1, dtype=torch.float64)             # (N, 1)
print("    t     c  mean x_(t-1)  mu_tilde  var x_(t-1)  beta_tilde  kept  ok")
all_ok = True
for t in [2, 10, 100, 500, T]:                          # the paper's t
    x_prev = dl.q_sample(schedule64, x0, t - 2, generator=generator) \
        if t > 1 else x0
    x_t = dl.q_step(schedule64, x_prev, t - 1, generator=generator)
    c = x_t.median().item()
    near = (x_t[:, 0] - c).abs() < 0.05 * x_t.std().item()
    steps = torch.full((N,), t - 1)
    mu, var, _ = dl.q_posterior_mean_variance(schedule64, x0, x_t, steps)
    residual = (x_prev - mu)[near, 0]                   # (n,)
    n, beta_tilde = len(residual), var[0, 0].item()
    mean_ok = abs(residual.mean().item()) < 5 * (beta_tilde / n) ** 0.5
    var_se = beta_tilde * (2 / (n - 1)) ** 0.5
    var_ok = abs(residual.var().item() - beta_tilde) < 5 * var_se
    all_ok = all_ok and mean_ok and var_ok
    at_c = torch.full((1, 1), c, dtype=torch.float64)
    mu_c = dl.q_posterior_mean_variance(schedule64, x0[:1], at_c,
                                        steps[:1])[0].item()
    print(f"{t:5d}  {c:4.2f}  {x_prev[near, 0].mean().item():12.3f}  "
          f"{mu_c:8.3f}  {x_prev[near, 0].var().item():11.4f}  "
          f"{beta_tilde:10.4f}  {n:4d}  {mean_ok and var_ok}")

# %% tags=["nbval-check-output"]
print("posterior matches Eq. (6)-(7) within 5 standard errors:", all_ok)
assert all_ok

# %% [markdown]
# The printed means of the kept $x_{t-1}$ are close to $\tilde\mu_t(c, x_0)$ but not
# equal, because $x_t$ varies a little inside the window; the residual test has no
# such bias.
#
# ## The model
#
# A generative model cannot use $x_0$: that is what it has to produce. Ho et al. take
# the reverse step to be a Gaussian with a learned mean and a fixed variance,
#
# $$
# \begin{aligned}
# p_\theta(x_{t-1} \mid x_t) &= \mathcal{N}\big(x_{t-1};\ \mu_\theta(x_t, t),\
#   \sigma_t^2 \mathbf{I}\big), \\
# p(x_T) &= \mathcal{N}(0, \mathbf{I}),
# \end{aligned}
# $$
#
# with $\sigma_t^2 = \tilde\beta_t$ (`variance_type="fixed_small"`, the library's
# default) or $\sigma_t^2 = \beta_t$ (`"fixed_large"`). The model of a whole path is
# the product of its steps, $p_\theta(x_{0:T}) = p(x_T) \prod_{t=1}^T p_\theta(x_{t-1}
# \mid x_t)$, and the model of the data is what is left after integrating out the
# path, $p_\theta(x_0) = \int p_\theta(x_{0:T})\, dx_{1:T}$. That integral over a
# thousand variables is out of reach, so training uses a bound instead.
#
# ## The variational bound, derived
#
# We want to make $-\log p_\theta(x_0)$ small for the data. Four steps turn it into
# something computable ({cite:t}`ho2020denoising`, Eq. 3 and 5, following
# {cite:t}`sohl2015deep`).
#
# **Step 1: Jensen's inequality.** Multiply and divide inside the integral by the
# forward process $q(x_{1:T} \mid x_0)$, which reads the integral as an expectation over
# forward paths. The logarithm is concave, so the log of a mean is at least the mean of
# the log:
#
# $$
# \begin{aligned}
# -\log p_\theta(x_0)
# &= -\log \mathbb{E}_{q(x_{1:T} \mid x_0)}\Big[
#    \frac{p_\theta(x_{0:T})}{q(x_{1:T} \mid x_0)}\Big] \\
# &\le \mathbb{E}_{q(x_{1:T} \mid x_0)}\Big[
#    -\log \frac{p_\theta(x_{0:T})}{q(x_{1:T} \mid x_0)}\Big] =: L(x_0).
# \end{aligned}
# $$
#
# The gap is $D_\mathrm{KL}(q(x_{1:T} \mid x_0) \,\Vert\, p_\theta(x_{1:T} \mid x_0))
# \ge 0$: the bound is tight when the model's reverse paths, given their end $x_0$,
# look like the forward paths.
#
# **Step 2: the Markov factorisations.** Both processes are products of their steps, so
# the log of the ratio is a sum over steps (Ho et al., Eq. 3):
#
# $$
# L(x_0) = \mathbb{E}_{q}\Big[-\log p(x_T)
#   - \sum_{t=1}^{T} \log \frac{p_\theta(x_{t-1} \mid x_t)}{q(x_t \mid x_{t-1})}\Big].
# $$
#
# Each term compares a reverse step with a forward step of the other direction, two
# densities of different variables. A Monte Carlo estimate has to simulate whole paths.
#
# **Step 3: Bayes' rule, given $x_0$.** This is the step that brings in the posterior
# of the previous section. For $t \ge 2$ the forward step does not depend on $x_0$ once
# $x_{t-1}$ is known, so $q(x_t \mid x_{t-1}) = q(x_t \mid x_{t-1}, x_0)$, and Bayes'
# rule turns it around:
#
# $$
# q(x_t \mid x_{t-1}) = \frac{q(x_{t-1} \mid x_t, x_0)\; q(x_t \mid x_0)}
#   {q(x_{t-1} \mid x_0)} .
# $$
#
# Put into the sum, the ratios $q(x_t \mid x_0) / q(x_{t-1} \mid x_0)$ telescope to
# $q(x_T \mid x_0) / q(x_1 \mid x_0)$, and the $q(x_1 \mid x_0)$ that is left cancels
# the forward step of $t = 1$:
#
# $$
# \begin{aligned}
# L(x_0) = \mathbb{E}_{q}\Big[&\log \frac{q(x_T \mid x_0)}{p(x_T)}
#   + \sum_{t=2}^{T} \log \frac{q(x_{t-1} \mid x_t, x_0)}{p_\theta(x_{t-1} \mid x_t)}
#   \\ &- \log p_\theta(x_0 \mid x_1)\Big].
# \end{aligned}
# $$
#
# Now every reverse step of the model is compared with the reverse step of the forward
# process *given the data point*, a Gaussian of the same variable.
#
# **Step 4: expectations of log-ratios are KL divergences.** The term of step $t$
# depends only on $x_{t-1}$ and $x_t$. Averaging it first over $x_{t-1}$ given $x_t$
# and $x_0$ (the posterior) gives a KL divergence, and what remains is an average over
# $x_t \sim q(x_t \mid x_0)$ (Ho et al., Eq. 5):
#
# $$
# \begin{aligned}
# L(x_0) ={}& \underbrace{D_{\mathrm{KL}}\big(q(x_T \mid x_0)\,\Vert\,
#   p(x_T)\big)}_{L_T} \\
# &+ \sum_{t=2}^{T} \underbrace{\mathbb{E}_{q(x_t \mid x_0)}\, D_{\mathrm{KL}}\big(
#   q(x_{t-1} \mid x_t, x_0)\,\Vert\, p_\theta(x_{t-1} \mid x_t)\big)}_{L_{t-1}} \\
# &+ \underbrace{\mathbb{E}_{q(x_1 \mid x_0)}
#   \big[-\log p_\theta(x_0 \mid x_1)\big]}_{L_0} .
# \end{aligned}
# $$
#
# **What holds for each $x_0$, and what only on average.** The inequality
# $-\log p_\theta(x_0) \le L(x_0) = L_T + \sum_t L_{t-1} + L_0$ holds for every data
# point, with the expectations over the path inside each term. Without them it does
# not: one drawn path gives an unbiased *estimate* of $L(x_0)$, which can fall below
# $-\log p_\theta(x_0)$. `variational_bound` draws one $x_t$ per step and per data
# point, so its output is such an estimate, and only its average is a bound. Training
# then averages over the data too: $\mathbb{E}_{q(x_0)}[L(x_0)] \ge
# \mathbb{E}_{q(x_0)}[-\log p_\theta(x_0)]$, the cross-entropy of the model, which is
# itself at least the entropy of the data.
#
# ### Every step, checked on Gaussian data
#
# One-dimensional Gaussian data, $x_0 \sim \mathcal{N}(0.5, 0.3^2)$, makes every quantity
# above computable exactly. Its exact denoiser (`GaussianMixtureOracle` with one
# component) plays the network, with the library's $\sigma_t^2 = \tilde\beta_t$. For
# Gaussian data the exact $\mathbb{E}[\epsilon \mid x_t]$ is linear in $x_t$ (exercise
# 4.2), so the model's reverse mean is $\mu_\theta(x_t, t) = a_t x_t + b_t$. We read
# $a_t$ and $b_t$ off the library's `p_mean_variance` at $x_t = 0$ and $1$. Then every
# step of the model is linear plus Gaussian noise, the model's $p_\theta(x_0)$ is an
# exact Gaussian, and so is every term of the bound.

# %%
mu_data, std_data = 0.5, 0.3
gaussian = dl.GaussianMixture([1.0], [[mu_data]], std_data**2)
exact_eps = dl.GaussianMixtureOracle(schedule64, gaussian)   # the "network"

# the model's reverse mean a_t x_t + b_t and variance sigma_t^2, t = 1..T
a, b, sigma2 = (torch.empty(T, dtype=torch.float64) for _ in range(3))
probe = torch.tensor([[0.0], [1.0]], dtype=torch.float64)    # x_t = 0 and 1
for t in range(1, T + 1):
    steps = torch.full((2,), t - 1)
    p = dl.p_mean_variance(schedule64, exact_eps(probe, steps), probe, steps)
    b[t - 1] = p.mean[0, 0]
    a[t - 1] = p.mean[1, 0] - p.mean[0, 0]
    sigma2[t - 1] = p.log_variance[0, 0].exp()   # t = 1: the decoder's

# p_theta(x_0): x_T ~ N(0, 1), then x_(t-1) = a_t x_t + b_t + sigma_t z
model_mean, model_var = 0.0, 1.0
for t in range(T, 0, -1):
    model_mean = a[t - 1] * model_mean + b[t - 1]
    model_var = a[t - 1] ** 2 * model_var + sigma2[t - 1]


def model_nll(x0):
    """-log p_theta(x_0) in nats, exactly (the model's marginal is Gaussian)."""
    return (0.5 * torch.log(2 * math.pi * model_var)
            + (x0 - model_mean) ** 2 / (2 * model_var))


print(f"p_theta(x_0) = N({model_mean.item():.4f}, "
      f"{model_var.sqrt().item():.4f}^2); the data: N(0.5, 0.3^2)")

# %% [markdown]
# **Steps 2 and 3, path by path.** We simulate forward paths and evaluate, on each,
# every density of the two sums: the forward steps with `torch.distributions.Normal`,
# the posterior with `q_posterior_mean_variance`, $q(x_t \mid x_0)$ with
# `q_mean_variance`, the model's steps with `p_mean_variance`. Bayes' rule of step 3
# must hold at every step of every path, and the integrand of Eq. 3 must equal that of
# Eq. 5 on every path, up to rounding: the rewrite changes how the terms are grouped,
# not their sum. Averaged over the paths, both estimate $L(x_0)$.

# %%
n_paths = 200
cpu = torch.Generator().manual_seed(seed)
start = gaussian.sample(n_paths, generator=cpu)                 # (n, 1)
path = dl.q_sample_chain(schedule64, start, generator=cpu,
                         return_trajectory=True)[:, :, 0]       # (T + 1, n)
x_0 = start[:, 0]
alphas, betas = schedule64.alphas[:, None], schedule64.betas[:, None]
# log q(x_t | x_(t-1)), t = 1..T
log_step = Normal(alphas.sqrt() * path[:-1], betas.sqrt()).log_prob(path[1:])
# log q(x_t | x_0), t = 1..T
mean_t, var_t = dl.q_mean_variance(schedule64, x_0.expand(T, n_paths),
                                   torch.arange(T))
log_marginal = Normal(mean_t, var_t.sqrt()).log_prob(path[1:])  # (T, n)
# log q(x_(t-1) | x_t, x_0) and log p_theta(x_(t-1) | x_t), t = 1..T
log_post = torch.empty(T, n_paths, dtype=torch.float64)
log_model = torch.empty(T, n_paths, dtype=torch.float64)
for t in range(1, T + 1):
    steps = torch.full((n_paths,), t - 1)
    x_t, x_prev = path[t][:, None], path[t - 1]
    mu, _, log_var = dl.q_posterior_mean_variance(schedule64, start, x_t, steps)
    if t > 1:
        log_post[t - 1] = Normal(mu[:, 0], (0.5 * log_var[:, 0]).exp()
                                 ).log_prob(x_prev)
    p = dl.p_mean_variance(schedule64, exact_eps(x_t, steps), x_t, steps)
    log_model[t - 1] = Normal(p.mean[:, 0], (0.5 * p.log_variance[:, 0]).exp()
                              ).log_prob(x_prev)
log_prior = Normal(0.0, 1.0).log_prob(path[T])                  # log p(x_T)

# step 3: q(x_t | x_(t-1))
#       = q(x_(t-1) | x_t, x_0) q(x_t | x_0) / q(x_(t-1) | x_0)
bayes = log_post[1:] + log_marginal[1:] - log_marginal[:-1]
# the integrands of Eq. 3 and Eq. 5, one value per path
eq3 = -log_prior - (log_model - log_step).sum(0)
eq5 = (log_marginal[T - 1] - log_prior + (log_post[1:] - log_model[1:]).sum(0)
       - log_model[0])

# %% tags=["nbval-check-output"]
bayes_ok = torch.allclose(bayes, log_step[1:], atol=1e-8)
paths_ok = torch.allclose(eq3, eq5, atol=1e-6)
print("Bayes' rule of step 3 holds at every step of every path:", bayes_ok)
print("Eq. 3 and Eq. 5 agree on every path:", paths_ok)
assert bayes_ok and paths_ok

# %% [markdown]
# **Steps 1 and 4: the bound, exactly.** With $\mu_\theta$ linear in $x_t$ and
# $x_t \mid x_0$ Gaussian, the average of each KL term over $x_t$ has a closed form
# (the expected square of a linear function of a Gaussian), and so have $L_T$ and the
# decoder term. For data that is not on a grid the decoder is the Gaussian density
# itself, $L_0 = \mathbb{E}[-\log \mathcal{N}(x_0;\ \mu_\theta(x_1, 1), \sigma_1^2)]$
# (more on $L_0$ below). The folded cell computes $L(x_0)$ this way;
# `variational_bound` estimates the same terms by Monte Carlo, one draw of $x_t$ per
# step, and the paths above give a third estimate through Eq. 3.

# %% tags=["hide-input"]
def exact_bound(x0, variances=sigma2):
    """L(x_0) = L_T + sum_t L_(t-1) + L_0 in nats, in closed form, for x0 (N,)
    and the model's variances sigma_t^2, t = 1..T (entry 0: the decoder's)."""
    ab = schedule64.alpha_bars[:, None]                       # (T, 1)
    mean, var = ab.sqrt() * x0, 1 - ab                         # of x_t | x_0
    # mu_tilde(x_t, x_0) - mu_theta(x_t) = k x_t + d
    k = schedule64.posterior_mean_coef2[:, None] - a[:, None]
    d = schedule64.posterior_mean_coef1[:, None] * x0 - b[:, None]
    mean_sq = (k * mean + d) ** 2 + k**2 * var          # E[(k x_t + d)^2]
    s2, bt = variances[:, None], schedule64.posterior_variance[:, None]
    kl = 0.5 * ((s2 / bt).log() + bt / s2 - 1) + mean_sq / (2 * s2)   # (T, N)
    miss = (x0 - a[0] * mean[0] - b[0]) ** 2 + a[0] ** 2 * var[0]
    decoder = 0.5 * torch.log(2 * math.pi * s2[0]) + miss / (2 * s2[0])
    prior = 0.5 * (var[-1] + mean[-1] ** 2 - 1 - var[-1].log())
    return prior + kl[1:].sum(0) + decoder


def library_bound(x0):
    """The same, estimated by variational_bound (one x_t per step), and
    the Gaussian decoder at one x_1: per-example values in nats, (N,)."""
    x = x0[:, None]
    bound = dl.variational_bound(schedule64, exact_eps, x, generator=cpu)
    kl = (bound.prior_bpd + bound.terms_bpd[:, 1:].sum(1)) * math.log(2)
    first = torch.zeros(len(x), dtype=torch.long)
    x_1 = dl.q_sample(schedule64, x, first, generator=cpu)
    p = dl.p_mean_variance(schedule64, exact_eps(x_1, first), x_1, first)
    decoder = -Normal(p.mean, (0.5 * p.log_variance).exp()).log_prob(x)
    return kl + decoder[:, 0]


# %% [markdown]
# For three data points, the mean and three standard deviations either side: the
# exact $-\log p_\theta(x_0)$, the exact bound $L(x_0)$, and the library's estimate of
# it (mean and standard error over 200 draws).

# %% tags=["nbval-ignore-output"]
points = torch.tensor([-3.0, 0.0, 3.0], dtype=torch.float64) * std_data \
    + mu_data                                                  # (3,)
exact = exact_bound(points)
estimate = library_bound(points.repeat_interleave(200)).reshape(3, 200)
print("   x_0   -log p_theta(x_0)   L(x_0)   library estimate")
for x, L, est in zip(points, exact, estimate):
    se = est.std() / 200**0.5
    print(f"{x.item():6.2f}   {model_nll(x).item():17.3f}   {L.item():6.3f}"
          f"   {est.mean().item():8.3f} +- {se.item():.3f}")

# %% tags=["nbval-check-output"]
bound_ok = bool((exact > model_nll(points)).all())
se = estimate.std(1) / 200**0.5
library_ok = bool(((estimate.mean(1) - exact).abs() < 5 * se).all())
eq3_se = eq3.std() / n_paths**0.5
eq3_ok = abs(eq3.mean() - exact_bound(x_0).mean()) < 5 * eq3_se
print("-log p_theta(x_0) <= L(x_0) at every point:", bound_ok)
print("variational_bound agrees with L(x_0) within 5 standard errors:",
      library_ok)
print("the path average of Eq. 3 agrees with it too:", bool(eq3_ok))
assert bound_ok and library_ok and eq3_ok

# %% [markdown]
# The bound holds at each point, by about half a nat. On average over the data, the
# three quantities of the last paragraph line up: the entropy of the data, the
# model's cross-entropy, and the bound. (Both of the last two are quadratic in $x_0$,
# so a three-point Gauss-Hermite rule gives their exact average over the data.)

# %% tags=["nbval-check-output"]
f64 = dict(dtype=torch.float64)
nodes = mu_data + std_data * torch.tensor([-3**0.5, 0, 3**0.5], **f64)
weights = torch.tensor([1 / 6, 2 / 3, 1 / 6], **f64)   # exact to degree 5
entropy = 0.5 * math.log(2 * math.pi * math.e * std_data**2)
cross_entropy = (weights * model_nll(nodes)).sum().item()
mean_bound = (weights * exact_bound(nodes)).sum().item()
print(f"entropy {entropy:.4f} <= cross-entropy {cross_entropy:.4f} "
      f"<= bound {mean_bound:.4f} nats")
assert entropy <= cross_entropy <= mean_bound

# %% [markdown]
# The model is excellent: its cross-entropy is within $2 \cdot 10^{-4}$ nats of the
# entropy, the best any model can do. Yet its bound is about $0.56$ nats higher. Where
# does the bound lose it?
#
# ### What each term measures
#
# It is tempting to read a positive $L_{t-1}$ as a flaw of $p_\theta$. It is not, or
# not only: the KL of each term is taken against $q(x_{t-1} \mid x_t, x_0)$, a reverse
# step that *knows the data point*. No model can know it. Even the exact reverse step
# $q(x_{t-1} \mid x_t)$ of the forward process, which averages the posterior over the
# data points that could have led to $x_t$, pays on average
#
# $$
# \mathbb{E}\, D_{\mathrm{KL}}\big(q(x_{t-1} \mid x_t, x_0) \,\Vert\,
#   q(x_{t-1} \mid x_t)\big) = I(x_0;\, x_{t-1} \mid x_t),
# $$
#
# the information about the data point that $x_{t-1}$ carries beyond $x_t$ (the mean
# over $x_0$ and $x_t$ of a log-ratio of conditional densities: the definition of a
# conditional mutual information). For any model, the average term is that
# information plus $\mathbb{E}\, D_{\mathrm{KL}}(q(x_{t-1} \mid x_t) \,\Vert\,
# p_\theta(x_{t-1} \mid x_t))$, the model's distance to the true reverse step. For
# Gaussian data the true reverse step is itself Gaussian, and the exact denoiser gets
# its mean exactly right: only the variance differs, $\sigma_t^2 = \tilde\beta_t$
# against the true $v_t = \mathrm{Var}(x_{t-1} \mid x_t)$. So its term splits into
# the information and a variance mismatch,
#
# $$
# \mathbb{E}[L_{t-1}] = I(x_0; x_{t-1} \mid x_t)
#   + \tfrac12 \big(v_t / \sigma_t^2 - 1 - \log(v_t / \sigma_t^2)\big),
# $$
#
# both in closed form: all the variables are jointly Gaussian, and
# $I = \tfrac12 \log(v_t / \tilde\beta_t)$. The table compares them with the library's
# $L_{t-1}$ of the exact denoiser, averaged over data points and their $x_t$.

# %% tags=["nbval-ignore-output"]
ab = schedule64.alpha_bars
ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
var_x = ab * std_data**2 + 1 - ab                      # Var x_t, t = 1..T
var_prev = ab_prev * std_data**2 + 1 - ab_prev         # Var x_(t-1)
# v_t = Var(x_(t-1) | x_t) of the jointly Gaussian x_(t-1), x_t
v_rev = var_prev - schedule64.alphas * var_prev**2 / var_x
info = 0.5 * (v_rev / schedule64.posterior_variance).log()   # used for t >= 2
ratio = v_rev / sigma2
mismatch = 0.5 * (ratio - 1 - ratio.log())

print("    t   library L_(t-1)       information   mismatch")
table_ok = True
for t in [2, 10, 100, 500, T]:
    steps = torch.full((num_samples,), t - 1)
    data = gaussian.sample(num_samples, generator=cpu)
    x_t = dl.q_sample(schedule64, data, steps, generator=cpu)
    term = dl.vb_term_bpd(schedule64, exact_eps(x_t, steps), data, x_t,
                          steps) * math.log(2)               # nats
    se = term.std().item() / num_samples**0.5
    expected = (info + mismatch)[t - 1].item()
    table_ok = table_ok and abs(term.mean().item() - expected) < 5 * se
    print(f"{t:5d}   {term.mean().item():.2e} +- {se:.0e}   "
          f"{info[t - 1].item():.2e}   {mismatch[t - 1].item():.1e}")

# %% tags=["nbval-check-output"]
print("library L_(t-1) = information + mismatch within 5 standard errors:",
      table_ok)
assert table_ok

# %% [markdown]
# The information terms are far from small, and they are not waste. Because the forward
# process is Markov, they add up, with the decoder's uncertainty $H(x_0 \mid x_1)$ and
# $I(x_0; x_T)$, to the entropy of the data:
# $H(x_0) = H(x_0 \mid x_1) + \sum_{t=2}^{T} I(x_0; x_{t-1} \mid x_t) + I(x_0; x_T)$.
# They are how the bound spends the entropy over the steps. What the bound loses above
# the entropy is exactly the sum of the mismatches, including that of the decoder and
# of the prior $p(x_T)$: with the exact reverse variances every term would vanish and
# the bound would equal the entropy.

# %% tags=["nbval-check-output"]
info_x0_xT = 0.5 * math.log(var_x[-1] / (1 - ab[-1]))
decoder_entropy = 0.5 * math.log(2 * math.pi * math.e * v_rev[0])  # H(x_0|x_1)
kept = decoder_entropy + info[1:].sum().item() + info_x0_xT
mean_T = ab[-1].sqrt() * mu_data
prior_gap = 0.5 * (var_x[-1] + mean_T**2 - 1 - var_x[-1].log())
lost = mismatch.sum().item() + prior_gap.item()
print(f"H(x_0 | x_1) + sum of I + I(x_0; x_T) = {kept:.4f} = entropy: "
      f"{abs(kept - entropy) < 1e-9}")
print(f"bound - entropy = {mean_bound - entropy:.4f} = sum of mismatches "
      f"{lost:.4f}: {abs(mean_bound - entropy - lost) < 1e-9}")
assert abs(kept - entropy) < 1e-9 and abs(mean_bound - entropy - lost) < 1e-9

# %% [markdown]
# ## The terms in closed form
#
# ### $L_{t-1}$: two Gaussians with different variances
#
# Each $L_{t-1}$ is a KL divergence between two Gaussians in $D$ dimensions, the
# posterior $\mathcal{N}(\tilde\mu_t, \tilde\beta_t \mathbf{I})$ and the model's step
# $\mathcal{N}(\mu_\theta, \sigma_t^2 \mathbf{I})$:
#
# $$
# \begin{aligned}
# D_{\mathrm{KL}} &= \frac{\lVert \tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t)
#   \rVert^2}{2\sigma_t^2} + C_t, \\
# C_t &= \frac{D}{2}\Big(\frac{\tilde\beta_t}{\sigma_t^2} - 1
#   - \log \frac{\tilde\beta_t}{\sigma_t^2}\Big) \ \ge 0 .
# \end{aligned}
# $$
#
# The first part is a squared distance between the means; the second depends only on
# the two variances, not on $\theta$. With $\sigma_t^2 = \tilde\beta_t$ it vanishes;
# with $\sigma_t^2 = \beta_t$ it is a constant that training cannot change. The
# library's `normal_kl` is the general formula; the cell checks the split and prints
# $C_t$ per dimension for $\sigma_t^2 = \beta_t$.

# %% tags=["nbval-check-output"]
beta_tilde, beta = schedule64.posterior_variance, schedule64.betas
mu1, mu2 = torch.randn(2, 1000, 3, generator=cpu, dtype=torch.float64)
print("C_t per dimension for sigma_t^2 = beta_t (nats):")
for t in [2, 10, 100, T]:
    r = (beta_tilde[t - 1] / beta[t - 1]).item()
    kl = dl.normal_kl(mu1, beta_tilde[t - 1].log(), mu2,
                      beta[t - 1].log()).sum(1)                 # (1000,)
    split = ((mu1 - mu2) ** 2).sum(1) / (2 * beta[t - 1]) \
        + 1.5 * (r - 1 - math.log(r))                           # D = 3
    assert torch.allclose(kl, split, rtol=1e-10)
    print(f"    t = {t:4d}: {0.5 * (r - 1 - math.log(r)):.1e}")

# %% [markdown]
# The constant matters only at the first steps, where $\tilde\beta_t$ and $\beta_t$
# differ most ($\tilde\beta_1 = 0$); from $t \approx 100$ on the two variances almost
# agree.
#
# ### $L_0$: the discretized decoder
#
# Images are stored as 8-bit values, 256 levels per pixel, which the library scales to
# $[-1, 1]$ (chapter 7): each value owns a bin of width $2/255$. To give a probability,
# not a density, to such data, Ho et al. (Eq. 13) integrate the Gaussian of the last
# step over the bin of each coordinate $i$:
#
# $$
# \begin{aligned}
# p_\theta(x_0 \mid x_1) &= \prod_{i=1}^{D} \int_{\delta_-(x_0^i)}^{\delta_+(x_0^i)}
#   \mathcal{N}\big(x;\ \mu_\theta^i(x_1, 1),\ \sigma_1^2\big)\, dx, \\
# \delta_+(x) &= \begin{cases} \infty & x = 1 \\ x + 1/255 & x < 1 \end{cases},
# \qquad
# \delta_-(x) = \begin{cases} -\infty & x = -1 \\ x - 1/255 & x > -1 \end{cases}
# \end{aligned}
# $$
#
# The two edge bins reach to infinity, so the probabilities of the 256 values sum to 1.
# `discretized_gaussian_log_likelihood` computes it (its source is folded below), and
# `vb_term_bpd` uses it at $t = 1$ and the KL divergence at every other $t$. Both
# report in *bits per dimension*, the total divided by $D \ln 2$.

# %%
display(show_source(dl.discretized_gaussian_log_likelihood, collapsed=True))
display(show_source(dl.vb_term_bpd, collapsed=True))
display(show_source(dl.p_mean_variance, collapsed=True))

# %% [markdown]
# `variational_bound` adds up all the terms. On a mixture of four narrow bumps inside
# $[-1, 1]^2$ with its exact denoiser, and a short schedule of $T = 100$ steps to keep
# this fast:

# %%
short = dl.NoiseSchedule.linear(100, 1e-3, 0.2)
centres = [[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]]
bumps = dl.GaussianMixture([0.25] * 4, centres, 0.05**2)
data = bumps.sample(num_samples,
                    generator=torch.Generator().manual_seed(seed)).float()
bump_oracle = dl.GaussianMixtureOracle(short, bumps)
bound = dl.variational_bound(short, bump_oracle, data,
                             generator=torch.Generator().manual_seed(seed))
terms = bound.terms_bpd.mean(0)           # (T,) entry t: L_t, 0-indexed
print(f"L_T = {bound.prior_bpd.mean().item():.1e}, L_0 = {terms[0].item():.2f},"
      f" sum of L_1..L_(T-1) = {terms[1:].sum().item():.2f}")
print(f"total = {bound.total_bpd.mean().item():.2f} bits/dim")

# %% tags=["hide-input"] mystnb={"image": {"alt": "Terms of the variational bound in bits per dimension on a log scale: the decoder term L_0 (a dot) is largest, the KL terms fall steadily from t = 2 to t = 100"}}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(torch.arange(2, 101), terms[1:], label=r"$L_{t-1}$, KL terms")
ax.plot([1], terms[:1], "o", label=r"$L_0$, decoder")
ax.set(yscale="log", xlabel="paper's $t$", ylabel="bits / dim",
       title="terms of the bound, exact denoiser")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# As for the Gaussian data, the KL terms of the exact denoiser are mostly the
# information each step carries about $x_0$, largest at small $t$, where the narrow
# bumps are resolved. The decoder term dominates, with well over half of the bound,
# for a reason that has nothing to do with the model: these points are continuous, not
# 8-bit values. When $\sigma_1$ is several times the bin width $\Delta = 2/255$, the mass
# of a bin is almost $\Delta$ times the density, so
#
# $$
# L_0 \approx \mathbb{E}\big[-\log_2 \mathcal{N}(x_0;\ \mu_\theta(x_1, 1),
#   \sigma_1^2)\big] + \log_2 \tfrac{1}{\Delta},
# $$
#
# the continuous decoder's term plus $\log_2 127.5 \approx 7$ bits per coordinate for
# naming its bin. Those 7 bits are the price of describing a real number to 8-bit
# precision; they say nothing about how well the model knows the data. For continuous
# data the honest decoder is the Gaussian density itself, as in the check of the
# previous section; the bound is then one on $-\log p_\theta(x_0)$ as a density, and its
# value must lie above the data's differential entropy (per dimension, in bits).

# %% tags=["nbval-check-output"]
first = torch.zeros(num_samples, dtype=torch.long)
x_1 = dl.q_sample(short, data, first,
                  generator=torch.Generator().manual_seed(seed + 1))
p = dl.p_mean_variance(short, bump_oracle(x_1, first), x_1, first)
decoder = Normal(p.mean, (0.5 * p.log_variance).exp())
continuous = -decoder.log_prob(data).mean().item() / math.log(2)   # bits/dim
discrete = -dl.discretized_gaussian_log_likelihood(
    data, p.mean, 0.5 * p.log_variance).mean().item() / math.log(2)
bin_bits = math.log2(127.5)
print(f"sigma_1 = {decoder.stddev[0, 0].item():.3f}, bin width 2/255 = "
      f"{2 / 255:.4f}")
print(f"L_0: discretized {discrete:.2f} = continuous {continuous:.2f} "
      f"+ {bin_bits:.2f} bits")
assert abs(discrete - continuous - bin_bits) < 0.01
continuous_bound = bound.total_bpd.mean().item() - terms[0].item() + continuous
entropy_bits = -bumps.log_prob(data).mean().item() / (2 * math.log(2))
print(f"with the continuous decoder: bound {continuous_bound:.2f} >= "
      f"entropy {entropy_bits:.2f} bits/dim")
assert continuous_bound > entropy_bits

# %% [markdown]
# Chapter 7 evaluates the bound on real 8-bit images, where the discretized decoder
# is the right one and bits per dimension mean lossless compression.
#
# ## Predicting the noise
#
# ### The mean through the noise (Eq. 11)
#
# The first part of $L_{t-1}$ asks $\mu_\theta(x_t, t)$ to match $\tilde\mu_t(x_t, x_0)$.
# Writing $x_0$ through the closed form, $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon) /
# \sqrt{\bar\alpha_t}$ (chapter 5's reparameterization), the target mean becomes
#
# $$
# \tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\Big(x_t
#   - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\, \epsilon\Big).
# $$
#
# $x_t$ is known to the model; only $\epsilon$ is not. Ho et al. give the model the
# same form ({cite:t}`ho2020denoising`, Eq. 11),
#
# $$
# \mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\Big(x_t
#   - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\, \epsilon_\theta(x_t, t)\Big),
# $$
#
# so that a network $\epsilon_\theta$ predicts the noise that was added.
#
# ### The weight of each step (Eq. 12)
#
# The difference of the two means is then $\beta_t (\epsilon_\theta - \epsilon) /
# (\sqrt{\alpha_t} \sqrt{1 - \bar\alpha_t})$, and each KL term becomes a weighted
# squared error on the noise (Ho et al., Eq. 12):
#
# $$
# \begin{aligned}
# L_{t-1} - C_t &= \mathbb{E}_{x_0, \epsilon}\Big[\lambda_t\,
#   \big\lVert \epsilon - \epsilon_\theta(x_t, t) \big\rVert^2\Big], \\
# \lambda_t &= \frac{\beta_t^2}{2 \sigma_t^2\, \alpha_t\, (1 - \bar\alpha_t)} .
# \end{aligned}
# $$
#
# **Check.** For any noise prediction, not only a good one, the library's term
# (computed through the means, Eq. 6-7 and 11, and `normal_kl`) equals $\lambda_t$
# times the squared error on the noise, plus $C_t$, for both variance choices:

# %% tags=["nbval-check-output"]
x0_check = data.double()                                   # the 2-D bumps
weights_ok = True
for variance_type in ["fixed_small", "fixed_large"]:
    for t in [2, 10, 100, 500, T]:
        steps = torch.full((num_samples,), t - 1)
        noise = torch.randn(x0_check.shape, generator=cpu, dtype=torch.float64)
        x_t = dl.q_sample(schedule64, x0_check, steps, noise)
        guess = torch.randn(x0_check.shape, generator=cpu, dtype=torch.float64)
        term = dl.vb_term_bpd(schedule64, guess, x0_check, x_t, steps,
                              variance_type=variance_type) * math.log(2)
        small = variance_type == "fixed_small"
        s2 = beta_tilde[t - 1] if small else beta[t - 1]
        alpha = schedule64.alphas[t - 1]
        lam = beta[t - 1] ** 2 / (2 * s2 * alpha * (1 - ab[t - 1]))   # Eq. 12
        r = beta_tilde[t - 1] / s2
        c_t = 0.5 * (r - 1 - r.log())                          # per dimension
        by_eq12 = lam * ((noise - guess) ** 2).mean(1) + c_t
        weights_ok = weights_ok and torch.allclose(term, by_eq12, rtol=1e-8)
print("L_(t-1) = lambda_t ||eps - eps_theta||^2 + C_t (Eq. 12):", weights_ok)
assert weights_ok

# %% [markdown]
# The weight is far from uniform. The figure plots $\lambda_t$ for the two variance
# choices.

# %% tags=["hide-input"] mystnb={"image": {"alt": "The weight lambda_t of Eq. 12 against t on a log scale for sigma_t^2 = beta-tilde_t (solid) and beta_t (dashed): both fall steeply over the first hundred steps, then stay near 0.01"}}
alphas, one_minus = schedule64.alphas, 1 - schedule64.alpha_bars
lam_small = beta**2 / (2 * beta_tilde * alphas * one_minus)   # inf at t = 1
lam_large = beta**2 / (2 * beta * alphas * one_minus)
steps_axis = torch.arange(2, T + 1)
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(steps_axis, lam_small[1:], "k-",
        label=r"$\sigma_t^2 = \tilde\beta_t$")
ax.plot(steps_axis, lam_large[1:], "k--", label=r"$\sigma_t^2 = \beta_t$")
ax.axhline(1, color="0.5", lw=0.8, ls=":", label=r"$L_\mathrm{simple}$: 1")
ax.set(xscale="log", yscale="log", xlabel="paper's $t$",
       ylabel=r"$\lambda_t$", title="the weight of each step in the bound")
ax.legend()
fig.tight_layout()
plt.show()

# %% tags=["nbval-check-output"]
share = (lam_small[1:100].sum() / lam_small[1:].sum()).item()
print(f"lambda_2 / lambda_T = {(lam_small[1] / lam_small[-1]).item():.0f}; "
      f"steps 2-100 hold {share:.0%} of the weight")
assert lam_small[1] > 50 * lam_small[-1] and 0.35 < share < 0.45

# %% [markdown]
# The bound spends a large share of its weight on the first few percent of the steps,
# where $x_t$ differs from the data by a sliver of noise. Those are the steps whose
# errors a reader of the samples can least see: removing a tiny amount of noise
# changes an image imperceptibly, while the coarse layout of a sample is decided at
# larger $t$. Ho et al. simply drop the weights (Eq. 14),
#
# $$
# \begin{aligned}
# L_{\text{simple}}(\theta) &= \mathbb{E}_{t, x_0, \epsilon}\big\lVert \epsilon -
#   \epsilon_\theta(x_t, t) \big\rVert^2, \\
# x_t &= \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,
# \end{aligned}
# $$
#
# with $t$ uniform on $\{1, \dots, T\}$: relative to the bound, this moves emphasis from
# the smallest noise levels to the larger ones, where the network has harder
# denoising to learn. It is no longer a bound on the likelihood, but in their
# experiments (their Table 2) it gave better samples than training on the bound, and
# it is easier to optimize: a sum of terms whose weights differ by a factor of 60 is a
# noisy target when each step of training sees one random $t$ per example.
#
# ### Why predict the noise?
#
# The algebra shows that predicting $\epsilon$ is *allowed*. Three reasons make it a
# good idea.
#
# * **A residual, at unit scale.** $x_t$ is known to the network; the noise is what it
#   must find. At every $t$ the target $\epsilon$ has mean 0 and variance 1, so one
#   network serves all noise levels with outputs of the same size, and its job at small
#   $t$ is to find a small correction, not to copy its whole input back, as a network
#   predicting $x_0$ or $\tilde\mu_t$ would have to.
# * **A scaled score.** The best prediction is $\epsilon^*(x_t) = \mathbb{E}[\epsilon
#   \mid x_t] = -\sqrt{1 - \bar\alpha_t}\, \nabla_{x_t} \log p_t(x_t)$, with $p_t$ the
#   density of the noised data: $-\epsilon^*$ points uphill on $p_t$, towards where the
#   data is. $L_\text{simple}$ is *denoising score matching*
#   {cite:p}`vincent2011connection`, and Algorithm 2 below is a noisy walk uphill on
#   $\log p_t$ as $t$ shrinks. Chapter 8 checks this identity against automatic
#   differentiation.
# * **It worked best.** In Ho et al.'s comparison, predicting $\epsilon$ with
#   $L_\text{simple}$ gave the best samples.
#
# Predicting $x_0$, or the "velocity" $v = \sqrt{\bar\alpha_t}\,\epsilon -
# \sqrt{1 - \bar\alpha_t}\, x_0$ of later work, carries the same information: given
# $x_t$, any one of $\hat\epsilon$, $\hat x_0$, $\hat v$ determines the others (the
# library converts between them, `prediction_type`). What changes is the weighting
# that an unweighted squared error implies: with $\mathrm{SNR}(t) = \bar\alpha_t /
# (1 - \bar\alpha_t)$,
#
# $$
# \begin{aligned}
# \lVert \epsilon - \hat\epsilon \rVert^2 &= \mathrm{SNR}(t)\,
#   \lVert x_0 - \hat x_0 \rVert^2, \\
# \lVert v - \hat v \rVert^2 &= \big(1 + \mathrm{SNR}(t)\big)\,
#   \lVert x_0 - \hat x_0 \rVert^2 .
# \end{aligned}
# $$
#
# So $L_\text{simple}$ is an $x_0$-regression that weights each step by its
# signal-to-noise ratio. This book trains with $\epsilon$, as Ho et al. did.

# %% tags=["nbval-check-output"]
t = 300
steps = torch.full((num_samples,), t - 1)
noise = torch.randn(x0_check.shape, generator=cpu, dtype=torch.float64)
x_t = dl.q_sample(schedule64, x0_check, steps, noise)
eps_hat = torch.randn(x0_check.shape, generator=cpu, dtype=torch.float64)
x0_hat = dl.predict_x0_from_eps(schedule64, x_t, steps, eps_hat)
v, v_hat = (dl.predict_v(schedule64, x, steps, e)
            for x, e in [(x0_check, noise), (x0_hat, eps_hat)])
snr = schedule64.snr[t - 1]
err_x0 = ((x0_check - x0_hat) ** 2).sum(1)
eps_ok = torch.allclose(((noise - eps_hat) ** 2).sum(1), snr * err_x0)
v_ok = torch.allclose(((v - v_hat) ** 2).sum(1), (1 + snr) * err_x0)
print("eps-error = SNR(t) * x0-error:", eps_ok)
print("v-error = (1 + SNR(t)) * x0-error:", v_ok)
assert eps_ok and v_ok

# %% [markdown]
# ### Algorithms 1 and 2
#
# **Algorithm 1 (training).** Repeat until converged:
# 1. $x_0 \sim q(x_0)$, $t \sim \mathrm{Uniform}\{1, \dots, T\}$,
#    $\epsilon \sim \mathcal{N}(0, \mathbf{I})$;
# 2. take a gradient step on $\nabla_\theta \lVert \epsilon - \epsilon_\theta(
#    \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon, t)\rVert^2$.
#
# **Algorithm 2 (sampling).**
# 1. $x_T \sim \mathcal{N}(0, \mathbf{I})$;
# 2. for $t = T, \dots, 1$: $z \sim \mathcal{N}(0, \mathbf{I})$ if $t > 1$, else
#    $z = 0$;
#    $x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\, \epsilon_\theta(x_t, t)\big) + \sigma_t z$;
# 3. return $x_0$.
#
# In the library, one term of Algorithm 1's loss is `l_simple`, and one step of
# Algorithm 2 is `p_sample` (`p_sample_loop`, folded, runs all of them):

# %%
display(show_source(dl.l_simple))
display(show_source(dl.p_sample))
display(show_source(dl.p_sample_loop, collapsed=True))

# %% [markdown]
# ## Training a model on 2-D data
#
# `train` runs Algorithm 1 with a small MLP, AdamW and an exponential moving average
# (`EMA`) of the weights; chapter 7 looks at these details. For points its defaults
# are a high learning rate (5e-3) that decays to 0 along a half cosine, which removes
# the last blur from the samples. The command line runs the same training,
# `python -m diffusion_lib train --dataset 8gaussians --out runs/8g`, and writes
# checkpoints. An image dataset would take much longer, so this chapter falls back to
# `8gaussians` for one.

# %%
if dataset in TOY_NAMES:
    toy = dataset
else:
    toy = "8gaussians"
    print(f"note: {dataset!r} is not a 2-D toy; this chapter trains on {toy!r}")
start = time.perf_counter()
run = train(TrainConfig(dataset=toy, steps=train_steps, batch_size=batch_size,
                        seed=seed, device=device, out=None, progress=False))
print(f"trained {run.step} steps on {toy!r} in "
      f"{time.perf_counter() - start:.0f} s")

# %% tags=["hide-input"] mystnb={"image": {"alt": "Training loss against step on a log scale: noisy per-step values (thin dotted line) and their running mean (solid line), falling fast in the first hundred steps and then flat"}}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
losses = torch.tensor(run.losses)
window = max(1, len(losses) // 50)
smooth = losses.unfold(0, window, 1).mean(1)
ax.plot(run.steps, losses, ":", lw=0.8, alpha=0.5, label="loss per step")
ax.plot(run.steps[window - 1:], smooth, label=f"mean of {window} steps")
ax.set(yscale="log", xlabel="step", ylabel=r"$L_{\mathrm{simple}}$",
       title="training loss")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The loss falls fast in the first hundred steps and then hardly moves. Most of what
# remains cannot be removed by any network: exercise 6.4 computes that floor with the
# exact denoiser.

# %%
samples = run.sample(num_samples, seed=seed)            # (N, 2) in data space
reference = run.dataset.to_output(run.dataset.x0[:num_samples])

# %% tags=["hide-input"] mystnb={"image": {"alt": "Scatter plots side by side: the eight Gaussian blobs of the data, and the samples of the trained model"}}
fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), sharex=True, sharey=True)
for ax, shown, title in [(axes[0], reference, "data"),
                         (axes[1], samples, "model samples")]:
    ax.scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.5)
    ax.set(title=title, aspect="equal")
fig.tight_layout()
plt.show()

# %% [markdown]
# `toy_report` scores the samples against fresh data. Its headline is `nn_ratio`: the
# mean distance from each sample to its nearest data point (and from each data point to
# its nearest sample), divided by the same distance between two independent draws of
# the data. A perfect model scores about 1 (within a few percent); blurred samples, or
# modes left empty, push it up: 1.4 for the swiss roll blurred by noise of a tenth of
# its spread. For `8gaussians` the report also estimates
# $\mathrm{KL}(p_\text{data} \Vert q_\text{samples})$ (the exact log density of the
# data against that of a Gaussian mixture fitted to the samples) next to its floor,
# what a fresh sample of real data scores, and counts the modes that received samples.
# (The report has more entries, such as an energy distance
# {cite:p}`szekely2013energy`; the cell prints the ones
# this text explains. The numbers depend on the platform, since training does.)

# %% tags=["nbval-ignore-output"]
report = toy_report(samples, toy, seed=seed)
print(f"nn_ratio: {report['nn_ratio']:.3f}")
if "kl" in report:
    print(f"KL: {report['kl']:.3f} nats (floor {report['kl_floor']:.3f}); "
          f"modes covered: {report['mode_coverage']:.0%}")

# %% [markdown]
# ## Learned versus exact denoiser
#
# For `8gaussians` we know the data distribution, so we can compare the network with
# the best denoiser there is. The network works in the standardized *training space*;
# the dataset exposes its mixture in that space as `training_mixture`. (For another
# toy we train a second model on `8gaussians` here.)

# %%
if toy == "8gaussians":
    mixture_run = run
else:
    print("note: the oracle needs 8gaussians; training a second model on it")
    mixture_run = train(TrainConfig(dataset="8gaussians", steps=train_steps,
                                    batch_size=batch_size, seed=seed,
                                    device=device, out=None, progress=False))
schedule = mixture_run.schedule
mixture = mixture_run.dataset.training_mixture
oracle = dl.GaussianMixtureOracle(schedule, mixture)
network = mixture_run.ema_model.eval()
generator = torch.Generator(device=device).manual_seed(seed)
x0 = mixture_run.dataset.x0[:num_samples].to(device)     # (N, 2) training space
print("    t   MSE(network, oracle)   MSE(oracle, true noise)")
with torch.no_grad():
    for t in [10, 100, 300, 600, T]:                      # the paper's t
        steps = torch.full((len(x0),), t - 1, device=device)
        noise = torch.randn(x0.shape, generator=generator, device=device)
        x_t = dl.q_sample(schedule, x0, steps, noise)
        eps_net, eps_exact = network(x_t, steps), oracle(x_t, steps)
        gap = ((eps_net - eps_exact) ** 2).mean().item()
        floor = ((eps_exact - noise) ** 2).mean().item()
        print(f"{t:5d}   {gap:20.4f}   {floor:23.4f}")

# %% [markdown]
# The second column is the error of the exact denoiser itself: no network can predict
# the noise better on average, since $x_t$ does not determine $\epsilon$. It is large at
# small $t$, where the noise is a sliver that cannot be told apart from the data's own
# spread, and nearly zero at $t = 1000$, where $x_t$ is almost all noise and
# $\epsilon \approx x_t$. The first column is how far the network is from that optimum.
# The network's samples came from `p_sample_loop` (inside `run.sample`); the same loop
# samples with the oracle:

# %%
from_network = samples if mixture_run is run \
    else mixture_run.sample(num_samples, seed=seed)
with torch.no_grad():
    from_oracle = dl.p_sample_loop(
        schedule, oracle, (num_samples, 2), progress=False,
        generator=torch.Generator(device=device).manual_seed(seed))
from_oracle = mixture_run.dataset.to_output(from_oracle)   # data space

# %% tags=["hide-input"] mystnb={"image": {"alt": "Scatter plots side by side: samples from the trained network and samples from the exact denoiser, drawn from the same starting noise"}}
fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), sharex=True, sharey=True)
for ax, shown, title in [(axes[0], from_network, "trained network"),
                         (axes[1], from_oracle, "exact denoiser")]:
    ax.scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.5)
    ax.set(title=title, aspect="equal")
fig.tight_layout()
plt.show()

# %% [markdown]
# The exact denoiser produces eight sharp bumps, and after a minute or two of training
# so does the network, with bumps a little wider and a few points between them. What is
# left of its error lies at small and middle $t$ (the table above), where the fine
# structure of the data is decided; the bound's plot showed the same steps carrying the
# largest terms. With far fewer steps (try `train_steps = 500`) the samples smear along
# the circle on which the bumps lie, and the KL of the report grows more than tenfold.
#
# ## Summary
#
# * Given $x_0$, the reverse step is Gaussian: $q(x_{t-1} \mid x_t, x_0) =
#   \mathcal{N}(\tilde\mu_t, \tilde\beta_t\mathbf{I})$ (Eq. 6-7), checked above by
#   Monte Carlo.
# * Jensen's inequality, the Markov factorisations and Bayes' rule given $x_0$ turn
#   $-\log p_\theta(x_0)$ into the bound $L(x_0) = L_T + \sum_t L_{t-1} + L_0$, with
#   expectations inside each term; it holds for every $x_0$, while one drawn path only
#   estimates it. On Gaussian data every step was checked exactly.
# * Each $L_{t-1}$ compares the model with a reverse step that knows $x_0$, so even a
#   perfect reverse step pays the information $I(x_0; x_{t-1} \mid x_t)$; these terms
#   add up to the entropy of the data. The exact denoiser loses only the variance
#   mismatch.
# * Writing $\mu_\theta$ through a noise predictor (Eq. 11) makes each term a weighted
#   squared error on the noise (Eq. 12); dropping the weights, which favour the
#   smallest noise levels, gives $L_{\text{simple}}$ (Eq. 14): Algorithm 1. The noise
#   predictor is a scaled score. Sampling is Algorithm 2.
# * The discretized decoder (Eq. 13) prices 8-bit values; on continuous data it adds
#   about 7 bits per coordinate that measure the bins, not the model.
# * On a Gaussian mixture the exact denoiser is known, and a network trained for a
#   minute or two comes close to it.
#
# ## Exercises
#
# **Exercise 6.1** (predict, then run). Ho et al. note that $\sigma_t^2 = \beta_t$ is
# the best fixed variance when the data is $\mathcal{N}(0, \mathbf{I})$, and
# $\sigma_t^2 = \tilde\beta_t$ when the data is a single point. The Gaussian data of
# this chapter, $\mathcal{N}(0.5, 0.3^2)$, lies in between. With the same exact mean,
# would $\sigma_t^2 = \beta_t$ give a lower or a higher bound than the $0.77$ nats of
# $\tilde\beta_t$? At which steps does the choice matter? Compute it with
# `exact_bound(x0, variances)`.
#
# ```{admonition} Solution
# :class: dropdown
#
# Lower, here: about $0.33$ nats, against an entropy of $0.21$. The choice matters at
# the first steps, where $\tilde\beta_t$ is several times smaller than $\beta_t$ (and
# $\tilde\beta_1 = 0$). There, the noise added so far is tiny compared with the
# data's spread of $0.3$, so knowing $x_t$ pins down $x_{t-1}$ only to about the fresh
# noise of one step, $\beta_t$: the true reverse variance $v_t$ is close to $\beta_t$,
# and $\tilde\beta_t$, which assumes $x_0$ known, is too small. Data that is
# concentrated on a scale below the noise (like the narrow bumps) would favour
# $\tilde\beta_t$ instead. {cite:t}`nichol2021improved` learn the variance to get the
# best of both.
# ```

# %% tags=["hide-cell"]
# Exercise 6.1: the bound with sigma_t^2 = beta_t (the decoder keeps its own)
large = torch.cat([sigma2[:1], schedule64.betas[1:]])
bound_large = (weights * exact_bound(nodes, large)).sum().item()
print(f"mean bound: beta_tilde {mean_bound:.3f}, beta {bound_large:.3f}, "
      f"entropy {entropy:.3f} nats")
ratio = v_rev / large
mismatch_large = 0.5 * (ratio - 1 - ratio.log())
for t in (2, 10, 100):
    print(f"t = {t:3d}: mismatch {mismatch[t - 1].item():.1e} with beta_tilde,"
          f" {mismatch_large[t - 1].item():.1e} with beta")
assert entropy < bound_large < mean_bound and abs(bound_large - 0.33) < 0.01

# %% [markdown]
# **Exercise 6.2** (show that). Show that for one coordinate of a data point $x_0$,
# $L_T = \tfrac12\big(\bar\alpha_T (x_0^2 - 1) - \log(1 - \bar\alpha_T)\big)$ nats, and
# estimate its size for $|x_0| \le 1$ under the linear schedule. Why can training
# ignore it?
#
# ```{admonition} Solution
# :class: dropdown
#
# $q(x_T \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_T}\, x_0, 1 - \bar\alpha_T)$, and the
# KL divergence from $\mathcal{N}(m, s^2)$ to $\mathcal{N}(0, 1)$ is
# $\tfrac12(s^2 + m^2 - 1 - \log s^2)$; substitute. With $\bar\alpha_T \approx 4 \cdot
# 10^{-5}$ and $-\log(1 - \bar\alpha_T) \approx \bar\alpha_T$, $L_T \approx
# \tfrac12 \bar\alpha_T x_0^2 \le 2 \cdot 10^{-5}$ nats, under $3 \cdot 10^{-5}$ bits.
# It has no parameter to train anyway: $p(x_T)$ is fixed, and so is the forward
# process.
# ```

# %% tags=["hide-cell"]
# Exercise 6.2: L_T by the formula and by the library
ab_T = schedule64.alpha_bars[-1]
x_end = torch.tensor([[0.0], [0.5], [1.0]], dtype=torch.float64)     # (3, 1)
formula = 0.5 * (ab_T * (x_end[:, 0] ** 2 - 1) - torch.log(1 - ab_T))
library = dl.prior_bpd(schedule64, x_end) * math.log(2)              # nats
print("L_T in nats at x_0 = 0, 0.5, 1:",
      [f"{value:.2e}" for value in library.tolist()])
assert torch.allclose(formula, library, rtol=1e-9, atol=1e-15)
assert library.max() / math.log(2) < 3e-5                            # bits

# %% [markdown]
# **Exercise 6.3** (show that, then compute). Give the model of the Gaussian data its
# exact reverse variances, $\sigma_t^2 = v_t = \mathrm{Var}(x_{t-1} \mid x_t)$ (and
# $\mathrm{Var}(x_0 \mid x_1)$ for the decoder), keeping the exact mean. Show that the
# average bound then equals the entropy of the data plus
# $D_\mathrm{KL}(q(x_T) \Vert p(x_T))$, and compute both sides.
#
# ```{admonition} Solution
# :class: dropdown
#
# With the exact mean and variance, $p_\theta(x_{t-1} \mid x_t) = q(x_{t-1} \mid x_t)$
# for every $t$ (for Gaussian data the true reverse step is Gaussian). The
# mismatch terms vanish, and each $L_{t-1}$ is exactly the information
# $I(x_0; x_{t-1} \mid x_t)$; with the decoder's $H(x_0 \mid x_1)$ they add up to
# $H(x_0) - I(x_0; x_T)$, and $L_T$ contributes $I(x_0; x_T) + D_\mathrm{KL}(q(x_T)
# \Vert p(x_T))$, the last because the prior is $\mathcal{N}(0, 1)$ and not the true
# law of $x_T$. That KL is about $5 \cdot 10^{-6}$ nats, so the bound is tight.
# ```

# %% tags=["hide-cell"]
# Exercise 6.3: the exact reverse variances make the bound tight
tight = (weights * exact_bound(nodes, v_rev)).sum().item()
print(f"mean bound {tight:.6f} = entropy {entropy:.6f} "
      f"+ {prior_gap.item():.1e}")
assert abs(tight - entropy - prior_gap.item()) < 1e-9

# %% [markdown]
# **Exercise 6.4** (predict, then compute with the oracle). The training loss above
# flattened early. How much of its final value could a perfect network remove? Compute
# the smallest possible $L_\text{simple}$ for `8gaussians`, the loss of the exact
# denoiser with $t$ uniform on $\{1, \dots, T\}$, and compare it with the mean loss of
# the last tenth of training.
#
# ```{admonition} Solution
# :class: dropdown
#
# Most of it is the floor. The exact denoiser's loss, averaged over $t$, is about
# $0.2$ (at small $t$ it is close to 1, at large $t$ close to 0, as in the table
# above), and the trained network's last losses are only a little above it. A flat loss
# curve therefore does not mean the network has stopped improving: the improvements
# that matter for samples are small against this floor. That is why this book scores
# samples with `toy_report` and against the oracle, and not with the loss.
# ```

# %% tags=["hide-cell"]
# Exercise 6.4: the floor of L_simple, with the exact denoiser
n = num_samples
steps = torch.randint(0, T, (n,), generator=generator, device=device)
noise = torch.randn(x0.shape, generator=generator, device=device)
x_t = dl.q_sample(schedule, x0, steps, noise)
per_example = ((oracle(x_t, steps) - noise) ** 2).mean(1)      # (N,)
floor, floor_se = per_example.mean().item(), per_example.std().item() / n**0.5
last = torch.tensor(mixture_run.losses[-max(1, len(mixture_run.losses) // 10):])
print(f"smallest possible L_simple: {floor:.3f} +- {floor_se:.3f}; "
      f"last training losses: {last.mean().item():.3f}")
last_se = last.std(correction=0).item() / len(last) ** 0.5
assert floor < last.mean().item() + 5 * (floor_se + last_se)
