"""Tests of diffusion_lib.models: the DDPM U-Net (Ho et al. 2020, App. B), the MLP denoiser,
the sinusoidal timestep embedding (Vaswani et al. 2017) and the presets."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from diffusion_lib.models import (
    PRESETS,
    MLPConfig,
    MLPDenoiser,
    UNet,
    UNetConfig,
    build_model,
    build_model_from_dict,
    model_config_dict,
    timestep_embedding,
)

# Exact parameter counts: a change to any layer shows up here.
PARAM_COUNTS = {
    "ddpm-cifar10": 35_746_307,  # the paper's "35.7M"
    "ddpm-mnist": 6_469_889,
    "digits": 701_345,
    "tiny": 44_969,
    "mlp": 175_106,
}
IMAGE_PRESETS = [name for name, cfg in PRESETS.items() if isinstance(cfg, UNetConfig)]
SMALL_PRESETS = ["ddpm-mnist", "digits", "tiny", "mlp"]  # cheap enough to build several times


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def example_input(model: nn.Module, batch_size: int = 2, seed: int = 0):
    """A random (x, t) of the model's native shape; t spread over 0..999."""
    cfg = model.config
    if isinstance(cfg, UNetConfig):
        shape = (batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    else:
        shape = (batch_size, cfg.dim)
    x = torch.randn(shape, generator=gen(seed))
    t = torch.randint(0, 1000, (batch_size,), generator=gen(seed + 1))
    return x, t


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb every parameter: a fresh model outputs 0 (zero-initialised last layers),
    which would make tests of what the output depends on pass vacuously."""
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def cifar_model():
    torch.manual_seed(0)
    return build_model("ddpm-cifar10").eval()


# --- parameter counts ----------------------------------------------------------------------

def test_every_preset_has_a_pinned_count():
    assert set(PARAM_COUNTS) == set(PRESETS)


@pytest.mark.parametrize("preset", SMALL_PRESETS)
def test_parameter_count(preset):
    assert n_params(build_model(preset)) == PARAM_COUNTS[preset]


def test_cifar10_preset_has_the_papers_35_7M_parameters(cifar_model):
    n = n_params(cifar_model)
    assert n == PARAM_COUNTS["ddpm-cifar10"]
    assert round(n / 1e6, 1) == 35.7


def test_tiny_is_tiny():
    assert 1_000 <= PARAM_COUNTS["tiny"] <= 100_000


# --- shapes --------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", [p for p in IMAGE_PRESETS if p != "ddpm-cifar10"] + ["mlp"])
def test_output_shape_equals_input_shape(preset):
    model = build_model(preset).eval()
    x, t = example_input(model, batch_size=3)
    with torch.no_grad():
        assert model(x, t).shape == x.shape


def test_cifar10_output_shape(cifar_model):
    x, t = example_input(cifar_model, batch_size=1)
    with torch.no_grad():
        assert cifar_model(x, t).shape == (1, 3, 32, 32)


def test_unet_accepts_other_sizes_divisible_by_its_downsampling():
    model = build_model("ddpm-mnist").eval()  # 3 levels: sides must divide by 4
    x = torch.randn(2, 1, 12, 20, generator=gen())
    with torch.no_grad():
        assert model(x, torch.tensor([0, 999])).shape == x.shape


def test_out_channels_default_and_override():
    assert build_model("tiny", in_channels=3).conv_out.out_channels == 3
    model = build_model("tiny", out_channels=2).eval()
    x, t = example_input(model)
    assert model(x, t).shape == (2, 2, 8, 8)


def test_fresh_network_predicts_zero():
    # Zero-initialised output convolution, as in the paper's code.
    model = build_model("tiny").eval()
    x, t = example_input(model)
    assert torch.count_nonzero(model(x, t)) == 0


# --- timestep embedding --------------------------------------------------------------------

def test_timestep_embedding_matches_the_formula():
    t = np.array([0, 1, 2, 17, 500, 999])
    d = 16
    emb = timestep_embedding(torch.from_numpy(t), d)
    assert emb.shape == (6, d) and emb.dtype == torch.float32
    i = np.arange(d // 2)
    arg = t[:, None] / 10000.0 ** (2 * i[None, :] / d)  # Vaswani et al. 2017, Sec. 3.5
    expected = np.concatenate([np.sin(arg), np.cos(arg)], axis=1)
    np.testing.assert_allclose(emb.numpy(), expected, atol=1e-4)


def test_timestep_embedding_of_step_zero_is_sines_zero_cosines_one():
    emb = timestep_embedding(torch.tensor([0]), 8)
    assert torch.equal(emb, torch.tensor([[0.0, 0, 0, 0, 1, 1, 1, 1]]))


def test_timestep_embedding_separates_all_steps():
    emb = timestep_embedding(torch.arange(1000), 64)  # (1000, 64)
    dist = torch.cdist(emb, emb) + torch.eye(1000) * 1e9
    assert dist.min() > 0.1


def test_timestep_embedding_accepts_float_t():
    t = torch.tensor([0, 3, 999])
    assert torch.equal(timestep_embedding(t.float(), 32), timestep_embedding(t, 32))
    mid = timestep_embedding(torch.tensor([3.5]), 32)
    assert not torch.allclose(mid, timestep_embedding(torch.tensor([3]), 32))


@pytest.mark.parametrize("dim", [0, 7])
def test_timestep_embedding_rejects_odd_dim(dim):
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(torch.tensor([1]), dim)


# --- the networks use t and x --------------------------------------------------------------

@pytest.mark.parametrize("preset", ["tiny", "digits", "mlp"])
def test_output_depends_on_t(preset):
    model = randomize_(build_model(preset))
    x, _ = example_input(model, batch_size=2)
    with torch.no_grad():
        out_a = model(x, torch.tensor([10, 10]))
        out_b = model(x, torch.tensor([900, 900]))
    assert (out_a - out_b).abs().max() > 1e-2


@pytest.mark.parametrize("preset", ["tiny", "mlp"])
def test_samples_of_a_batch_are_independent(preset):
    # Each output depends on its own (x, t) only: no mixing across the batch.
    model = randomize_(build_model(preset))
    x, t = example_input(model, batch_size=4)
    with torch.no_grad():
        full = model(x, t)
        single = torch.cat([model(x[i:i + 1], t[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(full, single, atol=1e-5, rtol=1e-5)


def test_float_t_gives_the_same_output_as_integer_t():
    model = randomize_(build_model("tiny"))
    x, t = example_input(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t.float()), model(x, t))


# --- memory format, autocast, compile --------------------------------------------------------

@pytest.mark.parametrize("preset", ["tiny", "digits"])
def test_channels_last_gives_the_same_output(preset):
    model = randomize_(build_model(preset))
    x, t = example_input(model, batch_size=3)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x, t)
        torch.testing.assert_close(model(x_cl, t), expected, atol=1e-5, rtol=1e-5)
        model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x_cl, t), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "mlp"])
def test_bfloat16_autocast(preset):
    model = randomize_(build_model(preset))
    x, t = example_input(model, batch_size=3)
    with torch.no_grad():
        expected = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t)
    assert out.shape == expected.shape
    err = (out.float() - expected).abs().max() / expected.abs().max()
    assert err < 0.05


@pytest.mark.parametrize("preset", ["tiny", "mlp"])
def test_compiles_to_one_graph(preset):
    # fullgraph=True fails on any graph break; the eager backend skips code generation.
    torch._dynamo.reset()
    model = randomize_(build_model(preset))
    x, t = example_input(model)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t), model(x, t))
    assert model_config_dict(compiled) == model_config_dict(model)


# --- 1x1 convolutions and attention as matmuls -----------------------------------------------

def _conv1x1_and_reference(in_ch=6, out_ch=10, seed=0):
    from diffusion_lib.models.unet import Conv1x1
    torch.manual_seed(seed)
    conv = Conv1x1(in_ch, out_ch)
    return conv, lambda x: torch.nn.functional.conv2d(x, conv.weight, conv.bias)


def test_conv1x1_keeps_the_parameters_of_a_1x1_conv():
    conv, _ = _conv1x1_and_reference()
    assert isinstance(conv, nn.Conv2d)
    assert {k: tuple(v.shape) for k, v in conv.state_dict().items()} == {
        "weight": (10, 6, 1, 1), "bias": (10,)}


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_conv1x1_equals_conv2d_values_and_gradients(memory_format):
    conv, reference = _conv1x1_and_reference()
    x = torch.randn(3, 6, 5, 7, generator=gen(1)).contiguous(memory_format=memory_format)
    grad = torch.randn(3, 10, 5, 7, generator=gen(2))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = conv(x1), reference(x2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(expected, torch.zeros_like(expected))
    grads = torch.autograd.grad(out, (x1, conv.weight, conv.bias), grad)
    expected_grads = torch.autograd.grad(expected, (x2, conv.weight, conv.bias), grad)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_conv1x1_on_flattened_positions_equals_conv2d():
    conv, reference = _conv1x1_and_reference()
    x = torch.randn(3, 6, 4, 5, generator=gen(3))
    expected = reference(x).flatten(2)  # (B, out, N)
    bcn = x.flatten(2)  # (B, in, N), contiguous
    bnc = bcn.transpose(1, 2)  # (B, N, in), strided
    torch.testing.assert_close(conv.forward_bcn(bcn), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv.forward_bcn(bnc.contiguous().transpose(1, 2)), expected,
                               atol=1e-5, rtol=1e-5)
    for positions_first in (bnc, bnc.contiguous()):
        torch.testing.assert_close(conv.forward_bnc(positions_first), expected.transpose(1, 2),
                                   atol=1e-5, rtol=1e-5)


def _attention_reference(attn, x):
    """Self-attention written with F.conv2d and explicit softmax(q k^T / sqrt(d)) v."""
    F = torch.nn.functional
    B, C, H, W = x.shape
    heads, d = attn.num_heads, C // attn.num_heads
    qkv = F.conv2d(attn.norm(x), attn.qkv.weight, attn.qkv.bias)  # (B, 3C, H, W)
    q, k, v = qkv.reshape(B, 3, heads, d, H * W).unbind(1)  # each (B, heads, d, HW)
    weights = torch.softmax(q.transpose(2, 3) @ k / d ** 0.5, dim=-1)  # (B, heads, HW, HW)
    h = (weights @ v.transpose(2, 3)).transpose(2, 3).reshape(B, C, H, W)
    return x + F.conv2d(h, attn.proj.weight, attn.proj.bias)


@pytest.mark.parametrize("num_heads", [1, 2])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_self_attention_equals_the_convolution_reference(num_heads, memory_format):
    from diffusion_lib.models.unet import SelfAttention
    torch.manual_seed(0)
    attn = randomize_(SelfAttention(8, num_heads, groups=4))
    x = torch.randn(2, 8, 4, 3, generator=gen(4))
    expected = _attention_reference(attn, x)
    with torch.no_grad():
        out = attn(x.contiguous(memory_format=memory_format))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert out.is_contiguous(memory_format=memory_format)  # the sum keeps x's layout
    assert (expected - x).abs().max() > 0.01  # the attention branch is not a no-op


# --- errors --------------------------------------------------------------------------------

def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model preset") as info:
        build_model("ddpm-imagenet")
    for name in PRESETS:
        assert name in str(info.value)


def test_unknown_override_names_the_valid_fields():
    with pytest.raises(ValueError, match="widht") as info:
        build_model("tiny", widht=3)
    assert "channels" in str(info.value) and "dropout" in str(info.value)
    with pytest.raises(ValueError, match="channels"):
        build_model("mlp", channels=3)  # a U-Net field is not an MLP field


def test_overrides_replace_fields_and_leave_the_preset_alone():
    model = build_model("ddpm-mnist", dropout=0.0, in_channels=3)
    assert model.config.dropout == 0.0 and model.config.in_channels == 3
    assert PRESETS["ddpm-mnist"].dropout == 0.1 and PRESETS["ddpm-mnist"].in_channels == 1


@pytest.mark.parametrize("overrides, match", [
    (dict(image_size=30), "divisible by 4"),
    (dict(attention_resolutions=(8,)), "attention_resolutions"),
    (dict(norm_groups=24), "norm_groups"),
    (dict(dropout=1.0), "dropout"),
    (dict(channel_mults=()), "channel_mults"),
])
def test_invalid_unet_configs(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_model("ddpm-mnist", **overrides)


def test_invalid_mlp_config():
    with pytest.raises(ValueError, match="time_embed_dim"):
        MLPConfig(time_embed_dim=33)


@pytest.mark.parametrize("shape, match", [
    ((2, 8, 8), "shape"),  # no channel dim
    ((2, 3, 8, 8), "channels"),  # tiny is grayscale
    ((2, 1, 7, 7), "divisible by 2"),  # two levels: one halving
])
def test_unet_rejects_bad_x(shape, match):
    model = build_model("tiny")
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(shape), torch.zeros(shape[0], dtype=torch.long))


@pytest.mark.parametrize("preset", ["tiny", "mlp"])
@pytest.mark.parametrize("t", [
    torch.tensor(5),  # 0-d
    torch.zeros(3, dtype=torch.long),  # batch of 3 for x of 2
    torch.zeros(2, 1, dtype=torch.long),  # (B, 1)
    torch.zeros(2, dtype=torch.bool),
    5,  # not a tensor
])
def test_models_reject_bad_t(preset, t):
    model = build_model(preset)
    x, _ = example_input(model, batch_size=2)
    with pytest.raises(ValueError, match="t must"):
        model(x, t)


@pytest.mark.parametrize("shape", [(2, 3), (2,), (2, 2, 1)])
def test_mlp_rejects_bad_x(shape):
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        build_model("mlp")(torch.zeros(shape), torch.zeros(shape[0], dtype=torch.long))


# --- saving the config ----------------------------------------------------------------------

@pytest.mark.parametrize("preset", SMALL_PRESETS)
def test_config_round_trip_through_json(preset):
    model = randomize_(build_model(preset, dropout=0.0))
    saved = json.loads(json.dumps(model_config_dict(model)))
    rebuilt = build_model_from_dict(saved)
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    assert n_params(rebuilt) == n_params(model)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    x, t = example_input(model)
    with torch.no_grad():
        assert torch.equal(rebuilt(x, t), model(x, t))


def test_config_dict_names_the_kind():
    assert model_config_dict(build_model("tiny"))["kind"] == "unet"
    assert model_config_dict(build_model("mlp"))["kind"] == "mlp"
    assert isinstance(build_model_from_dict({"kind": "mlp", "hidden": 32}), MLPDenoiser)
    assert isinstance(build_model_from_dict({"kind": "unet", **vars(PRESETS["tiny"])}), UNet)


@pytest.mark.parametrize("d, match", [
    ({"hidden": 32}, "kind"),
    ({"kind": "transformer"}, "kind"),
    ({"kind": "mlp", "channels": 32}, "channels"),
])
def test_bad_config_dicts(d, match):
    with pytest.raises(ValueError, match=match):
        build_model_from_dict(d)


def test_config_dict_of_a_foreign_module():
    with pytest.raises(ValueError, match="config"):
        model_config_dict(nn.Linear(2, 2))


# --- training -------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["tiny", "mlp"])
def test_gradients_reach_every_parameter_and_the_loss_falls(preset):
    torch.manual_seed(0)
    model = build_model(preset)
    x, t = example_input(model, batch_size=16)
    target = torch.randn(x.shape, generator=gen(2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (model(x, t) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The zero-initialised layers block gradients for a step or two; after that, all flow.
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []
    assert losses[-1] < 0.7 * losses[0]
