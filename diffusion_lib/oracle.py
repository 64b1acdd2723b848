"""Exact answers for Gaussian-mixture data: the optimal denoiser in closed form.

If x_0 ~ sum_k pi_k N(mu_k, Sigma_k), then x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps
(Ho et al. 2020, Eq. 4) is again a mixture,

    x_t ~ sum_k pi_k N(a mu_k, C_k),   a = sqrt(ab_t),  s^2 = 1 - ab_t,  C_k = a^2 Sigma_k + s^2 I,

and the minimiser of L_simple (Eq. 14) is the posterior mean of the noise,

    E[eps | x_t] = sum_k r_k(x_t) s C_k^{-1} (x_t - a mu_k) = -s grad log p_t(x_t),

with r_k the posterior responsibility of component k. This is the "oracle"
denoiser the tests and chapter 6 compare learned networks against; the identity
with the score (Song et al. 2021, "Score-based generative modeling through SDEs")
is the score view of chapter 8. All computation is float64.

Labelled by its components, the mixture also has exact *class-conditional* answers
(chapter 9). Given the label y = k, x_0 ~ N(mu_k, Sigma_k), so the conditional
denoiser is component k's own, E[eps | x_t, y = k] = s C_k^{-1} (x_t - a mu_k)
(:class:`ConditionalGaussianMixtureOracle`). Classifier-free guidance with weight w
(Ho & Salimans 2022, Eq. 6) combines it with the unconditional one,

    eps_w = (1 + w) eps(x_t, k) - w eps(x_t)
          = s sum_j [(1 + w) delta_jk - w r_j(x_t)] C_j^{-1} (x_t - a mu_j)
          = -s grad [log p_t(x_t | k) + w log p_t(k | x_t)],

in closed form here (:class:`GuidedGaussianMixtureOracle`): the score of
p_t(x | k) p_t(k | x)^w, the class's density tilted towards where the class is sure.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .reverse import PredictionType, check_prediction_type, predict_v
from .schedules import NoiseSchedule, check_timesteps

__all__ = ["GaussianMixture", "GaussianMixtureOracle", "ConditionalGaussianMixtureOracle",
           "GuidedGaussianMixtureOracle"]


class GaussianMixture:
    """A mixture of K Gaussians in D dimensions with full covariances.

    Args:
        weights: (K,) positive, normalised to sum to 1.
        means: (K, D).
        covariances: (K, D, D) symmetric positive definite; (K,) or a float for
            isotropic components sigma_k^2 I; (K, D) for diagonal ones.
    """

    def __init__(self, weights, means, covariances):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or not (weights > 0).all():
            raise ValueError(f"weights must be {K} positive numbers, got {weights.tolist()}")
        cov = torch.as_tensor(covariances, dtype=torch.float64)
        if cov.ndim == 0:
            cov = cov.expand(K)
        if cov.ndim == 1:
            cov = cov.reshape(K, 1, 1) * torch.eye(D, dtype=torch.float64)
        elif cov.ndim == 2:
            cov = torch.diag_embed(cov)
        if cov.shape != (K, D, D):
            raise ValueError(f"covariances must have shape (K, D, D) = ({K}, {D}, {D}), "
                             f"got {tuple(cov.shape)}")
        try:
            torch.linalg.cholesky(cov)
        except RuntimeError:
            raise ValueError("every covariance must be symmetric positive definite") from None
        self.weights = weights / weights.sum()   # (K,)
        self.means = means                       # (K, D)
        self.covariances = cov                   # (K, D, D)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def mean(self) -> Tensor:
        """E[x], shape (D,)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Cov[x] by the law of total covariance, shape (D, D)."""
        m = self.mean()
        d = self.means - m                                          # (K, D)
        within = (self.weights[:, None, None] * self.covariances).sum(0)
        between = (self.weights[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0)
        return within + between

    def sample(self, n: int, generator: torch.Generator | None = None,
               return_components: bool = False):
        """n draws, shape (n, D) float64 (and the component of each, (n,), if asked)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        L = torch.linalg.cholesky(self.covariances)                                     # (K, D, D)
        x = self.means[k] + (L[k] @ z.unsqueeze(-1)).squeeze(-1)
        return (x, k) if return_components else x

    def component(self, k: int) -> "GaussianMixture":
        """Component k alone, N(mu_k, Sigma_k), as a one-component mixture."""
        return GaussianMixture([1.0], self.means[k:k + 1], self.covariances[k:k + 1])

    def standardized(self, mean, std) -> "GaussianMixture":
        """The law of (x - mean) / std, per dimension (mean, std of shape (D,)): the mixture
        in a points dataset's training space, x0 = (x - mean) / std."""
        mean = torch.as_tensor(mean, dtype=torch.float64)
        scale = 1 / torch.as_tensor(std, dtype=torch.float64)                  # (D,)
        return GaussianMixture(self.weights, (self.means - mean) * scale,
                               self.covariances * scale[:, None] * scale[None, :])

    def noised(self, scale: Tensor, noise_var: Tensor) -> "GaussianMixture":
        """The law of scale * x + sqrt(noise_var) * eps for scalars: the mixture of x_t."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, scale * self.means,
                               scale ** 2 * self.covariances + noise_var * eye)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) for x of shape (N, D); returns (N,) float64."""
        return torch.logsumexp(self._component_log_probs(x.to(torch.float64)), dim=1)

    def _component_log_probs(self, x: Tensor, precisions: Tensor | None = None) -> Tensor:
        """log pi_k + log N(x; mu_k, Sigma_k), shape (N, K)."""
        prec = torch.linalg.inv(self.covariances) if precisions is None else precisions  # (K, D, D)
        diff = x[:, None, :] - self.means[None]                              # (N, K, D)
        maha = torch.einsum("nkd,kde,nke->nk", diff, prec, diff)             # (N, K)
        logdet = torch.linalg.slogdet(self.covariances)[1]                   # (K,)
        return self.weights.log() - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))

    def posterior(self, x: Tensor) -> Tensor:
        """p(k | x), the responsibility r_k(x) of each component, shape (N, K) float64.

        Its argmax is the Bayes classifier of the labelled mixture: the fewest mistakes any
        classifier can make (chapter 9 measures samples with it).
        """
        return torch.softmax(self._component_log_probs(x.to(torch.float64)), dim=1)

    def score(self, x: Tensor) -> Tensor:
        """grad_x log p(x) = -sum_k r_k(x) Sigma_k^{-1} (x - mu_k), shape (N, D)."""
        x = x.to(torch.float64)
        prec = torch.linalg.inv(self.covariances)                            # (K, D, D)
        r = torch.softmax(self._component_log_probs(x, prec), dim=1)         # (N, K)
        diff = x[:, None, :] - self.means[None]                              # (N, K, D)
        prec_diff = torch.einsum("kde,nke->nkd", prec, diff)                 # (N, K, D)
        return -(r.unsqueeze(-1) * prec_diff).sum(1)


class GaussianMixtureOracle(nn.Module):
    """The exact minimiser of L_simple for mixture data, usable as ``model(x_t, t)``.

    Called like a trained network, it returns E[eps | x_t] (or the matching x_0 or v
    prediction), so the samplers and the variational bound can run on it. Data of
    any shape (B, ...) is flattened to (B, D) with D = the mixture's dimension.
    t is 0-indexed, as everywhere in the library.
    """

    def __init__(self, schedule: NoiseSchedule, mixture: GaussianMixture,
                 prediction_type: PredictionType = "epsilon"):
        super().__init__()
        check_prediction_type(prediction_type)
        self.schedule = schedule
        self.mixture = mixture
        self.prediction_type = prediction_type

    def score(self, x_t: Tensor, t: Tensor) -> Tensor:
        """grad log p_t(x_t) of the noised data, x_t's shape and dtype."""
        check_timesteps(t, x_t, self.schedule.num_timesteps)
        flat = x_t.reshape(x_t.shape[0], -1).to(torch.float64)               # (B, D)
        if flat.shape[1] != self.mixture.dim:
            raise ValueError(f"x_t has {flat.shape[1]} values per example, the mixture "
                             f"{self.mixture.dim}")
        # The mixture's tensors live on the CPU; so does this computation.
        ab = self.schedule.alpha_bars.to(torch.float64).cpu()[t.cpu()]       # (B,)
        if len(ab) and bool((ab == ab[0]).all()):   # the samplers' case: one timestep
            law = self.mixture.noised(ab[0].sqrt(), 1 - ab[0])
            out = law.score(flat.cpu())
        else:                  # one mixture per distinct timestep
            values = torch.unique(ab)
            out = torch.empty(flat.shape, dtype=torch.float64)
            for value in values:
                rows = ab == value
                out[rows] = self.mixture.noised(value.sqrt(), 1 - value).score(flat.cpu()[rows])
        return out.to(x_t.device).reshape(x_t.shape).to(x_t.dtype)

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        """E[eps | x_t] = -sqrt(1 - alpha_bar_t) grad log p_t(x_t)."""
        s = self.schedule.sqrt_one_minus_alpha_bars[t].to(x_t.dtype)
        return -s.reshape(-1, *([1] * (x_t.ndim - 1))) * self.score(x_t, t)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        eps = self.eps(x_t, t)
        if self.prediction_type == "epsilon":
            return eps
        a = self.schedule.sqrt_alpha_bars[t].to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        s = self.schedule.sqrt_one_minus_alpha_bars[t].to(x_t.dtype).reshape(a.shape)
        x0 = (x_t - s * eps) / a                 # E[x_0 | x_t], Tweedie's formula
        if self.prediction_type == "x0":
            return x0
        return predict_v(self.schedule, x0, t, eps)


def _check_labels(y: Tensor | None, x_t: Tensor, num_classes: int) -> Tensor:
    """y as a CPU int64 (B,) tensor in 0..K (K = "no class"; None: all K), else ValueError."""
    B = x_t.shape[0]
    if y is None:
        return torch.full((B,), num_classes, dtype=torch.long)
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"y must be an integer tensor of labels, got {y!r}")
    if y.shape != (B,):
        raise ValueError(f"y must have shape (B,) = ({B},), got {tuple(y.shape)}")
    y = y.cpu().long()
    if B and (y.min() < 0 or y.max() > num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes} ({num_classes}: no class), got "
                         f"values from {int(y.min())} to {int(y.max())}")
    return y


class ConditionalGaussianMixtureOracle(nn.Module):
    """The exact class-conditional denoiser of a labelled Gaussian mixture, usable as a
    conditional network ``model(x_t, t, y)`` (chapter 9).

    The label of a sample is its component: y = k in 0..K-1 gives component k's exact
    denoiser (its data is N(mu_k, Sigma_k)), y = K ("no class", or y = None) the whole
    mixture's, :class:`GaussianMixtureOracle`. What a conditional network trained with
    label dropout should learn, for both its branches.
    """

    def __init__(self, schedule: NoiseSchedule, mixture: GaussianMixture,
                 prediction_type: PredictionType = "epsilon"):
        super().__init__()
        check_prediction_type(prediction_type)
        self.schedule = schedule
        self.mixture = mixture
        self.prediction_type = prediction_type
        self.num_classes = mixture.num_components            # label K: "no class"
        self._oracles = [GaussianMixtureOracle(schedule, mixture.component(k), prediction_type)
                         for k in range(self.num_classes)]
        self._oracles.append(GaussianMixtureOracle(schedule, mixture, prediction_type))

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The prediction for x_t (B, ...) at t (B,) given labels y (B,) in 0..K."""
        y = _check_labels(y, x_t, self.num_classes)
        if len(y) and bool((y == y[0]).all()):               # one label: no gather / scatter
            return self._oracles[int(y[0])](x_t, t)
        out = torch.empty_like(x_t)
        present = torch.bincount(y, minlength=self.num_classes + 1).nonzero()[:, 0]
        for label in present.tolist():
            rows = (y == label).to(x_t.device)
            out[rows] = self._oracles[label](x_t[rows], t[rows])
        return out


class GuidedGaussianMixtureOracle(nn.Module):
    """The exact classifier-free-guided prediction for class ``label`` of a labelled
    Gaussian mixture, in closed form, usable as ``model(x_t, t)`` (chapter 9).

    eps_w(x_t) = s sum_j [(1 + w) delta_jk - w r_j(x_t)] C_j^{-1} (x_t - a mu_j), with
    a = sqrt(alpha_bar_t), s^2 = 1 - alpha_bar_t, C_j = a^2 Sigma_j + s^2 I and r_j the
    responsibilities under the noised mixture (see the module docstring): the score of
    p_t(x | k) p_t(k | x)^w times -s. w = 0 is component k's exact denoiser.

    Args:
        label: k, the class in 0..K-1; an int, or a (B,) tensor matching every batch.
        guidance_scale: w >= 0 (Ho & Salimans 2022, Eq. 6).
    """

    def __init__(self, schedule: NoiseSchedule, mixture: GaussianMixture, label,
                 guidance_scale: float, prediction_type: PredictionType = "epsilon"):
        super().__init__()
        check_prediction_type(prediction_type)
        w = float(guidance_scale)
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        self.schedule = schedule
        self.mixture = mixture
        self.label = label
        self.guidance_scale = w
        self.prediction_type = prediction_type

    def score(self, x_t: Tensor, t: Tensor) -> Tensor:
        """grad log p_t(x | k) + w grad log p_t(k | x) at x_t, x_t's shape and dtype."""
        check_timesteps(t, x_t, self.schedule.num_timesteps)
        K = self.mixture.num_components
        label = self.label if isinstance(self.label, Tensor) else torch.tensor(self.label)
        y = _check_labels(label.reshape(-1).expand(x_t.shape[0]), x_t, K)
        if bool((y == K).any()):
            raise ValueError(f"label must be a class 0..{K - 1}, not {K} (no class)")
        flat = x_t.reshape(x_t.shape[0], -1).to(torch.float64).cpu()          # (B, D)
        if flat.shape[1] != self.mixture.dim:
            raise ValueError(f"x_t has {flat.shape[1]} values per example, the mixture "
                             f"{self.mixture.dim}")
        ab = self.schedule.alpha_bars.to(torch.float64).cpu()[t.cpu()]        # (B,)
        out = torch.empty_like(flat)
        w = self.guidance_scale
        for value in torch.unique(ab):
            rows = ab == value
            law = self.mixture.noised(value.sqrt(), 1 - value)               # x_t's mixture
            x = flat[rows]                                                    # (n, D)
            prec = torch.linalg.inv(law.covariances)                          # (K, D, D)
            r = torch.softmax(law._component_log_probs(x, prec), dim=1)       # (n, K)
            coef = (1 + w) * nn.functional.one_hot(y[rows], K).double() - w * r  # (n, K)
            diff = x[:, None, :] - law.means[None]                            # (n, K, D)
            prec_diff = torch.einsum("kde,nke->nkd", prec, diff)              # C_j^-1 (x - a mu_j)
            out[rows] = -(coef[:, :, None] * prec_diff).sum(1)
        return out.to(x_t.device).reshape(x_t.shape).to(x_t.dtype)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        shape = (-1, *([1] * (x_t.ndim - 1)))
        s = self.schedule.sqrt_one_minus_alpha_bars[t].to(x_t.dtype).reshape(shape)
        eps = -s * self.score(x_t, t)
        if self.prediction_type == "epsilon":
            return eps
        a = self.schedule.sqrt_alpha_bars[t].to(x_t.dtype).reshape(shape)
        x0 = (x_t - s * eps) / a
        if self.prediction_type == "x0":
            return x0
        return predict_v(self.schedule, x0, t, eps)
