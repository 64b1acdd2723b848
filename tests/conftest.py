"""Shared fixtures. Tests import only the public API of diffusion_lib."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_deterministic():
    # Two cores are shared by pytest and CI; one thread per test keeps timings stable.
    torch.set_num_threads(1)
    yield


@pytest.fixture
def schedule64():
    """The DDPM default schedule (linear 1e-4..0.02, T = 1000) in float64."""
    from diffusion_lib import NoiseSchedule
    return NoiseSchedule.linear(dtype=torch.float64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
