"""Released models (diffusion_lib.pretrained): manifests that catch a changed file, EMA-only
run folders that sample but refuse to resume, scores against a reference classifier
checked against numpy/scipy, the per-pixel histogram baseline, and the shipped MNIST
models of book/models/ (their manifests, their recorded figures, a short re-measurement).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from diffusion_lib.cli import main
from diffusion_lib.metrics import ClassifierConfig, FeatureClassifier, pixel_histogram_bpd
from diffusion_lib.pretrained import (
    ManifestError,
    export_ema_run,
    load_reference,
    read_manifest,
    save_reference,
    verify_manifest,
    write_manifest,
)
from diffusion_lib.training import (
    CheckpointError,
    TrainConfig,
    generate,
    load_checkpoint,
    load_run,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "book" / "models"


# ---------------------------------------------------------------- the per-pixel baseline

def test_pixel_histogram_bpd_matches_a_direct_count():
    rng = np.random.default_rng(0)
    train_u8 = rng.integers(0, 4, size=(50, 3, 2)).astype(np.uint8)      # few levels used
    test_u8 = rng.integers(0, 6, size=(7, 3, 2)).astype(np.uint8)        # some never seen
    total = 0.0
    for d in range(6):
        column = train_u8.reshape(50, -1)[:, d]
        for u in test_u8.reshape(7, -1)[:, d]:
            count = sum(1 for v in column if v == u)
            total += -np.log2((count + 0.5) / (50 + 256 * 0.5))
    assert pixel_histogram_bpd(train_u8, test_u8, alpha=0.5) == pytest.approx(total / 42, 1e-12)


def test_pixel_histogram_bpd_of_a_flat_histogram_is_8_bits():
    levels = np.arange(256, dtype=np.uint8)
    train_u8 = np.stack([np.roll(levels, k) for k in range(3)], 1)[:, :, None]   # (256, 3, 1)
    test_u8 = np.random.default_rng(1).integers(0, 256, size=(20, 3, 1)).astype(np.uint8)
    assert pixel_histogram_bpd(train_u8, test_u8) == pytest.approx(8.0, abs=1e-12)


@pytest.mark.parametrize("train_u8, test_u8", [
    (np.zeros((3, 4), np.float32), np.zeros((3, 4), np.uint8)),
    (np.zeros((3, 4), np.uint8), np.zeros((3, 5), np.uint8)),
    (np.zeros((3, 4), np.uint8), np.zeros((0, 4), np.uint8)),
])
def test_pixel_histogram_bpd_rejects_bad_input(train_u8, test_u8):
    with pytest.raises(ValueError, match="expected"):
        pixel_histogram_bpd(train_u8, test_u8)


# ---------------------------------------------------------------- manifests

def test_manifest_lists_every_file_and_catches_each_kind_of_damage(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"\x00" * 100)
    (tmp_path / "sub" / "b.txt").write_text("hello")
    written = write_manifest(tmp_path, {"name": "t", "quality": {"x": 1}})
    assert set(written["files"]) == {"a.bin", "sub/b.txt"}
    assert written["files"]["a.bin"]["bytes"] == 100 and written["total_bytes"] == 105
    assert verify_manifest(tmp_path)["quality"] == {"x": 1}

    (tmp_path / "a.bin").write_bytes(b"\x00" * 99 + b"\x01")              # same size, changed
    with pytest.raises(ManifestError, match="a.bin: SHA-256 differs"):
        verify_manifest(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"\x00" * 60)                         # truncated
    with pytest.raises(ManifestError, match="60 bytes, the manifest says 100"):
        verify_manifest(tmp_path)
    (tmp_path / "a.bin").unlink()
    with pytest.raises(ManifestError, match="a.bin is missing"):
        verify_manifest(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"\x00" * 100)
    verify_manifest(tmp_path)
    (tmp_path / "extra.txt").write_text("?")
    with pytest.raises(ManifestError, match="does not list: extra.txt"):
        verify_manifest(tmp_path)
    (tmp_path / "MANIFEST.json").write_text('{"format": "other"}')
    with pytest.raises(ManifestError, match="not a release manifest"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="no MANIFEST.json"):
        read_manifest(tmp_path / "sub")


# ---------------------------------------------------------------- EMA-only run folders

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("release")
    config = TrainConfig(dataset="8gaussians", out=str(tmp / "run"), steps=8, batch_size=32,
                         checkpoint_every=4, log_every=2, num_timesteps=50, progress=False,
                         conditional=True,
                         model_overrides={"hidden": 32, "depth": 2, "time_embed_dim": 16})
    train(config)
    export_ema_run(tmp / "run", tmp / "release")
    return tmp / "run", tmp / "release"


def test_an_exported_run_keeps_the_ema_weights_only_and_samples_the_same(exported):
    run_dir, release = exported
    source = load_checkpoint(sorted((run_dir / "checkpoints").iterdir())[-1])
    shipped = load_checkpoint(next((release / "checkpoints").iterdir()))
    assert shipped.model_state == {} and shipped.optimizer_state is None
    assert shipped.step == source.step == 8
    for name, tensor in source.ema_state.items():
        assert torch.equal(shipped.ema_state[name], tensor)
    config = json.loads((release / "config.json").read_text())
    assert config["out"] is None and config["data_dir"] is None and config["conditional"]
    assert (release / "metrics.jsonl").read_bytes() == (run_dir / "metrics.jsonl").read_bytes()
    a, b = load_run(run_dir), load_run(release)
    x_a = generate(a.model, a.schedule, (2,), 64, kind="points", seed=3)
    x_b = generate(b.model, b.schedule, (2,), 64, kind="points", seed=3)
    assert torch.equal(x_a, x_b)


def test_an_exported_run_refuses_raw_weights_and_resuming(exported, tmp_path, capsys):
    _, release = exported
    with pytest.raises(CheckpointError, match="EMA weights only"):
        load_run(release, use_ema=False)
    config = TrainConfig(dataset="8gaussians", out=str(release), steps=12, batch_size=32,
                         num_timesteps=50, progress=False, conditional=True,
                         model_overrides={"hidden": 32, "depth": 2, "time_embed_dim": 16})
    before = sorted(p.name for p in release.rglob("*"))
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(config)
    assert sorted(p.name for p in release.rglob("*")) == before
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(release), "--label", "3", "--num-samples", "5",
                 "--out", str(out), "--sampler", "ddim", "--steps", "5", "--no-progress"]) == 0
    assert np.load(out)["x"].shape == (5, 2)
    assert main(["sample", "--run", str(release), "--no-ema", "--num-samples", "5",
                 "--out", str(tmp_path / "t.npy"), "--no-progress"]) == 2
    assert "EMA weights only" in capsys.readouterr().err


# ---------------------------------------------------------------- scoring with a reference

def _frechet_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """FID's formula with scipy's general matrix square root (an independent computation)."""
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_reference_scores_match_numpy_and_survive_a_round_trip(tmp_path):
    torch.manual_seed(0)
    classifier = FeatureClassifier(ClassifierConfig(image_size=8, width=8, feature_dim=16,
                                                    num_classes=3)).eval()
    real = torch.rand(300, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        real_features = classifier.features(real).double()
    save_reference(tmp_path, classifier, real_features, floors={100: 0.5, 1000: 0.05})
    write_manifest(tmp_path, {"name": "test"})
    reference = load_reference(tmp_path)
    assert reference.floor(120) == 0.5 and reference.floor(700) == 0.05

    samples_u8 = np.random.default_rng(0).integers(0, 256, (200, 8, 8, 1)).astype(np.uint8)
    labels = np.random.default_rng(1).integers(0, 3, 200)
    report = reference.score(samples_u8, labels)
    x = torch.from_numpy(samples_u8).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        features = classifier.features(x).double().numpy()
        predicted = classifier(x).argmax(1).numpy()
    expected = _frechet_scipy(features, real_features.numpy())
    assert report["frechet_distance"] == pytest.approx(expected, rel=1e-6)
    assert report["class_accuracy"] == pytest.approx((predicted == labels).mean(), abs=1e-12)
    shares = np.bincount(predicted, minlength=3) / 200
    assert report["class_shares"] == pytest.approx(shares, abs=1e-4)
    for k in range(3):
        assert report["per_class_accuracy"][k] == pytest.approx(
            (predicted[labels == k] == k).mean(), abs=1e-4)
    assert reference.score(x, labels)["frechet_distance"] == pytest.approx(
        report["frechet_distance"], rel=1e-9)                               # floats == uint8

    with pytest.raises(ValueError, match="expected uint8 images"):
        reference.score(samples_u8[..., 0:1].repeat(3, -1))
    with pytest.raises(ValueError, match="labels: 5 for 200"):
        reference.score(samples_u8, labels[:5])
    (tmp_path / "classifier.safetensors").write_bytes(b"broken")
    with pytest.raises(ManifestError, match="classifier.safetensors"):
        load_reference(tmp_path)


# ---------------------------------------------------------------- the shipped MNIST models

shipped = pytest.mark.skipif(not (MODELS / "mnist" / "MANIFEST.json").is_file(),
                             reason="book/models/mnist not built yet (make pretrained)")


@shipped
def test_shipped_files_match_their_manifests_and_stay_small():
    for name in ("mnist", "mnist-classifier"):
        manifest = verify_manifest(MODELS / name)
        assert manifest["total_bytes"] < 4_000_000, (name, manifest["total_bytes"])
        assert manifest["library_version"] and manifest["command"]
        assert len(manifest["data"]["sha256"]) == 4
    classifier = read_manifest(MODELS / "mnist-classifier")
    assert classifier["quality"]["test_accuracy"] >= 0.99


@shipped
def test_shipped_model_meets_the_targets_it_records():
    q = read_manifest(MODELS / "mnist")["quality"]
    w = read_manifest(MODELS / "mnist")["default_guidance"]
    assert q[f"guidance_{w:g}"]["class_accuracy"] >= 0.95
    shares = q["unconditional"]["class_shares"]
    assert len(shares) == 10 and all(0.06 <= s <= 0.14 for s in shares), shares
    assert q["num_samples"] == 10_000
    assert q["unconditional"]["frechet_distance"] > q["unconditional"]["frechet_floor"]
    nn = q["nearest_training_distance"]
    assert nn["samples_median"] >= 0.9 * nn["test_median"]        # no copies of training digits
    bpd = q["bits_per_dim"]
    assert bpd["model"] < 0.5 * bpd["uniform"] and bpd["pixel_histogram"] < bpd["uniform"]


@shipped
def test_shipped_command_is_the_one_make_pretrained_runs():
    import importlib.util
    import shlex
    spec = importlib.util.spec_from_file_location("pretrained_bench",
                                                  ROOT / "bench" / "pretrained.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    command = read_manifest(MODELS / "mnist")["command"]
    assert command.startswith("python -m diffusion_lib " + shlex.join(bench.TRAIN_ARGS))
    config = json.loads((MODELS / "mnist" / "config.json").read_text())
    args = bench.TRAIN_ARGS
    for flag, field in (("--steps", "steps"), ("--batch-size", "batch_size"),
                        ("--lr", "lr"), ("--ema-decay", "ema_decay"), ("--seed", "seed")):
        assert float(args[args.index(flag) + 1]) == config[field], flag
    assert config["conditional"] and config["dataset"] == "mnist"
    assert "bench/pretrained.py all" in (ROOT / "Makefile").read_text()


@shipped
def test_evaluate_reproduces_the_shipped_model_figures(tmp_path, capsys):
    """A short re-measurement by `evaluate`: 100 samples, DDIM 10 steps, the default w."""
    manifest = read_manifest(MODELS / "mnist")
    w = manifest["default_guidance"]
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(MODELS / "mnist"), "--num-samples", "100",
                 "--steps", "10", "--guidance", str(w), "--json", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["sampler"] == "ddim" and result["sampler_steps"] == 10
    recorded = manifest["quality"]
    # 100 samples: a binomial standard error of at most 0.05; fewer DDIM steps cost a little
    measured = result[f"guidance_{w:g}"]["class_accuracy"]
    assert measured >= recorded[f"guidance_{w:g}"]["class_accuracy"] - 0.1, measured
    # every digit among 100 unlabelled samples, as among the 10,000 of the manifest
    assert min(result["unconditional"]["class_shares"]) > 0
    # the Frechet distance at n = 100 is biased upwards: above the manifest's at 10,000
    assert (result["unconditional"]["frechet_distance"]
            > recorded["unconditional"]["frechet_distance"])
    verify_manifest(MODELS / "mnist")                      # evaluate wrote nothing there
