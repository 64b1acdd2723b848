"""diffusion_lib: denoising diffusion probabilistic models, small and tested.

The library behind the book *Dive into Diffusion*. The noise process (schedules,
forward, reverse, losses, samplers) is separate from the networks and from
training. Timesteps are 0-indexed everywhere: t = 0 is the first diffusion step,
so ``betas[t]`` is the paper's beta_{t+1}.
"""

from .data import DataError, load_dataset
from .forward import q_mean_variance, q_sample, q_sample_chain, q_step
from .gaussians import discretized_gaussian_log_likelihood, normal_kl, randn_like, reparameterize
from .guidance import ClassifierFreeGuidance
from .losses import (
    VariationalBound,
    l_simple,
    loss_target,
    prior_bpd,
    sample_timesteps,
    variational_bound,
    vb_term_bpd,
)
from .models import build_model
from .oracle import (
    ConditionalGaussianMixtureOracle,
    GaussianMixture,
    GaussianMixtureOracle,
    GuidedGaussianMixtureOracle,
)
from .reverse import (
    PMeanVariance,
    model_output_to_x0_eps,
    p_mean_variance,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_v,
    predict_x0_from_eps,
    predict_x0_from_v,
    q_posterior_mean_variance,
)
from .samplers import ddim_sample_loop, ddim_step, ddim_timesteps, p_sample, p_sample_loop
from .schedules import NoiseSchedule, cosine_betas, linear_betas
from .training import (
    CheckpointError,
    ConfigError,
    TrainConfig,
    TrainingError,
    TrainResult,
    load_run,
    train,
)

__version__ = "0.3.0"

__all__ = [
    "NoiseSchedule", "linear_betas", "cosine_betas",
    "q_step", "q_sample_chain", "q_mean_variance", "q_sample",
    "randn_like", "reparameterize", "normal_kl", "discretized_gaussian_log_likelihood",
    "q_posterior_mean_variance", "predict_x0_from_eps", "predict_eps_from_x0", "predict_v",
    "predict_x0_from_v", "predict_eps_from_v", "model_output_to_x0_eps", "PMeanVariance",
    "p_mean_variance",
    "sample_timesteps", "loss_target", "l_simple", "prior_bpd", "vb_term_bpd",
    "VariationalBound", "variational_bound",
    "p_sample", "p_sample_loop", "ddim_timesteps", "ddim_step", "ddim_sample_loop",
    "GaussianMixture", "GaussianMixtureOracle", "ConditionalGaussianMixtureOracle",
    "GuidedGaussianMixtureOracle", "ClassifierFreeGuidance",
    "load_dataset", "DataError",
    "build_model",
    "train", "TrainConfig", "TrainResult", "TrainingError", "ConfigError", "CheckpointError",
    "load_run",
]
