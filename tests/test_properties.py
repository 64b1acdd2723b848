"""Property tests over random valid schedules and shapes (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from diffusion_lib import (
    NoiseSchedule,
    ddim_sample_loop,
    model_output_to_x0_eps,
    p_sample_loop,
    predict_v,
    q_sample,
)

betas_strategy = arrays(dtype="float64", shape=st.integers(1, 60),
                        elements=st.floats(1e-5, 0.999, allow_nan=False))
shape_strategy = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@settings(max_examples=60, deadline=None)
@given(betas_strategy)
def test_schedule_invariants(betas):
    s = NoiseSchedule(torch.from_numpy(betas), dtype=torch.float64)
    ab = s.alpha_bars
    assert ((ab > 0) & (ab < 1)).all()                               # in (0, 1)
    assert (ab[1:] <= ab[:-1]).all()                                 # monotone
    assert (s.posterior_variance >= 0).all()
    assert (s.posterior_variance <= s.betas * (1 + 1e-12)).all()     # within [0, beta_t]
    assert s.posterior_log_variance_clipped.isfinite().all()


@settings(max_examples=60, deadline=None)
@given(betas_strategy, shape_strategy, st.integers(0, 2 ** 31 - 1))
def test_prediction_conversions_round_trip(betas, shape, seed):
    s = NoiseSchedule(torch.from_numpy(betas).clamp(max=0.5), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    B = shape[0]
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, s.num_timesteps, (B,), generator=g)
    xt = q_sample(s, x0, t, noise=eps)
    v = predict_v(s, x0, t, eps)
    ab = s.alpha_bars[t].reshape(B, *([1] * (len(shape) - 1)))
    # recovering x0 from eps divides by sqrt(alpha_bar): the error grows as 1/sqrt(ab)
    tol = 1e-9 / ab.sqrt()
    for kind, out in [("epsilon", eps), ("x0", x0), ("v", v)]:
        px0, peps = model_output_to_x0_eps(s, out, xt, t, kind)
        assert ((px0 - x0).abs() <= tol * (1 + x0.abs() + eps.abs())).all(), kind
        assert ((peps - eps).abs()
                <= 1e-6 * (1 + x0.abs() + eps.abs()) / (1 - ab).sqrt()).all(), kind


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), shape_strategy, st.sampled_from([torch.float32, torch.float64]),
       st.booleans())
def test_samplers_keep_shape_and_dtype(T, shape, dtype, clip):
    s = NoiseSchedule.linear(T, 1e-3, 0.2, dtype=dtype)
    model = lambda x, t: 0.1 * x  # noqa: E731
    g = torch.Generator().manual_seed(0)
    for out in [p_sample_loop(s, model, shape, generator=g, clip_denoised=clip, progress=False),
                ddim_sample_loop(s, model, shape, num_steps=min(T, 5), generator=g,
                                 clip_denoised=clip, progress=False)]:
        assert out.shape == shape and out.dtype == dtype and out.isfinite().all()
