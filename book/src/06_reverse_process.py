# %% [markdown]
# # The reverse process
#
# Chapters 2-5 built the forward process, which turns data into noise. A generative
# model needs the way back. This chapter completes the picture of
# {cite:t}`ho2020denoising`: the reverse of one forward step given the data point
# (the *posterior*), a model $p_\theta$ that imitates it without knowing the data point,
# the variational bound that measures the imitation, the $\epsilon$-parameterization
# that turns the bound into a plain regression, and a network trained live on 2-D
# data and compared with the exact denoiser.
#
# As in the earlier chapters, the math is 1-indexed ($t = 1, \dots, T$) and the library
# is 0-indexed: the paper's step $t$ is the library's `t - 1`.

# %% COLAB_SETUP
# %%
import inspect
import time

import matplotlib.pyplot as plt
import torch
from IPython.display import Code, display

import diffusion_lib as dl
from diffusion_lib import TrainConfig, train
from diffusion_lib.data import TOY_NAMES
from diffusion_lib.metrics import toy_report
from diffusion_lib.notebook import check_device, check_parameter

# %% tags=["parameters"]
seed = 0               # every random draw in the chapter comes from this seed
device = "cpu"         # "cuda" on a GPU runtime
dataset = "8gaussians" # a 2-D toy: "8gaussians", "swissroll", "moons", "checkerboard"
train_steps = 3000     # optimizer steps of the live training run (~80 s on one CPU core)
batch_size = 512       # examples per step
num_samples = 1000     # samples drawn from each model (the posterior check uses 200x)

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("dataset", dataset, str, lambda v: len(v) > 0, "a dataset name")
check_parameter("train_steps", train_steps, int, lambda v: v >= 1, "an int >= 1")
check_parameter("batch_size", batch_size, int, lambda v: v >= 1, "an int >= 1")
check_parameter("num_samples", num_samples, int, lambda v: v >= 100,
                "an int >= 100")
print(f"parameters ok: {seed=}, {device=}, {dataset=}, {train_steps=}, "
      f"{batch_size=}, {num_samples=}")

# %% [markdown]
# ## The posterior $q(x_{t-1} \mid x_t, x_0)$
#
# Reversing one forward step, $q(x_{t-1} \mid x_t)$, would require the whole data
# distribution. Given the data point $x_0$ as well, the reverse step is a Gaussian
# we can write down. By Bayes' rule and the Markov property of the chain,
#
# $$
# q(x_{t-1} \mid x_t, x_0) = \frac{q(x_t \mid x_{t-1})\, q(x_{t-1} \mid x_0)}{q(x_t \mid x_0)}
# \propto \exp\!\Big(-\frac{\lVert x_t - \sqrt{\alpha_t}\, x_{t-1}\rVert^2}{2\beta_t}
# - \frac{\lVert x_{t-1} - \sqrt{\bar\alpha_{t-1}}\, x_0\rVert^2}{2(1-\bar\alpha_{t-1})}\Big),
# $$
#
# where the denominator does not depend on $x_{t-1}$. The exponent is quadratic in
# $x_{t-1}$; collecting terms,
#
# $$
# -\frac{1}{2}\Big(\frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar\alpha_{t-1}}\Big)
# \lVert x_{t-1}\rVert^2
# + \Big(\frac{\sqrt{\alpha_t}}{\beta_t}\, x_t
# + \frac{\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_{t-1}}\, x_0\Big)^{\!\top} x_{t-1}
# + \text{const}.
# $$
#
# Completing the square, a Gaussian's precision is the coefficient of
# $-\tfrac12\lVert x_{t-1}\rVert^2$ and its mean is the linear coefficient divided by the
# precision. Since $\alpha_t(1-\bar\alpha_{t-1}) + \beta_t = 1 - \bar\alpha_t$, the
# precision is $(1-\bar\alpha_t) / (\beta_t (1-\bar\alpha_{t-1}))$, and
# ({cite:t}`ho2020denoising`, Eq. 6-7)
#
# $$
# q(x_{t-1} \mid x_t, x_0) = \mathcal{N}\big(x_{t-1};\ \tilde\mu_t(x_t, x_0),\ \tilde\beta_t \mathbf{I}\big),
# \qquad
# \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\, x_0
# + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\, x_t,
# \qquad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t ,
# $$
#
# with $\bar\alpha_0 = 1$. The two coefficients of $\tilde\mu_t$ are precomputed by
# `NoiseSchedule` as `posterior_mean_coef1` and `posterior_mean_coef2`:

# %%
display(Code(inspect.getsource(dl.q_posterior_mean_variance), language="python"))

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
print("    t  c      mean of x_{t-1}  mu_tilde  var of x_{t-1}  beta_tilde  kept  ok")
all_ok = True
for t in [2, 10, 100, 500, T]:                          # the paper's t
    x_prev = dl.q_sample(schedule64, x0, t - 2, generator=generator) if t > 1 else x0
    x_t = dl.q_step(schedule64, x_prev, t - 1, generator=generator)
    c = x_t.median().item()
    near = (x_t[:, 0] - c).abs() < 0.05 * x_t.std().item()
    steps = torch.full((N,), t - 1)
    mu, var, _ = dl.q_posterior_mean_variance(schedule64, x0, x_t, steps)
    residual = (x_prev - mu)[near, 0]                   # (n,)
    n, beta_tilde = len(residual), var[0, 0].item()
    mean_ok = abs(residual.mean().item()) < 5 * (beta_tilde / n) ** 0.5
    var_ok = abs(residual.var().item() - beta_tilde) < 5 * beta_tilde * (2 / (n - 1)) ** 0.5
    all_ok = all_ok and mean_ok and var_ok
    mu_c = dl.q_posterior_mean_variance(schedule64, x0[:1], torch.full((1, 1), c, dtype=torch.float64),
                                        steps[:1])[0].item()
    print(f"{t:5d}  {c:5.2f}  {x_prev[near, 0].mean().item():15.3f}  {mu_c:8.3f}  "
          f"{x_prev[near, 0].var().item():14.4f}  {beta_tilde:10.4f}  {n:4d}  "
          f"{mean_ok and var_ok}")

# %% tags=["nbval-check-output"]
print("posterior matches Eq. (6)-(7) within 5 standard errors:", all_ok)
assert all_ok

# %% [markdown]
# The printed means of the kept $x_{t-1}$ are close to $\tilde\mu_t(c, x_0)$ but not
# equal, because $x_t$ varies a little inside the window; the residual test has no
# such bias.
#
# ## The model and the variational bound
#
# A generative model cannot use $x_0$: that is what it has to produce. Ho et al. take
# the reverse step to be a Gaussian with a learned mean and a fixed variance,
#
# $$
# p_\theta(x_{t-1} \mid x_t) = \mathcal{N}\big(x_{t-1};\ \mu_\theta(x_t, t),\ \sigma_t^2 \mathbf{I}\big),
# \qquad p(x_T) = \mathcal{N}(0, \mathbf{I}),
# $$
#
# with $\sigma_t^2 = \tilde\beta_t$ (`variance_type="fixed_small"`) or $\sigma_t^2 = \beta_t$
# (`"fixed_large"`). Training minimizes a variational bound on $-\log p_\theta(x_0)$
# ({cite:t}`ho2020denoising`, Eq. 5):
#
# $$
# L = \underbrace{D_{\mathrm{KL}}\big(q(x_T \mid x_0)\,\Vert\, p(x_T)\big)}_{L_T}
# + \sum_{t=2}^{T} \underbrace{D_{\mathrm{KL}}\big(q(x_{t-1} \mid x_t, x_0)\,\Vert\,
#   p_\theta(x_{t-1} \mid x_t)\big)}_{L_{t-1}}
# \underbrace{-\,\log p_\theta(x_0 \mid x_1)}_{L_0} .
# $$
#
# Each $L_{t-1}$ compares two Gaussians, so it has a closed form: the KL divergence
# between the posterior of the previous section and the model's step. $L_T$ has no
# parameters, and $L_0$ is a discretized Gaussian likelihood of 8-bit data (Eq. 13).
# `p_mean_variance` turns a network output into the model's mean and variance, and
# `vb_term_bpd` computes one term in bits per dimension:

# %%
display(Code(inspect.getsource(dl.p_mean_variance), language="python"))
display(Code(inspect.getsource(dl.vb_term_bpd), language="python"))

# %% [markdown]
# For a Gaussian mixture the best possible denoiser is known exactly:
# `GaussianMixtureOracle` computes $\mathbb{E}[\epsilon \mid x_t]$ from the mixture's
# noised density (chapter 4's `mixture.noised`). `variational_bound` evaluates every
# term for it. To keep this fast we use a short schedule of $T = 100$ steps, on a
# mixture of four narrow bumps inside $[-1, 1]^2$:

# %%
short = dl.NoiseSchedule.linear(100, 1e-3, 0.2)
bumps = dl.GaussianMixture([0.25] * 4, [[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]],
                           0.05**2)
data = bumps.sample(num_samples, generator=torch.Generator().manual_seed(seed)).float()
bound = dl.variational_bound(short, dl.GaussianMixtureOracle(short, bumps), data,
                             generator=torch.Generator().manual_seed(seed))
terms = bound.terms_bpd.mean(0)                          # (T,) entry t: L_t, 0-indexed
print(f"L_T = {bound.prior_bpd.mean().item():.2e} bits/dim, "
      f"L_0 = {terms[0].item():.2f}, sum of L_1..L_(T-1) = {terms[1:].sum().item():.2f}, "
      f"total = {bound.total_bpd.mean().item():.2f} bits/dim")

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
# Even the exact denoiser pays a positive KL at every step: with a Gaussian reverse
# step and a fixed variance, $p_\theta$ cannot match the true reverse step exactly.
# The largest terms sit at small $t$, where the data's fine structure is resolved.
#
# ## Predicting the noise
#
# The KL between two Gaussians of the same variance is a squared distance between
# their means: $L_{t-1} = \frac{1}{2\sigma_t^2}\lVert \tilde\mu_t(x_t, x_0) -
# \mu_\theta(x_t, t)\rVert^2 + C$. Writing $x_0$ through the closed form,
# $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon) / \sqrt{\bar\alpha_t}$ (chapter 5's
# reparameterization), the target mean becomes
# $\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,
# \epsilon\big)$. Ho et al. give the model the same form ({cite:t}`ho2020denoising`,
# Eq. 11),
#
# $$
# \mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}
# \,\epsilon_\theta(x_t, t)\Big),
# $$
#
# so that the network $\epsilon_\theta$ predicts the noise that was added. Each KL term
# is then a weighted squared error on $\epsilon$; dropping the weights gives the
# simplified loss (Eq. 14)
#
# $$
# L_{\text{simple}}(\theta) = \mathbb{E}_{t, x_0, \epsilon}\Big[\big\lVert \epsilon -
# \epsilon_\theta\big(\sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\big)
# \big\rVert^2\Big],
# $$
#
# which the paper found to train better than the bound itself.
#
# **Algorithm 1 (training).** Repeat until converged:
# 1. $x_0 \sim q(x_0)$, $t \sim \mathrm{Uniform}\{1, \dots, T\}$, $\epsilon \sim \mathcal{N}(0, \mathbf{I})$;
# 2. take a gradient step on $\nabla_\theta \lVert \epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t}\,
#    x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon, t)\rVert^2$.
#
# **Algorithm 2 (sampling).**
# 1. $x_T \sim \mathcal{N}(0, \mathbf{I})$;
# 2. for $t = T, \dots, 1$: $z \sim \mathcal{N}(0, \mathbf{I})$ if $t > 1$, else $z = 0$;
#    $x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,
#    \epsilon_\theta(x_t, t)\big) + \sigma_t z$;
# 3. return $x_0$.
#
# In the library, one term of Algorithm 1's loss is `l_simple`, and Algorithm 2 is
# `p_sample_loop` (each step is `p_sample`):

# %%
display(Code(inspect.getsource(dl.l_simple), language="python"))
display(Code(inspect.getsource(dl.p_sample), language="python"))
display(Code(inspect.getsource(dl.p_sample_loop), language="python"))

# %% [markdown]
# ## Training a model on 2-D data
#
# `train` runs Algorithm 1 with a small MLP, AdamW and an exponential moving average
# of the weights (chapter 7 looks at these details). For points its defaults are a
# high learning rate (5e-3) that decays to 0 along a half cosine, which removes the last
# blur from the samples; the 2-D toys train in a minute or two on a CPU. An image dataset would take much longer, so this chapter falls back
# to `8gaussians` for one.

# %%
if dataset in TOY_NAMES:
    toy = dataset
else:
    toy = "8gaussians"
    print(f"note: {dataset!r} is not a 2-D toy; this chapter trains on {toy!r}")
start = time.perf_counter()
run = train(TrainConfig(dataset=toy, steps=train_steps, batch_size=batch_size,
                        seed=seed, device=device, out=None, progress=False))
print(f"trained {run.step} steps on {toy!r} in {time.perf_counter() - start:.0f} s")

# %% tags=["hide-input"] mystnb={"image": {"alt": "Training loss against step on a log scale: noisy per-step values (thin dotted line) and their running mean (solid line), falling fast in the first hundred steps and then flat"}}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
window = max(1, len(run.losses) // 50)
smooth = torch.tensor(run.losses).unfold(0, window, 1).mean(1) if len(run.losses) >= window \
    else torch.tensor(run.losses)
ax.plot(run.steps, run.losses, ":", lw=0.8, alpha=0.5, label="loss per step")
ax.plot(run.steps[window - 1:], smooth, label=f"mean of {window} steps")
ax.set(yscale="log", xlabel="step", ylabel=r"$L_{\mathrm{simple}}$", title="training loss")
ax.legend()
fig.tight_layout()
plt.show()

# %%
samples = run.sample(num_samples, seed=seed)                 # (N, 2) in data space
reference = run.dataset.to_output(run.dataset.x0[:num_samples])

# %% tags=["hide-input"] mystnb={"image": {"alt": "Scatter plots side by side: the eight Gaussian blobs of the data, and the samples of the trained model"}}
fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), sharex=True, sharey=True)
for ax, points, title in [(axes[0], reference, "data"), (axes[1], samples, "model samples")]:
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    ax.set(title=title, aspect="equal")
fig.tight_layout()
plt.show()

# %% [markdown]
# `toy_report` scores the samples against fresh data. Its headline is `nn_ratio`: the
# mean distance from each sample to its nearest data point (and from each data point to
# its nearest sample), divided by the same distance between two independent draws of
# the data. A perfect model scores about 1 (within a few percent); blurred samples, or
# modes left empty, push it up: 1.4 for the swiss roll blurred by noise of a tenth of
# its spread. The energy distance is reported too, but its ratio scatters between 0.3
# and 3 even for perfect samples, so it only flags gross failures. For `8gaussians` the
# report also estimates a KL divergence and counts the modes covered. The numbers
# depend on the platform, since training does.

# %% tags=["nbval-ignore-output"]
report = toy_report(samples, toy, seed=seed)
for name, value in report.items():
    print(f"{name:>26}: {value:.3g}" if isinstance(value, float) else f"{name:>26}: {value}")

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
                                    batch_size=batch_size, seed=seed, device=device,
                                    out=None, progress=False))
schedule = mixture_run.schedule
oracle = dl.GaussianMixtureOracle(schedule, mixture_run.dataset.training_mixture)
network = mixture_run.ema_model.eval()
generator = torch.Generator(device=device).manual_seed(seed)
x0 = mixture_run.dataset.x0[:num_samples].to(device)         # (N, 2) training space
print("    t   MSE(network, oracle)   MSE(oracle, true noise)")
with torch.no_grad():
    for t in [10, 100, 300, 600, T]:                          # the paper's t
        steps = torch.full((len(x0),), t - 1, device=device)
        noise = torch.randn(x0.shape, generator=generator, device=device)
        x_t = dl.q_sample(schedule, x0, steps, noise)
        eps_net, eps_exact = network(x_t, steps), oracle(x_t, steps)
        gap = ((eps_net - eps_exact) ** 2).mean().item()
        floor = ((eps_exact - noise) ** 2).mean().item()
        print(f"{t:5d}   {gap:20.4f}   {floor:23.4f}")

# %% [markdown]
# The second column is the error of the exact denoiser itself: no network can predict
# the noise better on average, since $x_t$ does not determine $\epsilon$. The first
# column is how far the network is from that optimum. The network's samples came from
# `p_sample_loop` (inside `run.sample`); the same loop samples with the oracle:

# %%
from_network = samples if mixture_run is run else mixture_run.sample(num_samples, seed=seed)
with torch.no_grad():
    from_oracle = dl.p_sample_loop(schedule, oracle, (num_samples, 2), progress=False,
                                   generator=torch.Generator(device=device).manual_seed(seed))
from_oracle = mixture_run.dataset.to_output(from_oracle)     # data space

# %% tags=["hide-input"] mystnb={"image": {"alt": "Scatter plots side by side: samples from the trained network and samples from the exact denoiser, drawn from the same starting noise"}}
fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), sharex=True, sharey=True)
for ax, points, title in [(axes[0], from_network, "trained network"),
                          (axes[1], from_oracle, "exact denoiser")]:
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
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
# * The model $p_\theta(x_{t-1} \mid x_t) = \mathcal{N}(\mu_\theta, \sigma_t^2\mathbf{I})$ is
#   trained on a variational bound whose terms are KL divergences to that posterior.
# * Writing $\mu_\theta$ through a noise predictor $\epsilon_\theta$ (Eq. 11) turns the
#   bound into a regression on the noise, $L_{\text{simple}}$ (Eq. 14): Algorithm 1.
#   Sampling is Algorithm 2.
# * On a Gaussian mixture the exact denoiser is known, and a network trained for a
#   minute or two comes close to it.
