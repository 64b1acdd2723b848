"""bf16 autocast on the CPU: allowed where the CPU has native bfloat16, refused elsewhere with
a clear error; the master weights and the EMA stay float32, and a short run's loss curve
stays close to the fp32 one."""

import numpy as np
import pytest
import torch

from diffusion_lib.training import ConfigError, TrainConfig, load_checkpoint, train
from diffusion_lib.training import precision as precision_module
from diffusion_lib.training.precision import bf16_from_cpuinfo, check_precision

AVX2_ONLY = "processor : 0\nflags : fpu sse sse2 avx avx2 fma f16c\n"
SAPPHIRE = "processor : 0\nflags : fpu avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n"
ARM_BF16 = "processor : 0\nFeatures : fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("text, machine, ok", [(AVX2_ONLY, "x86_64", False),
                                                (SAPPHIRE, "x86_64", True),
                                                (ARM_BF16, "aarch64", True),
                                                (AVX2_ONLY, "aarch64", False),
                                                ("", "x86_64", False)])
def test_native_bf16_is_read_from_the_cpu_flags(text, machine, ok):
    supported, why = bf16_from_cpuinfo(text, machine)
    assert supported is ok
    assert ("the CPU has" in why) and (("emulated" in why) is not ok)


def test_bf16_is_refused_on_a_cpu_without_native_bfloat16(monkeypatch, tmp_path):
    monkeypatch.setattr(precision_module, "cpu_bf16_support",
                        lambda: (False, "the CPU has none of avx512_bf16, amx_bf16"))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="native bfloat16.*avx512_bf16.*use precision fp32"):
        train(TrainConfig(dataset="swissroll", out=str(out), steps=2, device="cpu",
                          precision="bf16", progress=False))
    assert not out.exists()                                 # refused before anything is written
    with pytest.raises(ConfigError, match="not on mps"):
        check_precision("bf16", torch.device("mps"))
    check_precision("bf16", torch.device("cuda"))           # CUDA: always allowed
    check_precision("fp32", torch.device("cpu"))


def _run(tmp_path, name, precision, dataset, overrides, model=None):
    cfg = TrainConfig(dataset=dataset, out=str(tmp_path / name), steps=40, batch_size=64,
                      lr=2e-3, warmup_steps=5, num_timesteps=100, model=model,
                      model_overrides=overrides, checkpoint_every=40, log_every=10,
                      sample_every=0, device="cpu", precision=precision, progress=False)
    return train(cfg)


@pytest.mark.parametrize("dataset, model, overrides", [
    ("swissroll", None, {"hidden": 64, "depth": 2, "time_embed_dim": 32}),
    ("digits", "tiny", {"channels": 8}),
])
def test_bf16_loss_curve_stays_close_to_fp32(monkeypatch, tmp_path, dataset, model, overrides):
    """Same seed, so the same batches, t and eps at every step: the bf16 run's losses track
    the fp32 run's (bf16 keeps 8 bits of mantissa: ~0.4% per product)."""
    monkeypatch.setattr(precision_module, "cpu_bf16_support", lambda: (True, "forced"))
    fp32 = _run(tmp_path, "fp32", "fp32", dataset, overrides, model)
    bf16 = _run(tmp_path, "bf16", "bf16", dataset, overrides, model)
    a, b = fp32.losses, bf16.losses
    assert np.isfinite(b).all()
    assert not np.array_equal(a, b)                         # autocast really changed the math
    assert abs(b.mean() - a.mean()) < 0.01 * a.mean()      # measured: 1e-4 of it
    assert np.median(np.abs(b - a) / a) < 0.01
    assert b[-10:].mean() < 0.8 * b[:5].mean()              # and it learns
    # master weights, EMA and the checkpoint stay float32
    for net in (bf16.model, bf16.ema_model):
        assert {p.dtype for p in net.parameters()} == {torch.float32}
    ckpt = load_checkpoint(tmp_path / "bf16" / "checkpoints" / "step-00000040.safetensors")
    assert {v.dtype for v in ckpt.model_state.values() if v.is_floating_point()} == {torch.float32}
    assert {v.dtype for v in ckpt.ema_state.values() if v.is_floating_point()} == {torch.float32}
