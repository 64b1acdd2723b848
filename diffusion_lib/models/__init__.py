"""Noise-prediction networks eps_theta(x_t, t) for DDPM (Ho et al. 2020), and their presets.

- `UNet`, `UNetConfig`: the paper's U-Net for images (Appendix B).
- `MLPDenoiser`, `MLPConfig`: a residual MLP for low-dimensional points.
- `timestep_embedding`: the sinusoidal embedding of t both use (Vaswani et al. 2017).
- `build_model(preset, **overrides)`: a network from one of the named `PRESETS`.
- `model_config_dict(model)`, `build_model_from_dict(d)`: save a network's config as a plain
  (JSON-able) dict and rebuild the same network from it, e.g. next to a checkpoint.

Every network is called as `model(x_t, t)`, with `t` of shape (B,) holding integer steps
0..T-1 (t = 0 is the first diffusion step), and returns a tensor shaped like `x_t`. The
networks know nothing of the noise schedule. Built with `num_classes=K` (an override of
any preset) a network is class-conditional and also takes labels, `model(x_t, t, y)`, y of
shape (B,) in 0..K, K meaning "no class" (chapter 9; `diffusion_lib.guidance`).
"""

from dataclasses import asdict, fields, replace
from typing import Any

from torch import nn

from .embeddings import ClassEmbedding, timestep_embedding
from .mlp import MLPConfig, MLPDenoiser
from .unet import UNet, UNetConfig

__all__ = [
    "PRESETS",
    "ClassEmbedding",
    "MLPConfig",
    "MLPDenoiser",
    "UNet",
    "UNetConfig",
    "build_model",
    "build_model_from_dict",
    "model_config_dict",
    "timestep_embedding",
]

PRESETS: dict[str, UNetConfig | MLPConfig] = {
    # Ho et al. 2020, Appendix B, CIFAR-10: 35.7M parameters.
    "ddpm-cifar10": UNetConfig(
        image_size=32,
        in_channels=3,
        channels=128,
        channel_mults=(1, 2, 2, 2),  # resolutions 32, 16, 8, 4
        num_res_blocks=2,
        attention_resolutions=(16,),
        dropout=0.1,
    ),
    # The same design for 28x28 MNIST, at half the width and one level fewer.
    "ddpm-mnist": UNetConfig(
        image_size=28,
        in_channels=1,
        channels=64,
        channel_mults=(1, 2, 2),  # resolutions 28, 14, 7 (28 only halves twice)
        num_res_blocks=2,
        attention_resolutions=(14,),
        dropout=0.1,
    ),
    # 8x8 grayscale digits (scikit-learn's), trained on a CPU: 700 steps of batch 128 (Adam,
    # lr 2e-3; ~0.25 s a step on two cores, three minutes) give mostly recognisable digits.
    # Width 64 costs 3x more per step.
    "digits": UNetConfig(
        image_size=8,
        in_channels=1,
        channels=32,
        channel_mults=(1, 2),  # resolutions 8, 4
        num_res_blocks=1,
        attention_resolutions=(4,),  # 16 positions: attention is cheap here
        dropout=0.0,  # minutes of training underfit 1797 images rather than overfit them
        norm_groups=8,  # 4 or 8 channels per group
    ),
    # For tests: every kind of block, a few tens of thousands of parameters, milliseconds a call.
    "tiny": UNetConfig(
        image_size=8,
        in_channels=1,
        channels=8,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        dropout=0.0,
        norm_groups=4,  # 32 groups would need at least 32 channels
    ),
    # 2-D toy data (swiss roll, 8 gaussians); the defaults of MLPConfig.
    "mlp": MLPConfig(),
}

# Name written into saved configs -> (config class, network class).
_KINDS: dict[str, tuple[type, type[nn.Module]]] = {
    "unet": (UNetConfig, UNet),
    "mlp": (MLPConfig, MLPDenoiser),
}


def _build(config: UNetConfig | MLPConfig) -> nn.Module:
    for config_cls, model_cls in _KINDS.values():
        if type(config) is config_cls:
            return model_cls(config)
    raise ValueError(f"not a model config: {type(config).__name__}")


def build_model(preset: str, **overrides: Any) -> nn.Module:
    """A freshly initialised network from a named preset, with some config fields replaced.

    Example: `build_model("ddpm-mnist", dropout=0.0)`. The presets are the keys of
    `PRESETS`; the valid overrides are the fields of the preset's config class.

    Raises:
        ValueError: unknown preset, unknown override, or an invalid resulting config.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    valid = [f.name for f in fields(base)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown override(s) {', '.join(unknown)} for preset {preset!r}; "
            f"valid fields of {type(base).__name__}: {', '.join(valid)}"
        )
    return _build(replace(base, **overrides))


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """The config of a network built here, as a plain dict: {"kind": "unet" or "mlp", **fields}.

    Tuples stay tuples; the dict survives a JSON round trip (lists are turned back into
    tuples by `build_model_from_dict`). Works through `torch.compile`, which forwards
    attribute access to the wrapped module.
    """
    config = getattr(model, "config", None)
    for kind, (config_cls, _) in _KINDS.items():
        if type(config) is config_cls:
            d = {"kind": kind, **asdict(config)}
            if not d["num_classes"]:   # unconditional: the dict of before conditioning existed,
                del d["num_classes"]   # so that older run folders still load and resume
            return d
    raise ValueError(
        f"{type(model).__name__} has no UNetConfig or MLPConfig in .config; "
        f"only networks from diffusion_lib.models can be saved this way"
    )


def build_model_from_dict(d: dict[str, Any]) -> nn.Module:
    """A freshly initialised network from a dict written by `model_config_dict`.

    Load the weights afterwards with `model.load_state_dict(...)`.

    Raises:
        ValueError: missing or unknown "kind", or fields its config class does not have.
    """
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"model config dict needs 'kind' in {', '.join(_KINDS)}, got {kind!r}")
    config_cls, _ = _KINDS[kind]
    valid = [f.name for f in fields(config_cls)]
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)} for {config_cls.__name__}; "
            f"valid: {', '.join(valid)}"
        )
    return _build(config_cls(**d))
