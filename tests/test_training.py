"""The training engine: it learns, checkpoints round-trip, a resumed run is bitwise the
uninterrupted one, damaged checkpoints and NaN losses stop with clear errors."""

import json
import math

import numpy as np
import pytest
import torch

from diffusion_lib.training import (
    EMA,
    CheckpointError,
    ConfigError,
    TrainConfig,
    TrainingError,
    ema_decay_at,
    engine,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_run,
    lr_at,
    resolve_config,
    save_checkpoint,
    train,
)

SMALL_MLP = {"hidden": 32, "depth": 2, "time_embed_dim": 16}


def small(dataset="swissroll", **kw):
    """A config that trains in well under a second."""
    base = dict(dataset=dataset, steps=6, batch_size=32, checkpoint_every=3, log_every=2,
                num_timesteps=50, progress=False)
    if dataset in ("swissroll", "moons", "8gaussians"):
        base["model_overrides"] = dict(SMALL_MLP)
    else:
        base["model"] = "tiny"
    base.update(kw)
    return TrainConfig(**base)


def energy_distance(x, y):
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (V-statistic), the two-sample energy distance."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean()
            - torch.cdist(y, y).mean()).item()


def states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- learning

@pytest.mark.slow
def test_short_training_improves_energy_distance():
    """Chapter 6 in miniature: a few hundred steps pull the samples towards the swiss roll."""
    cfg = TrainConfig(dataset="swissroll", steps=300, batch_size=256, lr=3e-3, num_timesteps=100,
                      ema_decay=0.99, model_overrides={"hidden": 64, "depth": 2}, progress=False)
    untrained = train(TrainConfig(**{**cfg.__dict__, "steps": 1, "lr": 1e-12}))
    trained = train(cfg)
    data = trained.dataset.to_output(trained.dataset.all_data()[:500])
    before = energy_distance(untrained.sample(500, seed=1), data)
    after = energy_distance(trained.sample(500, seed=1), data)
    assert np.isfinite(trained.losses).all()
    assert trained.losses[-50:].mean() < 0.7 * trained.losses[:20].mean()
    assert after < 0.5 * before, (before, after)


def test_train_without_run_folder_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(small())
    assert list(tmp_path.iterdir()) == []
    assert result.run_dir is None and result.step == 6
    assert result.losses.shape == (6,) and result.steps.tolist() == list(range(6))
    points = result.sample(5, sampler="ddim", steps=5)
    assert points.shape == (5, 2) and points.dtype == np.float32


def test_train_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(small(steps=2))
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- schedules of lr and EMA

def test_lr_warmup_and_ema_warmup():
    cfg = resolve_config(TrainConfig(dataset="swissroll", lr=1e-3, warmup_steps=10,
                                     lr_decay="none"), _swissroll())
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3) and lr_at(5000, cfg) == pytest.approx(1e-3)
    # the toys' default: a half cosine from the end of the warm-up down to 0 at `steps`
    cfg = resolve_config(TrainConfig(dataset="swissroll", lr=1e-3, warmup_steps=10, steps=110),
                         _swissroll())
    assert cfg.lr_decay == "cosine"
    assert lr_at(9, cfg) == pytest.approx(1e-3) and lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(0.5e-3)                       # half-way: cos(pi/2)
    assert lr_at(35, cfg) == pytest.approx(1e-3 * (2 + math.sqrt(2)) / 4)  # a quarter: cos(pi/4)
    assert lr_at(110, cfg) == 0.0
    assert ema_decay_at(0, 0.9999) == pytest.approx(0.1)
    assert ema_decay_at(80, 0.9999) == pytest.approx(0.9)
    assert ema_decay_at(10**7, 0.9999) == 0.9999
    assert ema_decay_at(0, 0.9999, warmup=False) == 0.9999


def test_ema_update_is_a_lerp():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=False)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=100)
    assert torch.allclose(ema.model.weight, 0.9 * before + 0.1 * model.weight)
    assert not ema.model.weight.requires_grad and not ema.model.training


# ---------------------------------------------------------------- config

def _swissroll():
    from diffusion_lib import load_dataset
    return load_dataset("swissroll")


@pytest.mark.parametrize("field, value", [("steps", 0), ("batch_size", -1), ("lr", 0.0),
                                          ("lr", float("nan")), ("ema_decay", 1.0),
                                          ("precision", "fp16"), ("schedule", "quadratic"),
                                          ("grad_clip", -1.0), ("device", "tpu")])
def test_bad_config_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(dataset="swissroll", **{field: value}).validate()


def test_per_dataset_defaults_and_model_fitting():
    from diffusion_lib import load_dataset
    cfg = resolve_config(TrainConfig(dataset="swissroll"), _swissroll())
    assert (cfg.model, cfg.batch_size, cfg.model_overrides["dim"]) == ("mlp", 512, 2)
    assert None not in (cfg.steps, cfg.lr, cfg.ema_decay, cfg.checkpoint_every)
    digits = load_dataset("digits")
    cfg = resolve_config(TrainConfig(dataset="digits"), digits)
    assert cfg.model == "digits" and cfg.model_overrides["in_channels"] == 1
    assert cfg.model_overrides["channels"] == 32     # the CPU default: half width
    short = resolve_config(TrainConfig(dataset="digits", num_timesteps=20), digits)
    assert short.preview_steps == 20                 # the default DDIM preview fits any T
    chosen = resolve_config(TrainConfig(dataset="digits", model="digits"), digits)
    assert "channels" not in chosen.model_overrides  # a chosen preset comes as it is
    tiny = resolve_config(TrainConfig(dataset="mnist", model="tiny"),
                          _FakeImages((1, 28, 28)))
    assert tiny.model_overrides["image_size"] == 28
    assert tiny.model_overrides["attention_resolutions"] == (14,)   # same level as in tiny
    with pytest.raises(ConfigError, match="points"):
        resolve_config(TrainConfig(dataset="digits", model="mlp"), digits)
    with pytest.raises(ConfigError, match="unknown model preset"):
        resolve_config(TrainConfig(dataset="swissroll", model="nope"), _swissroll())
    with pytest.raises(ConfigError, match="override"):
        resolve_config(TrainConfig(dataset="swissroll", model_overrides={"widht": 3}),
                       _swissroll())


def test_preview_defaults_follow_the_kind_of_data_and_the_device():
    """Previews cost little: DDIM with a few dozen steps and a handful of images on a CPU."""
    from diffusion_lib import load_dataset
    digits = load_dataset("digits")
    cpu = resolve_config(TrainConfig(dataset="digits"), digits, "cpu")
    assert (cpu.preview_sampler, cpu.preview_steps, cpu.num_preview) == ("ddim", 50, 16)
    gpu = resolve_config(TrainConfig(dataset="digits"), digits, "cuda")
    assert (gpu.preview_sampler, gpu.preview_steps, gpu.num_preview) == ("ddim", 100, 64)
    mnist = resolve_config(TrainConfig(dataset="mnist"), _FakeImages((1, 28, 28)), "cpu")
    assert (mnist.preview_sampler, mnist.preview_steps, mnist.num_preview) == ("ddim", 50, 16)
    points = resolve_config(TrainConfig(dataset="swissroll"), _swissroll(), "cuda")
    assert (points.preview_sampler, points.preview_steps, points.num_preview) == ("ddpm", None,
                                                                                  500)
    asked = resolve_config(TrainConfig(dataset="swissroll", preview_steps=30), _swissroll())
    assert (asked.preview_sampler, asked.preview_steps) == ("ddim", 30)
    mine = resolve_config(TrainConfig(dataset="digits", preview_sampler="ddpm", num_preview=4),
                          digits, "cpu")
    assert (mine.preview_sampler, mine.preview_steps, mine.num_preview) == ("ddpm", None, 4)
    with pytest.raises(ConfigError, match="preview_steps is for DDIM"):
        resolve_config(TrainConfig(dataset="digits", preview_sampler="ddpm", preview_steps=9),
                       digits)
    with pytest.raises(ConfigError, match="preview_sampler"):
        TrainConfig(dataset="digits", preview_sampler="euler").validate()


def test_an_image_preview_costs_a_few_network_calls(tmp_path, monkeypatch):
    """The final preview of a short CPU image run: 16 images x 50 DDIM steps, not 64 x 1000."""
    calls = []
    real = engine.generate

    def counting(model, *args, **kwargs):
        hook = model.register_forward_hook(lambda m, inputs, out: calls.append(len(inputs[0])))
        try:
            return real(model, *args, **kwargs)
        finally:
            hook.remove()
    monkeypatch.setattr(engine, "generate", counting)
    train(small("digits", out=str(tmp_path / "run"), steps=4, num_timesteps=1000))
    assert calls == [16] * 50
    assert (tmp_path / "run" / "samples" / "step-00000004.png").stat().st_size > 500


class _FakeImages:
    kind, name = "images", "fake"

    def __init__(self, shape):
        self.sample_shape = shape


# ---------------------------------------------------------------- checkpoints

def test_run_folder_layout_and_checkpoint_round_trip(tmp_path):
    result = train(small(out=str(tmp_path / "run"), steps=9, sample_every=9, num_preview=50))
    run = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run)] == ["step-00000006.safetensors",
                                                        "step-00000009.safetensors"]
    assert (run / "samples" / "step-00000009.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4, 6, 8, 9]
    assert set(rows[0]) >= {"step", "loss", "lr", "images_per_s"}
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == 9 and saved["model"] == "mlp"

    ckpt = load_checkpoint(latest_checkpoint(run))
    assert ckpt.step == 9 and ckpt.config == json.loads(json.dumps(result.config.to_dict()))
    assert all(torch.equal(v, result.model.state_dict()[k]) for k, v in ckpt.model_state.items())
    assert all(torch.equal(v, result.ema_model.state_dict()[k]) for k, v in ckpt.ema_state.items())
    assert ckpt.optimizer_state["state"][0]["exp_avg"].shape == next(
        result.model.parameters()).shape
    loaded = load_run(run)
    assert states_equal(loaded.model, result.ema_model) and loaded.step == 9
    assert loaded.data["kind"] == "points" and len(loaded.data["mean"]) == 2


def test_load_run_of_an_earlier_step(tmp_path):
    """load_run(step=k) rebuilds the EMA of step k, as the run had it then (a run stopped at
    k holds the same weights); a step it does not keep is refused with the kept steps."""
    run = tmp_path / "r"
    train(small(out=str(run), steps=9, keep_checkpoints=3))
    stopped = train(small(out=str(tmp_path / "s"), steps=6))
    earlier = load_run(run, step=6)
    assert earlier.step == 6 and earlier.path.name == "step-00000006.safetensors"
    assert states_equal(earlier.model, stopped.ema_model)
    assert not states_equal(load_run(run).model, stopped.ema_model)
    with pytest.raises(CheckpointError, match=r"of step 4; it keeps steps \[3, 6, 9\]"):
        load_run(run, step=4)


@pytest.mark.parametrize("dataset, overrides", [("swissroll", {"dropout": 0.2}),
                                                 ("digits", {"dropout": 0.2})])
def test_resume_is_bitwise_equal_to_uninterrupted(tmp_path, dataset, overrides):
    """Stopped at step 3 and re-run, a run ends with exactly the weights of one never stopped
    (dropout on: its masks must be reproduced too)."""
    cfg = small(dataset)
    cfg.model_overrides = {**cfg.model_overrides, **overrides}
    whole = train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "a")}))
    train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "b"), "steps": 3}))
    resumed = train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "b")}))
    assert resumed.steps.tolist() == [3, 4, 5]
    assert states_equal(whole.model, resumed.model)
    assert states_equal(whole.ema_model, resumed.ema_model)
    assert np.array_equal(whole.losses[3:], resumed.losses)
    a, b = (load_checkpoint(latest_checkpoint(tmp_path / n)) for n in "ab")
    for k, v in a.optimizer_state["state"][0].items():
        assert torch.equal(v, b.optimizer_state["state"][0][k])
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4, 6]


def test_rerun_of_a_finished_run_does_nothing(tmp_path):
    cfg = small(out=str(tmp_path / "r"))
    first = train(cfg)
    again = train(cfg)
    assert again.steps.size == 0 and states_equal(first.ema_model, again.ema_model)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, damage):
    run = tmp_path / "r"
    train(small(out=str(run)))
    path = latest_checkpoint(run)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[-5] ^= 0xFF                              # inside the last tensor's bytes
    elif damage == "garbage":
        raw = bytearray(b"not a checkpoint at all" * 10)
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=path.name):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        train(small(out=str(run), steps=9))        # resuming refuses it too
    with pytest.raises(CheckpointError):
        load_run(run)


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    run = tmp_path / "r"
    train(small(out=str(run)))
    with pytest.raises(CheckpointError, match="hidden"):
        train(small(out=str(run), steps=9, model_overrides={**SMALL_MLP, "hidden": 16}))
    with pytest.raises(CheckpointError, match="lr"):
        train(small(out=str(run), steps=9, lr=1e-5))
    with pytest.raises(ConfigError, match="already at step 6"):
        train(small(out=str(run), steps=4))


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(tmp_path, 1, config={}, model_config={}, data={}, model=model,
                        ema_model=model, optimizer=None)
    assert list_checkpoints(tmp_path) == []


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = engine.l_simple

    def exploding(*args, **kwargs):        # the loss of step 7 (0-indexed) is NaN
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 8 else loss

    monkeypatch.setattr(engine, "l_simple", exploding)
    run = tmp_path / "r"
    with pytest.raises(TrainingError, match=r"NaN or inf at step 7.*step-00000006"):
        train(small(out=str(run), steps=12, checkpoint_every=3, log_every=4))
    assert [p.name for p in list_checkpoints(run)] == ["step-00000003.safetensors",
                                                        "step-00000006.safetensors"]
    ckpt = load_checkpoint(latest_checkpoint(run))
    assert all(v.isfinite().all() for v in ckpt.model_state.values())
