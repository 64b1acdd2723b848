# %% [markdown]
# # Reparameterization
#
# Chapter 4 ended with a sampling instruction of a particular shape:
# $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \bar\epsilon_t$, a mean plus a
# standard deviation times standard Gaussian noise. Writing a Gaussian sample this way is
# called the **reparameterization trick**. It is the device that lets a variational
# autoencoder (VAE) learn through random sampling, and in a diffusion model it turns the
# noise into an explicit variable that a network can be trained to predict. This chapter
# shows the problem it solves, checks that it solves it, and connects it to both models.

# %% COLAB_SETUP
# %%
import matplotlib.pyplot as plt
import torch

import diffusion_lib as dl
from diffusion_lib.notebook import check_device, check_parameter, show_source

# %% tags=["parameters"]
seed = 0              # every random draw in the chapter comes from this seed
device = "cpu"        # "cuda" on a GPU runtime
num_samples = 100000  # draws behind each Monte Carlo gradient estimate

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("num_samples", num_samples, int, lambda v: v >= 100,
                "an int >= 100")
print(f"parameters ok: {seed=}, {device=}, {num_samples=}")

# %% [markdown]
# ## The problem: gradients of an expectation
#
# Many objectives in machine learning are expectations over a distribution that itself
# depends on the parameters being learned. The simplest case: $z$ is Gaussian with a
# mean $\mu$ and a standard deviation $\sigma$ we control, and we want to change them to
# lower the average of some function $f$,
#
# $$
# L(\mu, \sigma) = \mathbb{E}_{z \sim \mathcal{N}(\mu, \sigma^2)}\big[f(z)\big].
# $$
#
# The expectation is usually intractable, so we estimate it by drawing samples
# $z_1, \dots, z_N$ and averaging $f(z_i)$. To follow the gradient we would then like
# autograd to differentiate that average with respect to $\mu$ and $\sigma$. Take
# $f(z) = z^2$, for which everything is known exactly:
# $L = \mu^2 + \sigma^2$, so $\partial L / \partial \mu = 2\mu$ and
# $\partial L / \partial \sigma = 2\sigma$.
#
# Here is what happens if we simply draw the samples. PyTorch's distribution object
# draws them without recording any computation graph, so there is nothing to
# differentiate:

# %%
mu = torch.tensor(1.0, device=device, requires_grad=True)
sigma = torch.tensor(0.5, device=device, requires_grad=True)
print(f"exact: dL/dmu = 2 mu = {2 * mu.item():.2f}, "
      f"dL/dsigma = 2 sigma = {2 * sigma.item():.2f}")

z = torch.distributions.Normal(mu, sigma).sample((num_samples,))   # (N,)
print("sample() records a graph:", z.grad_fn is not None)
try:
    (z**2).mean().backward()
except RuntimeError as error:
    print("backward() fails:")
    print("   ", str(error).split("\n")[0])

# %% [markdown]
# `torch.normal` is worse in a way: it does record a graph node, but one that declares
# the sample independent of its mean and standard deviation. Autograd then returns a
# gradient without complaint, and the gradient is zero:

# %%
generator = torch.Generator(device=device).manual_seed(seed)
N = num_samples
z = torch.normal(mu.expand(N), sigma.expand(N), generator=generator)
(z**2).mean().backward()
print(f"torch.normal: dL/dmu = {mu.grad.item():.2f}, "
      f"dL/dsigma = {sigma.grad.item():.2f}   (exact: 2.00, 1.00)")
mu.grad, sigma.grad = None, None

# %% [markdown]
# Neither is a bug. A random draw is not a smooth function of $\mu$ and $\sigma$: the
# sampler consumes random bits and returns a number, and nothing tells autograd how that
# number would move if $\mu$ moved.
#
# ## The trick
#
# Move the randomness out of the way. Draw $\epsilon \sim \mathcal{N}(0, 1)$, which does
# not depend on anything we learn, and *compute*
#
# $$
# z = \mu + \sigma\, \epsilon .
# $$
#
# This $z$ has exactly the distribution $\mathcal{N}(\mu, \sigma^2)$, but it is now an
# ordinary differentiable function of $\mu$ and $\sigma$, with $\partial z / \partial \mu
# = 1$ and $\partial z / \partial \sigma = \epsilon$. Because the distribution of
# $\epsilon$ does not depend on the parameters, the gradient moves inside the
# expectation:
#
# $$
# \begin{aligned}
# &\nabla_{\mu, \sigma}\, \mathbb{E}_{z \sim \mathcal{N}(\mu, \sigma^2)}[f(z)] \\
# &\qquad = \nabla_{\mu, \sigma}\, \mathbb{E}_{\epsilon \sim \mathcal{N}(0, 1)}
#    [f(\mu + \sigma \epsilon)] \\
# &\qquad = \mathbb{E}_{\epsilon}\big[f'(\mu + \sigma\epsilon)\, (1,\ \epsilon)\big],
# \end{aligned}
# $$
#
# and the Monte Carlo average of $f(\mu + \sigma\epsilon_i)$ can be differentiated by
# autograd like any other function. For vectors the same holds coordinate by coordinate,
# $z = \mu + \sigma \odot \epsilon$ with $\epsilon \sim \mathcal{N}(0, \mathbf{I})$. In
# `diffusion_lib` this is `reparameterize`, which the forward process uses to draw
# its samples (`q_step`, `q_sample`):

# %%
show_source(dl.reparameterize)

# %% [markdown]
# ## Checking the gradients
#
# We draw $N$ values of $\epsilon$, build $z$ with `dl.reparameterize`, average
# $f(z) = z^2$ and call `backward()`. The result is the mean of the per-sample gradients
# $2 z_i$ (for $\mu$) and $2 z_i \epsilon_i$ (for $\sigma$), so its standard error is
# their standard deviation over $\sqrt{N}$. We compare with the exact values $2\mu$ and
# $2\sigma$, allowing five standard errors.

# %%
# the noise depends on neither mu nor sigma
eps = torch.randn(N, generator=generator, device=device)       # (N,)
z = dl.reparameterize(mu.expand(N), sigma, eps)                # (N,)
print("reparameterized z records a graph:", z.grad_fn is not None)
(z**2).mean().backward()

z = z.detach()
per_sample = {"mu": 2 * z, "sigma": 2 * z * eps}     # d f(z_i) / d parameter
exact = {"mu": 2 * mu.item(), "sigma": 2 * sigma.item()}
estimate = {"mu": mu.grad.item(), "sigma": sigma.grad.item()}
standard_error = {name: (g.std() / N**0.5).item()
                  for name, g in per_sample.items()}
for name in ["mu", "sigma"]:
    print(f"dL/d{name}: autograd {estimate[name]:.3f} "
          f"+- {standard_error[name]:.3f}, exact {exact[name]:.2f}")

# %% tags=["nbval-check-output"]
for name in ["mu", "sigma"]:
    ok = abs(estimate[name] - exact[name]) < 5 * standard_error[name]
    print(f"dL/d{name} = 2 {name} = {exact[name]:.0f} "
          f"within 5 standard errors: {ok}")
    assert ok

# %% [markdown]
# The reparameterized gradient is not the only unbiased estimator. The older
# *score-function* (or REINFORCE) estimator uses
#
# $$
# \begin{aligned}
# \nabla_\mu \mathbb{E}[f(z)]
# &= \mathbb{E}[f(z)\, \nabla_\mu \log \mathcal{N}(z; \mu, \sigma^2)] \\
# &= \mathbb{E}[f(z)\,(z - \mu)/\sigma^2]
# \end{aligned}
# $$
#
# and never differentiates $f$. It is correct on
# average, but its per-sample values scatter much more, so it needs many more samples
# for the same accuracy. The figure shows both running averages for $\partial L /
# \partial \mu$.

# %% tags=["hide-input"] mystnb={"image": {"alt": "Running averages of two gradient estimators against the number of samples (log scale): reparameterization (solid) settles at the exact 2 mu within tens of samples, the score function (dashed) much later"}}
m, s = mu.detach(), sigma.detach()
score_function = z**2 * (z - m) / s**2                 # per sample, (N,)
count = torch.arange(1, N + 1, device=device)
running = {"reparameterization": per_sample["mu"].cumsum(0) / count,
           "score function": score_function.cumsum(0) / count}
fig, ax = plt.subplots(figsize=(6, 3.2))
for (name, values), style in zip(running.items(), ["-", "--"]):
    ax.plot(count.cpu(), values.cpu(), style, label=name)
ax.axhline(exact["mu"], color="k", ls=":", label=r"exact $2\mu$")
ax.set(xscale="log", ylim=(0, 4), xlabel="number of samples",
       ylabel=r"estimate of $\partial L / \partial \mu$",
       title="running Monte Carlo averages")
ax.legend()
fig.tight_layout()
plt.show()
ratio = (score_function.std() / per_sample["mu"].std()).item()
print("standard deviation of the per-sample estimates, score function")
print(f"    / reparameterization: {ratio:.1f}")

# %% [markdown]
# ## In a variational autoencoder
#
# The trick was popularized by the variational autoencoder of
# {cite:t}`kingma2014autoencoding`. An encoder network with parameters $\phi$ maps an
# input $x$ to the mean and standard deviation of a Gaussian over a latent code,
# $q_\phi(z \mid x) = \mathcal{N}(z; \mu_\phi(x), \mathrm{diag}\, \sigma_\phi^2(x))$, and
# the model is trained by maximizing
#
# $$
# \begin{aligned}
# &\mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]
#   - \mathrm{KL}\big(q_\phi(z \mid x)\, \|\, p(z)\big), \\
# &z = \mu_\phi(x) + \sigma_\phi(x) \odot \epsilon,
#   \quad \epsilon \sim \mathcal{N}(0, \mathbf{I}).
# \end{aligned}
# $$
#
# The expectation depends on $\phi$ through the distribution of $z$, exactly the
# situation above, and writing $z$ in reparameterized form is what lets the gradient
# reach the encoder.
#
# ## In a diffusion model
#
# The closed form of chapter 4 is a reparameterized sample with mean
# $\sqrt{\bar\alpha_t}\, x_0$ and standard deviation $\sqrt{1-\bar\alpha_t}$:
#
# $$
# x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \epsilon, \qquad \epsilon \sim \mathcal{N}(0, \mathbf{I}),
# $$
#
# and `q_sample` is implemented with `reparameterize`. Given the same noise, the two
# must return the same tensor:

# %% tags=["nbval-check-output"]
schedule = dl.NoiseSchedule.linear().to(device)
digits = dl.load_dataset("digits", device=device)
x0 = digits.get_batch(0, 16, seed=seed)         # (B, 1, 8, 8) in [-1, 1]
t = 300                                         # the paper's t
noise = torch.randn(x0.shape, generator=generator, device=device)
x_t = dl.q_sample(schedule, x0, t - 1, noise=noise)
mean = schedule.sqrt_alpha_bars[t - 1] * x0
std = schedule.sqrt_one_minus_alpha_bars[t - 1]
by_hand = dl.reparameterize(mean, std, noise)
same = torch.equal(x_t, by_hand)
print("q_sample(x0, t, noise) equals")
print("    sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise:", same)
assert same

# %% [markdown]
# Notice what the trick does *not* do here. In a VAE the distribution being sampled has
# learnable parameters; the forward process of a DDPM has none (it is $q$, not
# $q_\theta$), so no gradient has to pass through its sampling. The role of the trick in
# diffusion is different: it makes the noise $\epsilon$ an explicit, known quantity. From
# $x_0$ and $x_t$ it can be recovered exactly,
#
# $$
# \epsilon = \frac{x_t - \sqrt{\bar\alpha_t}\, x_0}{\sqrt{1-\bar\alpha_t}},
# $$
#
# and this is what {cite:t}`ho2020denoising` ask a network
# $\epsilon_\theta(x_t, t)$ to predict from $x_t$ alone. Their simplified training loss
# (Eq. 14) is a plain regression,
#
# $$
# \begin{aligned}
# L_\text{simple}(\theta) &= \mathbb{E}_{t, x_0, \epsilon}\big\| \epsilon -
#   \epsilon_\theta(x_t, t) \big\|^2, \\
# x_t &= \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \epsilon,
# \end{aligned}
# $$
#
# in which the noisy input is built by reparameterization and the gradient reaches
# $\theta$ through the network only. Chapters 6 and 7 derive and train it. Two last
# checks: the noise comes back from $x_t$, and, because $x_t$ is a differentiable function
# of $x_0$, autograd finds $\partial x_t / \partial x_0 = \sqrt{\bar\alpha_t}$ in every
# coordinate.

# %% tags=["nbval-check-output"]
sqrt_alpha_bar = schedule.sqrt_alpha_bars[t - 1]
recovered = (x_t - sqrt_alpha_bar * x0) / std
noise_ok = torch.allclose(recovered, noise, atol=1e-5)
print("noise recovered from x_0 and x_t:", noise_ok)

x0_leaf = x0.clone().requires_grad_(True)
dl.q_sample(schedule, x0_leaf, t - 1, noise=noise).sum().backward()
grad_ok = torch.allclose(x0_leaf.grad, sqrt_alpha_bar.expand_as(x0))
print(f"d x_t / d x_0 = sqrt(alpha_bar_t) = {sqrt_alpha_bar.item():.3f} "
      "everywhere:", grad_ok)
assert noise_ok and grad_ok

# %% [markdown]
# ## Summary
#
# * Sampling $z \sim \mathcal{N}(\mu, \sigma^2)$ directly hides from autograd how $z$
#   depends on $\mu$ and $\sigma$: no graph at all, or a gradient of zero.
# * Writing $z = \mu + \sigma\epsilon$ with parameter-free noise $\epsilon$ makes $z$ a
#   differentiable function of $\mu$ and $\sigma$; Monte Carlo gradients are then
#   unbiased and, here, far less noisy than score-function ones.
# * VAEs use it to train their encoder. Diffusion models use it to write
#   $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \epsilon$, which makes the
#   noise $\epsilon$ the regression target of training.
#
# This completes the forward process. The next chapter turns to the reverse process.
#
# ## Exercises
#
# **Exercise 5.1** (show that). For $f(z) = z^2$, with $z = \mu + \sigma\epsilon$,
# show that the per-sample reparameterization gradient $2z$ has variance $4\sigma^2$
# and the per-sample score-function gradient $z^2 (z - \mu) / \sigma^2$ has variance
# $(\mu^4 + 18\mu^2\sigma^2 + 15\sigma^4)/\sigma^2 - 4\mu^2$. (The moments of a
# standard Gaussian: $\mathbb{E}\epsilon^2 = 1$, $\mathbb{E}\epsilon^4 = 3$,
# $\mathbb{E}\epsilon^6 = 15$, odd ones $0$.) Evaluate both at $\mu = 1$,
# $\sigma = 0.5$ and compare with the samples behind the figure.
#
# ```{admonition} Solution
# :class: dropdown
#
# $\mathrm{Var}(2z) = 4\,\mathrm{Var}(z) = 4\sigma^2 = 1$. For the score function,
# $z^2 (z - \mu)/\sigma^2 = (\mu + \sigma\epsilon)^2 \epsilon / \sigma$; its mean is
# $2\mu$ (it is unbiased) and its square is $(\mu + \sigma\epsilon)^4 \epsilon^2 /
# \sigma^2$. Expanding the fourth power and keeping the even powers of $\epsilon$:
# $\mathbb{E}[(\mu + \sigma\epsilon)^4 \epsilon^2] = \mu^4 + 6\mu^2\sigma^2 \cdot 3 +
# \sigma^4 \cdot 15$. Subtracting the squared mean gives the claim: $21.75$ at
# $\mu = 1$, $\sigma = 0.5$, so the score-function estimates scatter
# $\sqrt{21.75} \approx 4.7$ times as much, and need about 22 times as many samples for
# the same accuracy.
# ```

# %% tags=["hide-cell"]
# Exercise 5.1: the variances of the two per-sample gradients
m_, s_ = mu.item(), sigma.item()
theory = {"reparameterization": 4 * s_**2,
          "score function": (m_**4 + 18 * m_**2 * s_**2 + 15 * s_**4) / s_**2
          - 4 * m_**2}
samples = {"reparameterization": per_sample["mu"],
           "score function": score_function}
for name, values in samples.items():
    centred = (values - values.mean()).double()
    var = centred.square().mean()
    var_se = ((centred**4).mean() - var**2).sqrt() / N**0.5
    print(f"{name}: variance {var.item():.2f} (theory {theory[name]:.2f})")
    assert abs(var.item() - theory[name]) < 5 * var_se.item()

# %% [markdown]
# **Exercise 5.2** (predict, then run). Keep $\mu = 1$ and shrink $\sigma$ to $0.05$.
# Using the formulas of exercise 5.1, predict how the ratio of the two standard
# deviations changes. Then draw fresh samples and measure it.
#
# ```{admonition} Solution
# :class: dropdown
#
# The reparameterization variance $4\sigma^2$ shrinks with $\sigma$, while the
# score-function variance grows like $\mu^4/\sigma^2$: the ratio of the standard
# deviations grows like $1/(2\sigma^2)$, from $4.7$ to about $200$. The score function
# divides by $\sigma^2$ and never uses the derivative of $f$, which is exactly the
# information that becomes precise when $\sigma$ is small. Reparameterization uses it.
# ```

# %% tags=["hide-cell"]
# Exercise 5.2: a narrow distribution
narrow = 0.05
eps2 = torch.randn(N, generator=generator, device=device, dtype=torch.float64)
z2 = 1.0 + narrow * eps2
reparameterized, scored = 2 * z2, z2**2 * (z2 - 1.0) / narrow**2
measured = (scored.std() / reparameterized.std()).item()
predicted = ((1 + 18 * narrow**2 + 15 * narrow**4) / narrow**2 - 4) ** 0.5 \
    / (2 * narrow)
print(f"std ratio at sigma = {narrow}: measured {measured:.0f}, "
      f"predicted {predicted:.0f}")
assert abs(measured / predicted - 1) < 0.05 and predicted > 200

# %% [markdown]
# **Exercise 5.3** (show that, then check with the oracle). A network can predict the
# noise from $x_t$ only up to what $x_t$ reveals. For one-dimensional Gaussian data,
# $x_0 \sim \mathcal{N}(0, \sigma^2)$, exercise 4.2 gave the best prediction
# $\mathbb{E}[\epsilon \mid x_t]$. Show that the smallest possible value of the
# regression loss at step $t$ is
#
# $$
# \mathbb{E}\big[(\epsilon - \mathbb{E}[\epsilon \mid x_t])^2\big]
# = \frac{\bar\alpha_t \sigma^2}{\bar\alpha_t \sigma^2 + 1 - \bar\alpha_t},
# $$
#
# and check it with $\sigma = 0.5$ at $t = 10, 100, 500, 1000$, using the exact
# denoiser `GaussianMixtureOracle`. At which end of the chain is the noise easy to
# predict?
#
# ```{admonition} Solution
# :class: dropdown
#
# For jointly Gaussian variables, the error of the conditional mean has variance
# $\mathrm{Var}(\epsilon) - \mathrm{Cov}(\epsilon, x_t)^2 / \mathrm{Var}(x_t) =
# 1 - (1 - \bar\alpha_t) / (\bar\alpha_t \sigma^2 + 1 - \bar\alpha_t)$, which is the
# claim. At small $t$ it is close to $1$: $x_t$ is almost all data, and the tiny noise
# in it cannot be told apart from the data. At large $t$ it is close to $0$: $x_t$ is
# almost all noise, so the noise is almost $x_t$ itself. The noise is easy to predict
# at the *end* of the chain. Chapters 6 and 7 come back to this when they look at the
# loss at each $t$.
# ```

# %% tags=["hide-cell"]
# Exercise 5.3: the smallest possible loss at each t, Gaussian data
sigma_data = 0.5
gaussian = dl.GaussianMixture([1.0], [[0.0]], sigma_data**2)
oracle = dl.GaussianMixtureOracle(schedule, gaussian)
cpu = torch.Generator().manual_seed(seed)
data = gaussian.sample(N, generator=cpu).float()             # (N, 1)
for t in [10, 100, 500, 1000]:
    ab = schedule.alpha_bars[t - 1].item()
    floor = ab * sigma_data**2 / (ab * sigma_data**2 + 1 - ab)
    steps = torch.full((N,), t - 1)
    noise = torch.randn(data.shape, generator=cpu)
    x_t = dl.q_sample(schedule.cpu(), data, steps, noise)
    error = (noise - oracle(x_t, steps)).square()[:, 0]       # (N,)
    print(f"t = {t:4d}: smallest loss {floor:.4f}, "
          f"oracle {error.mean().item():.4f}")
    assert abs(error.mean().item() - floor) < 5 * error.std().item() / N**0.5
