# %% [markdown]
# # Diffusion: from data to noise and back
#
# A generative model is a machine that produces new samples resembling its training
# data: new handwritten digits, new faces, new molecules. Drawing a sample from a
# standard Gaussian distribution is trivial; drawing one from "the distribution of
# handwritten digits" is the whole problem, because nobody can write that distribution
# down.
#
# Diffusion models connect the two through a long sequence of small, simple steps.
# Going one way, from data to noise, is easy: take a data point and add a little
# Gaussian noise, then a little more, again and again. After enough steps nothing of the
# data is left, and what remains is indistinguishable from a draw of pure Gaussian
# noise. Going the other way, from noise to data, is what we want to learn: start from a
# Gaussian draw, remove a little noise, then a little more, until a clean sample appears.
#
# This chapter shows both directions at work, on points of the plane and on small images
# of digits, before the following chapters take them apart one equation at a time.

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
    show_image,
)

# %% tags=["parameters"]
seed = 0            # every random draw in the chapter comes from this seed
device = "cpu"      # "cuda" on a GPU runtime
num_samples = 1000  # points of the plane in each figure

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
check_parameter("num_samples", num_samples, int, lambda v: v >= 100,
                "an int >= 100")
print(f"parameters ok: {seed=}, {device=}, {num_samples=}")

# %% [markdown]
# ## Two processes
#
# Call a data point $x_0$. The **forward process** produces a sequence
# $x_1, x_2, \dots, x_T$ in which each $x_t$ is a slightly noisier copy of $x_{t-1}$:
#
# $$
# x_0 \;\xrightarrow{\;q\;}\; x_1 \;\xrightarrow{\;q\;}\; x_2 \;\longrightarrow\; \cdots
# \;\longrightarrow\; x_{T-1} \;\xrightarrow{\;q\;}\; x_T \approx \mathcal{N}(0, \mathbf{I}).
# $$
#
# Each arrow is a Gaussian step $q(x_t \mid x_{t-1})$ whose size is set by a fixed
# variance schedule (chapter 2). Nothing in it is learned, which is why it is written
# $q$ without parameters. After $T = 1000$ steps the data has been washed out almost
# completely.
#
# The **reverse process** runs the arrows backwards: it starts from Gaussian noise
# $x_T \sim \mathcal{N}(0, \mathbf{I})$ and draws $x_{T-1}, x_{T-2}, \dots$ down to
# $x_0$ with steps $p_\theta(x_{t-1} \mid x_t)$ given by a network with parameters
# $\theta$. Why should such a reverse step be easy to model?
# {cite:t}`sohl2015deep` built diffusion models on an old observation about diffusion
# processes: when every forward step adds only a *small* amount of Gaussian noise, the
# reverse of that step is also, very nearly, a Gaussian. The reverse process can then
# use the same functional form as the forward one, a Gaussian step, and the network
# only has to supply its mean. {cite:t}`ho2020denoising` showed that this idea,
# with the right parameterization, produces images of high quality.
#
# ## From data to noise
#
# Our first data set is a mixture of eight Gaussian blobs arranged on a circle,
# standardized to zero mean and unit variance per coordinate. `q_sample_chain` runs the
# forward process one step after another and, with `return_trajectory=True`, keeps every
# intermediate state: entry `t` of the path is $x_t$.

# %%
# the variance schedule beta_1..beta_T, T = 1000 (chapter 2)
schedule = dl.NoiseSchedule.linear().to(device)
T = schedule.num_timesteps
generator = torch.Generator(device=device).manual_seed(seed)

# eight blobs on a circle, standardized
points = dl.load_dataset("8gaussians", device=device)
x0 = points.get_batch(0, num_samples, seed=seed)        # (N, 2)
forward_path = dl.q_sample_chain(schedule, x0, generator=generator,
                                 return_trajectory=True)
print("path shape:", tuple(forward_path.shape))         # (T + 1, N, 2)

# %% [markdown]
# At the end of the chain the points should be indistinguishable from standard Gaussian
# draws: mean $0$ and variance $1$ in each coordinate. With $N$ samples, a sample mean
# has a standard error of $1/\sqrt{N}$ and a sample variance one of $\sqrt{2/(N-1)}$;
# we accept a deviation of up to five standard errors.

# %% tags=["nbval-check-output"]
x_T = forward_path[T]
N = x_T.shape[0]
mean_ok = (x_T.mean(0).abs() < 5 / N**0.5).all().item()
var_ok = ((x_T.var(0) - 1).abs() < 5 * (2 / (N - 1)) ** 0.5).all().item()
print("x_T has mean 0 within 5 standard errors:", mean_ok)
print("x_T has variance 1 within 5 standard errors:", var_ok)
assert mean_ok and var_ok

# %% [markdown]
# ## From noise to data
#
# To draw the reverse direction we need $p_\theta$, normally a trained network
# (chapters 6 and 7). For data that is a mixture of Gaussians, however, the best
# possible denoiser can be computed exactly, and `diffusion_lib` provides it as
# `GaussianMixtureOracle`: given a noisy $x_t$ it returns the expected noise, which is
# what a perfectly trained network would return. We use it here as a stand-in for the
# network, and `p_sample_loop` (the sampling procedure of Ho et al., Algorithm 2) runs
# the reverse chain from fresh Gaussian noise. Its trajectory runs backwards in time:
# entry `k` is $x_{T-k}$.

# %%
# the exact denoiser of the eight blobs, in place of a trained network
oracle = dl.GaussianMixtureOracle(schedule, points.training_mixture)
reverse_path = dl.p_sample_loop(schedule, oracle, (num_samples, 2),
                                generator=generator, return_trajectory=True,
                                progress=False)         # entry k is x_{T-k}
samples = reverse_path[T]                               # x_0, (N, 2)
print("path shape:", tuple(reverse_path.shape))

# %% [markdown]
# If the reverse process works, its final samples follow the data distribution. Two
# checks: each of the eight blobs should receive about an eighth of the samples, and the
# average log-density of the samples under the true mixture should equal that of real
# data points (within five standard errors of the difference).

# %% tags=["nbval-check-output"]
mixture = points.training_mixture
blob = torch.cdist(samples.cpu().double(), mixture.means).argmin(1)  # (N,)
share = torch.bincount(blob, minlength=8) / N
share_se = (1 / 8 * 7 / 8 / N) ** 0.5
share_ok = ((share - 1 / 8).abs() < 5 * share_se).all().item()

logp_data = mixture.log_prob(x0.cpu())                  # (N,)
logp_samples = mixture.log_prob(samples.cpu())          # (N,)
logp_se = ((logp_data.var() + logp_samples.var()) / N).sqrt()
gap = (logp_samples.mean() - logp_data.mean()).abs()
logp_ok = (gap < 5 * logp_se).item()
print("every blob gets 1/8 of the samples within 5 standard errors:",
      share_ok)
print("same mean log-density as the data within 5 standard errors:",
      logp_ok)
assert share_ok and logp_ok

# %% [markdown]
# Here is the whole story in one figure, the computational version of the diagram above:
# the top row follows the forward process from data to noise, the bottom row the reverse
# process from noise to data, at the same timesteps.

# %% tags=["hide-input"] mystnb={"image": {"alt": "Two rows of scatter plots at t = 0 to 1000: on top eight blobs dissolve into a round Gaussian cloud; below the reverse process turns a cloud back into eight blobs"}}
shown = [0, 100, 250, 400, 550, 700, T]
fig, axes = plt.subplots(2, len(shown), figsize=(8, 2.8))
for col, t in enumerate(shown):
    rows = [(forward_path[t], "tab:blue"), (reverse_path[T - t], "tab:orange")]
    for row, (x, color) in enumerate(rows):
        ax = axes[row, col]
        x = x.cpu()
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5, color=color)
        ax.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), aspect="equal",
               xticks=[], yticks=[])
        ax.set_title(f"$x_{{{t}}}$", fontsize=9)
axes[0, 0].set_ylabel("forward $q$", fontsize=9)
axes[1, 0].set_ylabel("reverse $p$", fontsize=9)
fig.suptitle("Top: data to noise (read left to right). "
             "Bottom: noise to data (read right to left).", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the bottom row from right to left. The reverse process starts from a shapeless
# Gaussian cloud; for a long time not much seems to happen, then the cloud splits into
# eight groups that tighten into the blobs. The animation below plays it (press play):
# structure appears late, in the last few hundred steps, when the noise level has
# become small. (`animation_html`, from the book's helper module
# `diffusion_lib.notebook`, renders the frames into a player that runs in the page.)

# %% tags=["hide-input"]
frames = [T, 900, 800, 700, 600, 500, 450, 400, 350, 300, 250, 200, 150,
          100, 60, 30, 10, 0]
shown_points = reverse_path[:, :500].cpu()   # 500 points keep the frames small
# 3 inches at 100 dpi: 300 pixels, a title in 15-pixel letters
fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
dots = ax.scatter(*shown_points[0].T, s=2, color="tab:orange")
ax.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), aspect="equal",
       xticks=[], yticks=[])
title = ax.set_title(f"reverse process, $x_{{{T}}}$", fontsize=11)
fig.tight_layout()


def draw(t):
    dots.set_offsets(shown_points[T - t].numpy())
    title.set_text(f"reverse process, $x_{{{t}}}$")


display(animation_html(
    fig, draw, frames, interval=250,
    caption="The reverse process in motion: a cloud of Gaussian noise at "
            "t = 1000 gathers into the eight blobs by t = 0. Press play, or "
            "step through the frames."))

# %% [markdown]
# ## The same on images
#
# An image is just a point in a space with one dimension per pixel, and nothing above
# depended on the data being two-dimensional. Below, the 8×8 handwritten digits of
# scikit-learn, with pixel values scaled to $[-1, 1]$. The forward process turns a digit
# into noise.
#
# For the reverse direction we again need an exact denoiser, so we pretend the data set
# consists of exactly ten images, the first digit of each class, each blurred by a tiny
# Gaussian (standard deviation $0.05$). That is a Gaussian mixture with ten components
# in 64 dimensions, and `GaussianMixtureOracle` handles it like the blobs above. The
# reverse process can then only end on one of those ten digits, but it has to *find*
# one, starting from pure noise.

# %%
digits = dl.load_dataset("digits", device=device)    # 8x8 images in [-1, 1]
ten = digits.all_data()[:10]                 # (10, 1, 8, 8): the digits 0..9
three = ten[3:4]                             # (1, 1, 8, 8)
digit_path = dl.q_sample_chain(schedule, three, generator=generator,
                               return_trajectory=True)   # entry t is x_t

# ten components in 64 dimensions, each of variance 0.05^2 per pixel
ten_digits = dl.GaussianMixture(torch.ones(10), ten.reshape(10, -1).cpu(),
                                0.05**2)
digit_oracle = dl.GaussianMixtureOracle(schedule, ten_digits)
num_images = 8
image_path = dl.p_sample_loop(schedule, digit_oracle, (num_images, 1, 8, 8),
                              generator=generator, return_trajectory=True,
                              progress=False)    # entry k is x_{T-k}

# %% [markdown]
# Each final sample should sit at a distance of about $0.05 \sqrt{64} = 0.4$ from one of
# the ten digits (the blur we put around each), while the digits themselves are far
# apart from each other.

# %% tags=["nbval-check-output"]
flat_ten = ten.reshape(10, -1).cpu()                         # (10, 64)
final = image_path[T].reshape(num_images, -1).cpu()          # (8, 64)
distances = torch.cdist(final, flat_ten)                     # (8, 10)
closest = distances.min(1).values
between = torch.cdist(flat_ten, flat_ten) + 1e9 * torch.eye(10)
print("the ten digits are more than 3 apart:", between.min().item() > 3)
print("every sample lies within 1 of a digit:", (closest < 1).all().item())
assert between.min() > 3 and (closest < 1).all()

# %% tags=["hide-input"] mystnb={"image": {"alt": "Top: an 8x8 digit turning into pixel noise, and noise turning into a digit in reverse. Bottom: eight final samples, each labelled with the digit it is nearest to"}}
# show_image draws an image of the training space [-1, 1] as 8-bit pixels
fig, axes = plt.subplots(2, len(shown), figsize=(7, 2.3))
for col, t in enumerate(shown):
    show_image(axes[0, col], digit_path[t, 0], f"$x_{{{t}}}$")
    show_image(axes[1, col], image_path[T - t, 0])
axes[0, 0].set_ylabel("forward", fontsize=9)
axes[1, 0].set_ylabel("reverse", fontsize=9)
fig.tight_layout()
plt.show()

fig, axes = plt.subplots(1, num_images, figsize=(7, 1.4))
for i, ax in enumerate(axes):
    show_image(ax, image_path[T, i], f"near {distances[i].argmin().item()}")
fig.suptitle("Final samples of eight reverse chains, and the digit each "
             "one found", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What comes next
#
# The ten-digit mixture is a toy: a real data set has thousands of images, and nobody
# can compute its exact denoiser. The rest of the book builds what replaces it. Chapters
# 2 to 5 study the forward process $q$: the single noising step and its variance
# schedule, the Markov chain those steps form, the closed form that jumps from $x_0$ to
# any $x_t$ in one move, and the reparameterization trick that makes the noise an
# explicit variable a network can learn to predict. Chapter 6 derives the reverse
# process, chapter 7 trains a network on images to play the role of the oracle,
# chapter 8 samples in fewer steps, and chapter 9 steers the samples towards a class.
#
# ## Exercises
#
# Each solution is folded under its exercise: try first, then click to open it.
#
# **Exercise 1.1** (predict, then run). The reverse process can only reproduce what
# its denoiser knows about the data. Build a mixture of the same eight blobs in which
# the first blob carries half of the probability and the other seven share the other
# half, and run the reverse process with the exact denoiser of that mixture. What share
# of the samples do you expect on the first blob? Run it and compare.
#
# ```{admonition} Solution
# :class: dropdown
#
# About one half. The oracle is the exact denoiser of the new mixture, so the reverse
# process samples the new mixture, weights included: nothing in the sampler knows or
# cares that the blobs used to be equally likely. The cell below counts the samples
# nearest to the first blob; with $n$ samples that share has a standard error of
# $\sqrt{0.25 / n}$.
# ```

# %% tags=["hide-cell"]
# Exercise 1.1: the first blob holds half of the mass
weights = torch.full((8,), 0.5 / 7)
weights[0] = 0.5
heavy = dl.GaussianMixture(weights, mixture.means, mixture.covariances)
n = min(num_samples, 300)
x = dl.p_sample_loop(schedule, dl.GaussianMixtureOracle(schedule, heavy),
                     (n, 2), generator=generator, progress=False)
nearest = torch.cdist(x.cpu().double(), heavy.means).argmin(1)    # (n,)
share = (nearest == 0).double().mean().item()
print(f"share of the samples on the heavy blob: {share:.2f}")
assert abs(share - 0.5) < 5 * (0.25 / n) ** 0.5

# %% [markdown]
# **Exercise 1.2** (show that). Run the forward process twice, from two different
# points $x_0$ and $x_0'$, with the *same* noise draws $\epsilon_1, \epsilon_2, \dots$
# Each step is $x_t = \sqrt{1-\beta_t}\, x_{t-1} + \sqrt{\beta_t}\, \epsilon_t$. Show
# that $x_t - x_t' = \sqrt{\bar\alpha_t}\,(x_0 - x_0')$ with
# $\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)$. What does this say about how much
# the end of the chain remembers of its start? Check it with `q_sample_chain`.
#
# ```{admonition} Solution
# :class: dropdown
#
# Subtract the two steps: the noise term is the same in both and cancels, so
# $x_t - x_t' = \sqrt{1-\beta_t}\,(x_{t-1} - x_{t-1}')$. Apply this $t$ times, down to
# $x_0 - x_0'$: the factors multiply to $\sqrt{\prod_{s \le t}(1-\beta_s)} =
# \sqrt{\bar\alpha_t}$. Every step shrinks the difference between two starting points,
# whatever they are, and for the linear schedule $\sqrt{\bar\alpha_T} \approx 0.006$:
# two points 4 apart end about 0.025 apart, a tiny fraction of the unit noise. The end
# of the chain has forgotten its start. (Chapter 2 explains the factor
# $\sqrt{1-\beta_t}$, chapter 4 the product $\bar\alpha_t$.) The cell runs the two
# chains from generators with the same seed, so they draw the same noise.
# ```

# %% tags=["hide-cell"]
# Exercise 1.2: two starting points, the same noise
start, other = torch.tensor([[2.0, 0.0]]), torch.tensor([[-2.0, 0.0]])
paths = [dl.q_sample_chain(schedule.cpu(), x,
                           generator=torch.Generator().manual_seed(seed),
                           return_trajectory=True) for x in (start, other)]
gap = (paths[0] - paths[1])[:, 0]                      # (T + 1, 2)
shrink = torch.cat([torch.ones(1), schedule.sqrt_alpha_bars.cpu()])
theory = shrink[:, None] * (start - other)             # (T + 1, 2)
print(f"gap at t = T: {gap[T, 0].item():.4f} "
      f"(theory {theory[T, 0].item():.4f})")
assert torch.allclose(gap, theory, atol=1e-4)
assert abs(gap[T, 0].item() - 0.025) < 0.001

# %% [markdown]
# **Exercise 1.3** (predict, then run). The reverse step is close to a Gaussian only
# when every forward step is small. Test it: take a schedule of only $T = 10$ steps,
# $\beta_t$ rising linearly from $0.1$ to $0.9$ (`dl.NoiseSchedule.linear(10, 0.1,
# 0.9)`; $x_{10}$ is again almost pure noise), and sample with the exact denoiser of
# the blobs for that schedule. The denoiser is still perfect: do you expect the samples
# to land on the blobs? Count the share of samples within three standard deviations of
# a blob's centre; for real data it is $1 - e^{-9/2} \approx 98.9\%$.
#
# ```{admonition} Solution
# :class: dropdown
#
# No. The exact denoiser gives each reverse step the right *mean*, but the step is
# still drawn from a Gaussian around that mean. After a big forward step, the point
# $x_{t-1}$ that led to $x_t$ could have come from several blobs, so the true reverse
# step has several separate bumps, and one Gaussian around their average puts its mass
# between them. About a quarter of the samples miss the blobs with ten steps; the
# thousand small steps of the chapter put almost all of them on a blob.
# ```

# %% tags=["hide-cell"]
# Exercise 1.3: ten big steps instead of a thousand small ones
coarse = dl.NoiseSchedule.linear(10, 0.1, 0.9)
x = dl.p_sample_loop(coarse, dl.GaussianMixtureOracle(coarse, mixture),
                     (num_samples, 2), progress=False,
                     generator=torch.Generator().manual_seed(seed))
blob_std = mixture.covariances[0, 0, 0].sqrt()


def on_a_blob(points):
    """The share of points within 3 standard deviations of a centre."""
    distance = torch.cdist(points.cpu().double(), mixture.means).min(1).values
    return (distance < 3 * blob_std).double().mean().item()


print(f"on a blob: {on_a_blob(x):.1%} with 10 steps, "
      f"{on_a_blob(samples):.1%} with {T}")
assert on_a_blob(x) < 0.9 and on_a_blob(samples) > 0.97
