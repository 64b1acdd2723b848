# %% [markdown]
# # How to read and run this book
#
# This book builds a denoising diffusion probabilistic model (DDPM) from its parts.
# Each chapter takes one idea of the paper by Ho, Jain and Abbeel
# {cite:p}`ho2020denoising`, writes it as mathematics, runs it as code, and then *checks* that the code and the
# mathematics agree: a Monte Carlo estimate next to the closed form it should match, an
# `assert` next to the identity it tests. Every page is a Jupyter notebook, and every
# figure and number you see was produced by executing it.
#
# The code comes from `diffusion_lib`, a small PyTorch library that lives in the same
# repository as the book and has a numerical test for each of its formulas. The chapters
# never copy the library's functions; where an implementation is worth reading, the
# chapter prints the library's own source. The few helpers that have nothing to do with
# diffusion (the parameter checks below, a timer, image display, animations) come from
# one module of the library, `diffusion_lib.notebook`, so no chapter carries a copy.
#
# You need some Python, a first contact with PyTorch tensors and autograd, and the
# normal (Gaussian) distribution: its mean, its variance, and the fact that
# $\mathcal{N}(x; \mu, \sigma^2 \mathbf{I})$ means "$x$ is Gaussian with mean $\mu$ and
# covariance $\sigma^2$ times the identity".

# %% COLAB_SETUP
# %%
import torch

import diffusion_lib as dl
from diffusion_lib.notebook import check_device, check_parameter

# %% tags=["parameters"]
seed = 0          # every random draw in the chapter comes from this seed
device = "cpu"    # "cuda" on a GPU runtime

# %% tags=["hide-input"]
check_parameter("seed", seed, int, lambda v: v >= 0, "a non-negative int")
check_device(device)
print(f"parameters ok: seed={seed}, device={device!r}")

# %% [markdown]
# ## Four ways to use the book
#
# **Read it online.** The web version is the executed notebooks. Code cells are shown
# with their outputs; long plotting code is folded (click to unfold it).
#
# **Run it on Colab.** The rocket icon at the top of each chapter opens that chapter's
# notebook in Google Colab. The notebook's first code cell, hidden on the web page,
# installs `diffusion_lib` from the book's repository when it runs on Colab (and does
# nothing anywhere else). The CPU runtime is enough for chapters 1 to 5. For the chapters
# that train a network, choose *Runtime > Change runtime type > GPU*, then set
# `device = "cuda"` in the chapter's parameters cell before running it.
#
# **Run it locally.** Clone the repository and use the two commands of its README:
#
# ```bash
# make book   # create .venv, install, execute every chapter, write _build/html
# make test   # the library's tests, then every chapter run as a test
# ```
#
# Both create a virtual environment in `.venv` with the CPU build of PyTorch and
# `diffusion_lib` installed in editable mode. Open `book/*.ipynb` in any Jupyter
# front end (JupyterLab, VS Code, ...) with the `.venv` Python as kernel.
#
# **Run a chapter with papermill.** [Papermill](https://papermill.readthedocs.io)
# executes a notebook from the command line and lets you override its parameters:
#
# ```bash
# .venv/bin/papermill book/04_closed_form.ipynb out.ipynb \
#     -p num_samples 100000 -p seed 1
# .venv/bin/papermill book/02_forward_process.ipynb out.ipynb \
#     -p device cuda -p dataset mnist
# .venv/bin/papermill book/02_forward_process.ipynb out.ipynb \
#     -f book/params/gpu.yml
# ```
#
# `out.ipynb` is the executed copy, with a cell tagged `injected-parameters` after the
# parameters cell. The file `book/params/gpu.yml` holds settings for a GPU machine
# (a real image dataset, more samples); `book/params/ci.yml` holds the smallest
# settings, which the test suite uses to run every chapter quickly.
#
# ## The parameters cell
#
# Each chapter has exactly one code cell tagged `parameters`, holding plain values with
# the same names in every chapter, so that one parameter file works for the whole book:
#
# | name | type | meaning |
# |---|---|---|
# | `seed` | int | seed of every random generator in the chapter |
# | `device` | str | `"cpu"`, `"cuda"` (or `"cuda:N"`), `"mps"` |
# | `dataset` | str | image dataset: `"digits"` (bundled with scikit-learn, offline), `"mnist"`, `"fashion-mnist"`, `"cifar10"` |
# | `download` | bool | let torchvision download `mnist` / `fashion-mnist` / `cifar10` into a `data` folder of the working directory (needs `pip install "diffusion_lib[vision]"`; Colab has torchvision) |
# | `num_samples` | int | number of random draws behind a figure or a Monte Carlo check |
# | `train_steps`, `batch_size` | int | for the chapters that train a network |
#
# A chapter only has the names it uses. The cell after the parameters checks their
# types and values with `check_parameter` and `check_device`, so that a typo such as
# `-p num_samples ten` stops the chapter at the top with a message instead of failing
# deep inside. The default values run every chapter on a CPU. Most chapters take
# seconds; chapters 6 and 7 train a network while you wait, and say how long their
# training took on the machine that built the page.
#
# ## Notation, and how code indices relate to the mathematics
#
# The mathematics follows {cite:t}`ho2020denoising`:
#
# * $x_0$ is a data point, $x_1, \dots, x_T$ are noisier and noisier versions of it, and
#   $T$ is the number of diffusion steps ($T = 1000$ in the paper);
# * $q$ is the *forward* process that adds noise. It is fixed: it has no parameters to
#   learn, which is why it is written $q$ and not $q_\theta$;
# * $p_\theta$ is the *reverse* process that removes noise, a network with parameters
#   $\theta$;
# * $\beta_t$ is the variance of the noise added at step $t$, $\alpha_t = 1 - \beta_t$,
#   and $\bar\alpha_t = \prod_{s=1}^{t} \alpha_s$;
# * $\mathcal{N}(x; \mu, \sigma^2 \mathbf{I})$ is the Gaussian density of $x$ with mean
#   $\mu$ and covariance $\sigma^2 \mathbf{I}$.
#
# **Timesteps.** In the mathematics, steps are numbered from 1: $\beta_1$ is the first
# step's variance and $x_1$ the first noisy sample. Python arrays are numbered from 0, and
# so is `diffusion_lib`: the *index* `t = 0` means the first step. Hence
#
# | paper (1-indexed) | `diffusion_lib` (0-indexed) |
# |---|---|
# | $\beta_t$ | `schedule.betas[t - 1]` |
# | $\alpha_t$ | `schedule.alphas[t - 1]` |
# | $\bar\alpha_t$ | `schedule.alpha_bars[t - 1]` |
# | $x_t \sim q(x_t \mid x_0)$ | `dl.q_sample(schedule, x0, t - 1)` |
# | $x_1$ and $x_T$ | index `0` and index `T - 1` |
# | a network $\epsilon_\theta(x_t, t)$ | `model(x_t, t - 1)` |
#
# **In this book's code a variable named `t` always holds the paper's $t$**, from 1 to
# $T$, and the library is called with `t - 1`. Trajectories are the one place where the
# two agree: `q_sample_chain(..., return_trajectory=True)` returns the path
# $x_0, x_1, \dots, x_T$, so entry `t` of it is $x_t$.
#
# The cell below checks the convention on the DDPM schedule: its first variance is
# $\beta_1 = 10^{-4}$, its last $\beta_T = 0.02$, and one step of the forward process
# from $x_0$ gives a variance of exactly $\beta_1$.

# %% tags=["nbval-check-output"]
# beta_1..beta_T with T = 1000, in double precision for exact comparisons
schedule = dl.NoiseSchedule.linear(dtype=torch.float64)
T = schedule.num_timesteps
generator = torch.Generator().manual_seed(seed)
x0 = torch.randn(4, 2, generator=generator, dtype=torch.float64)

t = 1                                    # the paper's first step
mean, variance = dl.q_mean_variance(schedule, x0, t - 1)
beta_1, beta_T = schedule.betas[t - 1], schedule.betas[T - 1]
checks = {
    "beta_1 = betas[0] = 1e-4": abs(beta_1.item() - 1e-4) < 1e-12,
    "beta_T = betas[T - 1] = 0.02": abs(beta_T.item() - 0.02) < 1e-12,
    "Var[x_1 | x_0] = beta_1": torch.allclose(variance, beta_1.expand(4, 1)),
}
print("T =", T)
for name, ok in checks.items():
    print(f"{name}: {ok}")
assert all(checks.values())

# %% [markdown]
# ## Check your installation
#
# The versions below are the ones this page was built with.

# %%
print("diffusion_lib", dl.__version__)
print("torch", torch.__version__.split("+")[0])
print("CUDA GPU available:", torch.cuda.is_available())
print(f"device {device!r} works:",
      torch.ones(2, device=device).sum().item() == 2)

# %% [markdown]
# ## How the book is tested
#
# The book is part of the project's test suite. `make test` runs the library's unit
# tests, then every chapter twice: once cell by cell with
# [nbval](https://nbval.readthedocs.io), which also compares the printed checks of the
# cells tagged `nbval-check-output` with the values stored in the notebook, and once with
# papermill and the small settings of `book/params/ci.yml`. `make book` executes every
# chapter again and fails on any warning. A chapter whose assertion breaks therefore
# breaks the build: the numbers in the book are the numbers the code produces.
#
# ## Where we are going
#
# * **Chapter 1** shows the whole idea in one picture: data turned into noise, and
#   noise turned back into data.
# * **Chapters 2 to 5** study the first half, the forward process: one noising step
#   and its schedule, the chain of steps, the shortcut that jumps to any step at once,
#   and the reparameterization trick that makes the noise an explicit variable.
# * **Chapter 6** builds the reverse process: the posterior of one step, the
#   variational bound derived and checked term by term, why the network predicts the
#   noise, and a first model trained on points of the plane.
# * **Chapter 7** trains a U-Net on images and measures it (bits per dimension, a
#   Frechet distance), then samples real 28x28 digits from an MNIST model trained
#   for longer and shipped with the book (`book/models/`).
# * **Chapter 8** samples in fewer steps (DDIM) and reads the network as a score.
# * **Chapter 9** conditions the model on a class and steers it with guidance.
# * **Chapter 10** is a clinic of failures (bad samples, loss, EMA, sampler steps,
#   memorisation), each measured and fixed, and a health check for a run folder.
# * **The appendices** map every equation to the code and test that implement it,
#   and report the library's speed on real hardware.
#
# The chapters end with exercises: derivations to work out on paper and code to
# change and predict. Each solution is folded under the exercise (click to open it),
# and its code runs with the chapter in the book's tests.
