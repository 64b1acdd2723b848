"""Class-conditional DDPMs end to end: labels in the data, conditional networks that leave the
unconditional ones alone, label dropout, checkpoints and exact resume with classes, a trained
conditional model that samples the class it is asked for, the metrics, and the command line."""

import json
import math
import struct

import numpy as np
import pytest
import torch
from conftest import gen

from diffusion_lib import TrainConfig, build_model, load_dataset, train
from diffusion_lib.cli import main
from diffusion_lib.data import DataError
from diffusion_lib.metrics import class_report, coverage, nearest_class
from diffusion_lib.models import build_model_from_dict, model_config_dict
from diffusion_lib.training import (
    ConfigError,
    engine,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_run,
)
from diffusion_lib.training import conditional as cond

SMALL_MLP = {"hidden": 32, "depth": 2, "time_embed_dim": 16}


def states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def images(n, h=6, w=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)


# ---------------------------------------------------------------- labels in the data

def test_npz_points_with_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 2))
    y = np.arange(30) % 3
    np.savez(tmp_path / "p.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "p.npz"))
    assert (ds.kind, ds.num_classes, ds.class_names) == ("points", 3, ("0", "1", "2"))
    assert ds.labels().dtype == torch.int64 and ds.labels().tolist() == y.tolist()
    batch, labels = ds.get_labelled_batch(4, 8, seed=2)
    indices = ds.batch_indices(4, 8, seed=2)
    assert torch.equal(batch, ds.get_batch(4, 8, seed=2))
    assert labels.tolist() == y[indices.numpy()].tolist()
    np.testing.assert_allclose(ds.to_output(batch), x[indices.numpy()], rtol=1e-5, atol=1e-5)


def test_npz_images_with_labels_and_unlabelled_data(tmp_path):
    np.savez(tmp_path / "i.npz", x=images(6), y=[1, 0, 1, 0, 1, 0])
    ds = load_dataset(str(tmp_path / "i.npz"))
    assert (ds.kind, ds.num_classes, ds.labels().tolist()) == ("images", 2, [1, 0, 1, 0, 1, 0])
    np.save(tmp_path / "p.npy", np.ones((4, 2)))
    for name in (str(tmp_path / "p.npy"), "swissroll"):
        unlabelled = load_dataset(name)
        assert unlabelled.labels() is None and unlabelled.num_classes is None
        with pytest.raises(DataError, match="no class labels"):
            unlabelled.get_labelled_batch(0, 2)


def test_image_folder_with_one_sub_folder_per_class(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for name, count in [("cat", 2), ("dog", 3)]:
        (tmp_path / name).mkdir()
        for i, a in enumerate(images(count, seed=count)):
            Image.fromarray(a).save(tmp_path / name / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert ds.class_names == ("cat", "dog") and ds.labels().tolist() == [0, 0, 1, 1, 1]
    from diffusion_lib.data.images import load_image_folder
    streamed = load_image_folder(tmp_path, max_in_memory_bytes=0)
    assert type(streamed).__name__ == "StreamedImages"
    assert torch.equal(streamed.labels(), ds.labels())
    Image.fromarray(images(1)[0]).save(tmp_path / "top.png")     # an image outside the classes
    assert load_dataset(str(tmp_path)).labels() is None


def test_toy_labels_are_the_mixture_component_and_the_half_circle():
    eight = load_dataset("8gaussians")
    x, y = eight.to_output(eight.all_data()), eight.labels().numpy()
    means = eight.mixture.means.numpy()                                 # (8, 2), data space
    assert (np.linalg.norm(x - means[y], axis=1) < 6 * 0.15).all()     # 6 std of its own bump
    assert np.bincount(y).min() > 0.12 * len(y) and eight.num_classes == 8
    moons = load_dataset("moons")
    x, y = moons.to_output(moons.all_data()), moons.labels().numpy()
    centre = np.array([[0.0, 0.0], [1.0, 0.5]])[y]                      # of its half circle
    assert np.median(np.abs(np.linalg.norm(x - centre, axis=1) - 1)) < 0.1
    assert moons.class_names == ("upper", "lower")
    for ds in (eight, moons):        # the labelled batch is get_batch's, with its labels
        batch, labels = ds.get_labelled_batch(3, 64, seed=5)
        assert torch.equal(batch, ds.get_batch(3, 64, seed=5)) and labels.shape == (64,)


def test_builtin_image_sets_name_their_classes(tmp_path):
    assert load_dataset("digits").class_names == tuple("0123456789")
    # an MNIST label file with a label outside 0..9
    raw = tmp_path / "mnist"
    raw.mkdir()
    (raw / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, 2, 2, 2)
                                                  + bytes(8))
    (raw / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 2) + bytes([3, 12]))
    with pytest.raises(DataError, match="label 12; expected classes 0..9"):
        load_dataset("mnist", data_dir=str(tmp_path))


@pytest.mark.parametrize("y, match", [
    (np.array([0.0, 1.0, 1.0, 0.0]), "found dtype float64; convert"),
    (np.array([0, -1, 1, 0]), "negative label -1"),
    (np.array([0, 1, 1]), r"found shape \(3,\)"),
    (np.array([[0, 1, 1, 0]]), r"found shape \(1, 4\)"),
    (np.array([0, 2, 2, 0]), "class 1 has no examples"),
    (np.array(["a", "b", "a", "b"]), "found dtype <U1"),
    (np.array([True, False, True, False]), "found dtype bool"),
])
def test_bad_labels_are_a_data_error_saying_what_was_expected(tmp_path, y, match):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 2)), y=y)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(str(tmp_path / "bad.npz"))
    assert "integer class labels 0..K-1" in str(info.value) or "no examples" in str(info.value)


# ---------------------------------------------------------------- conditional networks

@pytest.mark.parametrize("preset, emb_dim", [("mlp", 128), ("tiny", 32), ("digits", 128),
                                             ("ddpm-mnist", 256)])
def test_conditional_networks_add_one_embedding_table_and_leave_the_rest(preset, emb_dim):
    plain, again = build_model(preset), build_model(preset, num_classes=0)
    conditional = build_model(preset, num_classes=10)
    keys = list(plain.state_dict())
    assert list(again.state_dict()) == keys and "num_classes" not in model_config_dict(plain)
    assert list(conditional.state_dict()) == keys + ["class_embed.table.weight"]
    assert conditional.class_embed.table.weight.shape == (11, emb_dim)   # 10 classes + none
    count = sum(p.numel() for p in plain.parameters())
    assert sum(p.numel() for p in conditional.parameters()) == count + 11 * emb_dim
    d = json.loads(json.dumps(model_config_dict(conditional)))
    assert d["num_classes"] == 10 and build_model_from_dict(d).num_classes == 10


@pytest.mark.parametrize("preset, shape", [("mlp", (4, 2)), ("tiny", (4, 1, 8, 8))])
def test_labels_steer_the_output_sample_by_sample(preset, shape):
    model = build_model(preset, num_classes=3).eval()
    with torch.no_grad():
        for p in model.parameters():                     # fresh U-Nets output exactly 0
            p.add_(0.1 * torch.randn(p.shape, generator=gen(1)))
        x, t = torch.randn(shape, generator=gen(2)), torch.tensor([10, 200, 500, 900])
        y = torch.tensor([0, 1, 2, 3])
        out = model(x, t, y)
        assert torch.equal(model(x, t), model(x, t, torch.full((4,), 3)))    # None = no class
        for i in range(4):
            other = y.clone()
            other[i] = (y[i] + 1) % 4
            changed = model(x, t, other)
            assert not torch.allclose(changed[i], out[i])
            keep = torch.arange(4) != i
            assert torch.allclose(changed[keep], out[keep], atol=1e-6)


@pytest.mark.parametrize("preset", ["mlp", "tiny"])
def test_bad_label_inputs(preset):
    x = torch.randn(2, 2) if preset == "mlp" else torch.randn(2, 1, 8, 8)
    t = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="unconditional"):
        build_model(preset)(x, t, torch.tensor([0, 1]))
    model = build_model(preset, num_classes=3)
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(2,\)"):
        model(x, t, torch.tensor([0]))
    with pytest.raises(ValueError, match="integer class labels"):
        model(x, t, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_classes must be an int >= 0"):
        build_model(preset, num_classes=-1)


# ---------------------------------------------------------------- training

def test_label_dropout_rate_and_kept_labels():
    y = torch.randint(0, 5, (200_000,), generator=gen(3))
    dropped = cond.drop_labels(y, 0.1, 5, gen(4))
    is_null = dropped == 5
    share, se = is_null.double().mean().item(), math.sqrt(0.1 * 0.9 / len(y))
    assert abs(share - 0.1) < 5 * se
    assert torch.equal(dropped[~is_null], y[~is_null])
    assert torch.equal(cond.drop_labels(y, 0.0, 5, gen(4)), y)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        cond.drop_labels(y, 1.0, 5)


def small(dataset="8gaussians", **kw):
    base = dict(dataset=dataset, steps=6, batch_size=32, checkpoint_every=3, log_every=2,
                num_timesteps=50, progress=False, conditional=True)
    if dataset in ("8gaussians", "moons", "swissroll"):
        base["model_overrides"] = dict(SMALL_MLP)
    else:
        base["model"] = "tiny"
    base.update(kw)
    return TrainConfig(**base)


def test_a_conditional_runs_previews_show_every_class(tmp_path, monkeypatch):
    """num_preview samples shared out over the K classes, drawn with each class's label."""
    from diffusion_lib.training import engine
    seen = []
    real = engine.generate_per_class

    def spy(model, schedule, shape, per_class, labels, **kwargs):
        seen.append((per_class, list(labels), kwargs.get("guidance_scale", 0.0)))
        return real(model, schedule, shape, per_class, labels, **kwargs)
    monkeypatch.setattr(engine, "generate_per_class", spy)
    train(small("digits", out=str(tmp_path / "run"), steps=2, num_preview=20,
                preview_steps=3))
    assert seen == [(2, list(range(10)), 0.0)]                  # 20 // 10 classes, w = 0
    assert (tmp_path / "run" / "samples" / "step-00000002.png").stat().st_size > 1000


def test_training_drops_labels_at_the_configured_rate(monkeypatch):
    seen = []

    def spy(y, p_uncond, num_classes, generator):
        out = cond.drop_labels(y, p_uncond, num_classes, generator)
        seen.append((p_uncond, num_classes, y.clone(), out))
        return out
    monkeypatch.setattr(engine, "drop_labels", spy)
    train(small(p_uncond=0.25, steps=40, batch_size=256))
    assert len(seen) == 40 and all(s[:2] == (0.25, 8) for s in seen)
    dropped = torch.cat([s[3] == 8 for s in seen]).double()
    assert abs(dropped.mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / len(dropped))


def test_checkpoint_records_the_classes_and_round_trips(tmp_path):
    result = train(small(out=str(tmp_path / "run")))
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert ckpt.data["num_classes"] == 8 and ckpt.data["class_names"] == [str(k) for k in range(8)]
    assert ckpt.model_config["num_classes"] == 8 and ckpt.config["conditional"] is True
    run = load_run(tmp_path / "run")
    assert run.model.num_classes == 8 and states_equal(run.model, result.ema_model)
    # an unconditional run records no classes
    plain = train(small(out=str(tmp_path / "plain"), conditional=False))
    assert "num_classes" not in load_checkpoint(latest_checkpoint(tmp_path / "plain")).data
    assert plain.model.num_classes == 0


@pytest.mark.parametrize("dataset, overrides", [("8gaussians", {"dropout": 0.2}),
                                                 ("digits", {"dropout": 0.2})])
def test_conditional_resume_is_bitwise_equal_to_uninterrupted(tmp_path, dataset, overrides):
    cfg = small(dataset)
    cfg.model_overrides = {**cfg.model_overrides, **overrides}
    whole = train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "a")}))
    train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "b"), "steps": 3}))
    resumed = train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "b")}))
    assert resumed.steps.tolist() == [3, 4, 5]
    assert states_equal(whole.model, resumed.model)
    assert states_equal(whole.ema_model, resumed.ema_model)
    assert np.array_equal(whole.losses[3:], resumed.losses)


def test_runs_saved_before_conditioning_existed_still_resume(tmp_path):
    cfg = small(conditional=False, out=str(tmp_path / "r"))
    train(cfg)
    saved = {k: v for k, v in load_checkpoint(latest_checkpoint(tmp_path / "r")).config.items()
             if k not in ("conditional", "p_uncond")}                  # an older run's config
    resolved = engine.resolve_config(cfg, load_dataset("8gaussians"))
    engine.check_resumable(saved, resolved, tmp_path / "r")           # no error
    with pytest.raises(ValueError, match="conditional: False saved, True now"):
        engine.check_resumable(saved, engine.resolve_config(
            TrainConfig(**{**cfg.__dict__, "conditional": True}), load_dataset("8gaussians")),
            tmp_path / "r")


@pytest.mark.parametrize("kw, match", [
    (dict(dataset="swissroll"), "needs class labels"),
    (dict(model_overrides={**SMALL_MLP, "num_classes": 3}), "conditional=True"),
    (dict(p_uncond=1.0), r"p_uncond must be a number in \[0, 1\)"),
    (dict(p_uncond=-0.1), "p_uncond"),
    (dict(conditional="yes"), "conditional must be True or False"),
])
def test_bad_conditional_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        train(small(**kw))


@pytest.mark.slow
def test_trained_conditional_mlp_samples_the_requested_class():
    """The issue's bar: >= 95% of class-k samples nearer to fresh class-k data than to any
    other class's (1-nearest-neighbour on fresh draws), for every class."""
    result = train(TrainConfig(dataset="moons", conditional=True, steps=800, batch_size=256,
                               progress=False))
    fresh = load_dataset("moons", split="test", seed=1)
    reference, reference_labels = fresh.get_labelled_batch(0, 4000, seed=1)
    shares = []
    for k in range(2):
        x = result.sample(300, label=k, seed=k)                              # DDPM, data space
        predicted = nearest_class(x, fresh.to_output(reference), reference_labels)
        shares.append(float((predicted == k).double().mean()))
    print("share of each class's samples on that class:", shares)
    assert min(shares) >= 0.95, shares
    x = result.sample(300, seed=2)                             # no label: both half circles
    predicted = nearest_class(x, fresh.to_output(reference), reference_labels)
    assert 0.35 < float(predicted.double().mean()) < 0.65


# ---------------------------------------------------------------- metrics

def test_nearest_class_and_coverage_by_hand():
    reference = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
    labels = torch.tensor([2, 0, 1])
    x = torch.tensor([[0.4, 0.1], [0.6, -0.1], [4.0, 4.0]])
    assert nearest_class(x, reference, labels).tolist() == [2, 0, 1]
    # coverage, k = 1: a reference point is covered if a sample lies within its distance to
    # its nearest other reference point (1, 1 and ~6.4 here)
    assert coverage(torch.tensor([[0.0, 0.5]]), reference, k=1) == pytest.approx(1 / 3)
    assert coverage(torch.tensor([[0.5, 0.0], [5.0, 4.0]]), reference, k=1) == 1.0
    # two samples of one law: about 1 - 2^-5 = 0.97 at k = 5 (Naeem et al. 2020)
    a, b = torch.randn(2000, 2, generator=gen(5)), torch.randn(2000, 2, generator=gen(6))
    assert 0.94 < coverage(a, b) < 0.99
    assert coverage(a[a[:, 0] > 0], b) < 0.6                         # half the law: uncovered


def test_class_report_of_exact_samples_of_a_toy():
    fresh = load_dataset("8gaussians", split="test", seed=7)
    x, y = fresh.get_labelled_batch(0, 4000, seed=7)
    report = class_report(fresh.to_output(x), y, load_dataset("8gaussians"))
    assert report["class_hit_rate"] > 0.99 and len(report["per_class_hit_rate"]) == 8
    assert all(0.8 < r < 1.25 for r in report["per_class_nn_ratio"])
    assert all(c > 0.9 for c in report["per_class_coverage"])
    swapped = (y + 1) % 8                                           # every label wrong
    assert class_report(fresh.to_output(x), swapped, fresh)["class_hit_rate"] < 0.01


# ---------------------------------------------------------------- command line

TINY = ["--model-override", "hidden=32", "--model-override", "depth=1",
        "--model-override", "time_embed_dim=16", "--num-timesteps", "40", "--batch-size", "64",
        "--no-progress", "--sample-every", "0"]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cond") / "run"
    assert main(["train", "--dataset", "moons", "--conditional", "--p-uncond", "0.2", "--out",
                 str(run), "--steps", "4", *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["p_uncond"] == 0.2
    return run


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("plain") / "run"
    assert main(["train", "--dataset", "moons", "--out", str(run), "--steps", "2", *TINY]) == 0
    return run


def test_sample_classes_from_the_command_line(conditional_run, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(conditional_run), "--label", "all", "--num-samples", "5",
                 "--guidance", "2", "--out", str(out), "--no-progress"]) == 0
    saved = np.load(out)
    assert saved["x"].shape == (10, 2) and saved["y"].tolist() == [0] * 5 + [1] * 5
    assert main(["sample", "--run", str(conditional_run), "--label", "lower", "--label", "0",
                 "--num-samples", "3", "--out", str(tmp_path / "s.npy"), "--no-progress"]) == 0
    assert np.load(tmp_path / "s.npy").shape == (6, 2)
    assert main(["sample", "--run", str(conditional_run), "--label", "1", "--num-samples", "20",
                 "--out", str(tmp_path / "s.png"), "--no-progress"]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert "of class lower" in capsys.readouterr().out
    assert main(["sample", "--run", str(conditional_run), "--num-samples", "4", "--out",
                 str(tmp_path / "u.npy"), "--no-progress"]) == 0            # no label
    assert np.load(tmp_path / "u.npy").shape == (4, 2)


def test_evaluate_reports_each_class(conditional_run, tmp_path, capsys):
    path = tmp_path / "e.json"
    assert main(["evaluate", "--run", str(conditional_run), "--num-samples", "60", "--json",
                 str(path), "--guidance", "1", "--sampler", "ddim", "--steps", "5",
                 "--no-progress"]) == 0
    report = json.loads(path.read_text())
    assert report["class_names"] == ["upper", "lower"] and report["guidance"] == 1.0
    assert len(report["per_class_hit_rate"]) == 2 and 0 <= report["class_hit_rate"] <= 1
    assert len(report["per_class_nn_ratio"]) == 2 and "nn_ratio" in report
    assert "per_class_hit_rate" in capsys.readouterr().out


def test_class_grid_of_images(tmp_path):
    run = tmp_path / "digits"
    assert main(["train", "--dataset", "digits", "--conditional", "--out", str(run), "--model",
                 "tiny", "--steps", "2", "--batch-size", "4", "--num-timesteps", "20",
                 "--sample-every", "0", "--no-progress"]) == 0
    out = tmp_path / "grid.png"
    assert main(["sample", "--run", str(run), "--label", "all", "--num-samples", "2", "--out",
                 str(out), "--guidance", "3", "--sampler", "ddim", "--steps", "5",
                 "--no-progress"]) == 0
    from PIL import Image
    with Image.open(out) as picture:
        assert picture.size[1] > 200                      # ten rows of digits, one per class
    path = tmp_path / "e.json"                            # per class: the feature classifier
    assert main(["evaluate", "--run", str(run), "--num-samples", "30", "--json", str(path),
                 "--sampler", "ddim", "--steps", "3", "--no-progress"]) == 0
    report = json.loads(path.read_text())
    assert report["class_names"] == list("0123456789")
    assert len(report["per_class_hit_rate"]) == len(report["per_class_frechet_ratio"]) == 10


def cli_mistakes(tmp, conditional, plain):
    sample = ["sample", "--num-samples", "2", "--out", str(tmp / "x.npy")]
    np.savez(tmp / "gap.npz", x=np.zeros((4, 2)), y=np.array([0, 2, 2, 0]))
    return {
        "label on an unconditional run": ([*sample, "--run", str(plain), "--label", "0"],
                                          "unconditional run"),
        "guidance on an unconditional run": ([*sample, "--run", str(plain), "--label", "0",
                                              "--guidance", "2"], "unconditional run"),
        "guidance on an unconditional evaluate": (["evaluate", "--run", str(plain), "--guidance",
                                                   "1", "--json", str(tmp / "e.json")],
                                                  "unconditional run"),
        "label out of range": ([*sample, "--run", str(conditional), "--label", "2"],
                               "--label 2: not a class of this run; expected 0..1"),
        "label negative": ([*sample, "--run", str(conditional), "--label", "-1"],
                           "not a class of this run"),
        "unknown class name": ([*sample, "--run", str(conditional), "--label", "middle"],
                               "(upper, lower)"),
        "guidance without label": ([*sample, "--run", str(conditional), "--guidance", "2"],
                                   "--guidance needs --label"),
        "guidance negative": ([*sample, "--run", str(conditional), "--label", "0", "--guidance",
                               "-1"], "--guidance"),
        "guidance nan": ([*sample, "--run", str(conditional), "--label", "0", "--guidance",
                          "nan"], "--guidance"),
        "conditional on unlabelled data": (["train", "--dataset", "swissroll", "--conditional",
                                            "--out", str(tmp / "new")], "needs class labels"),
        "labels with a gap": (["train", "--dataset", str(tmp / "gap.npz"), "--conditional",
                               "--out", str(tmp / "new")], "class 1 has no examples"),
        "p-uncond without conditional": (["train", "--dataset", "moons", "--p-uncond", "0.2",
                                          "--out", str(tmp / "new")], "--conditional"),
        "p-uncond 1": (["train", "--dataset", "moons", "--conditional", "--p-uncond", "1",
                        "--out", str(tmp / "new")], "p_uncond"),
        "resume without --conditional": (["train", "--dataset", "moons", "--out",
                                          str(conditional), "--steps", "4", *TINY],
                                         "conditional: True saved, False now"),
    }


CLI_MISTAKES = ["label on an unconditional run", "guidance on an unconditional run",
                "guidance on an unconditional evaluate", "label out of range", "label negative",
                "unknown class name", "guidance without label", "guidance negative",
                "guidance nan", "conditional on unlabelled data", "labels with a gap",
                "p-uncond without conditional", "p-uncond 1", "resume without --conditional"]


def test_the_conditional_catalogue_is_complete(tmp_path):
    assert sorted(cli_mistakes(tmp_path, tmp_path, tmp_path)) == sorted(CLI_MISTAKES)


@pytest.mark.parametrize("case", CLI_MISTAKES)
def test_conditional_mistakes_exit_2_with_one_line(case, conditional_run, plain_run, tmp_path,
                                                   capsys):
    argv, expected = cli_mistakes(tmp_path, conditional_run, plain_run)[case]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    runs_before = [sorted(p.name for p in r.rglob("*")) for r in (conditional_run, plain_run)]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before          # nothing written
    assert [sorted(p.name for p in r.rglob("*")) for r in (conditional_run, plain_run)] == \
        runs_before
    assert list_checkpoints(conditional_run)[-1].name == "step-00000004.safetensors"


@pytest.mark.slow
def test_conditional_training_on_two_processes_resumes_exactly(tmp_path):
    """DDP (two CPU processes, gloo) with labels: stopped and resumed, a run ends with the
    weights of one never stopped, as the unconditional runs of test_distributed do."""
    import os
    import socket
    import subprocess
    import sys

    def torchrun(out, steps):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if sys.platform.startswith("linux"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                            "--master_addr=127.0.0.1", f"--master_port={port}", "-m",
                            "diffusion_lib", "train", "--dataset", "moons", "--conditional",
                            "--out", str(out), "--steps", str(steps), "--checkpoint-every", "3",
                            "--device", "cpu", *TINY], capture_output=True, text=True, env=env,
                           timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    torchrun(tmp_path / "a", 6)
    torchrun(tmp_path / "b", 3)
    torchrun(tmp_path / "b", 6)
    a, b = (load_checkpoint(latest_checkpoint(tmp_path / n)) for n in "ab")
    assert a.step == b.step == 6 and a.data["num_classes"] == 2
    for part in ("model_state", "ema_state"):
        first, second = getattr(a, part), getattr(b, part)
        assert all(torch.equal(first[k], second[k]) for k in first)
