"""The health check (diffusion_lib.diagnose, ``evaluate --check``): each failure of chapter
10's clinic, planted in a small run, is named; a healthy run raises no alarm; bad folders
are refused with one line and exit code 2."""

import json

import numpy as np
import pytest
import torch

from diffusion_lib.cli import main
from diffusion_lib.diagnose import (
    REFERENCE_LOSS,
    check_run,
    ema_early_weight,
    loss_findings,
    read_loss_curve,
)
from diffusion_lib.diagnose_samples import memorisation_ratio
from diffusion_lib.training import DATASET_DEFAULTS, EMA, TrainConfig, train

TINY = dict(hidden=32, depth=1, time_embed_dim=16)


def names(findings, severity=("warning", "problem")):
    return {f.name for f in findings if f.severity in severity}


def plant(folder, *, dataset="swissroll", curve=None, **settings):
    """A run folder without training: config.json (the points defaults, changed by
    ``settings``) and metrics.jsonl holding ``curve`` (a function of the step)."""
    folder.mkdir(parents=True)
    cfg = {**TrainConfig(dataset=dataset).to_dict(), **DATASET_DEFAULTS["points"],
           "dataset": dataset, **settings}
    (folder / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    rows = [{"step": s, "loss": curve(s) + 0.001 * rng.standard_normal()}
            for s in range(cfg["log_every"], cfg["steps"] + 1, cfg["log_every"])]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def healthy(step):
    """A swiss-roll curve like the default run's: fast fall, then flat within the band."""
    return REFERENCE_LOSS["swissroll"][0] * 1.03 + 0.15 * np.exp(-step / 150)


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory):
    """A healthy run: 2000 points of a 2-D Gaussian, a tiny MLP, 600 steps (seconds)."""
    tmp = tmp_path_factory.mktemp("blob")
    rng = np.random.default_rng(0)
    np.save(tmp / "blob.npy", rng.normal(size=(2000, 2)) * [1.0, 0.5] + [3.0, -1.0])
    train(TrainConfig(dataset=str(tmp / "blob.npy"), out=str(tmp / "run"), steps=600,
                      batch_size=128, model_overrides=TINY, log_every=25,
                      sample_every=0, progress=False))
    return tmp / "run"


def test_a_healthy_run_raises_no_alarm(blob_run):
    findings = check_run(blob_run, num_samples=200)
    assert names(findings) == set(), [f for f in findings if f.severity != "ok"]
    assert {"loss_rising", "ema_too_slow", "data_range", "samples_vs_data",
            "memorisation"} <= names(findings, ("ok",))


def test_too_few_ddim_steps_are_told_apart_from_a_bad_network(blob_run):
    findings = check_run(blob_run, num_samples=200, sampler="ddim", steps=1)
    assert "sampler_too_coarse" in names(findings)
    assert "samples_vs_data" not in names(findings)


def test_an_undertrained_network_is_named(tmp_path, blob_run):
    train(TrainConfig(dataset=str(blob_run.parent / "blob.npy"), out=str(tmp_path / "r"),
                      steps=3, batch_size=128, model_overrides=TINY, log_every=1,
                      sample_every=0, progress=False))
    found = names(check_run(tmp_path / "r", num_samples=200))
    assert "samples_vs_data" in found


def test_memorisation_of_a_tiny_dataset_is_named(tmp_path):
    np.save(tmp_path / "six.npy", np.random.default_rng(0).normal(size=(6, 2)))
    train(TrainConfig(dataset=str(tmp_path / "six.npy"), out=str(tmp_path / "r"),
                      steps=2000, model_overrides=dict(hidden=64, depth=2, time_embed_dim=32),
                      log_every=25, sample_every=0, progress=False))
    findings = check_run(tmp_path / "r", num_samples=200)
    assert "memorisation" in names(findings)
    # the loss of batches of 6 is noisy: that alone is no trend
    assert not names(findings) & {"loss_rising", "loss_still_falling"}


def test_a_planted_healthy_curve_raises_no_alarm(tmp_path):
    found = check_run(plant(tmp_path / "r", curve=healthy))
    assert names(found) == {"samples"}      # only: no checkpoint to sample from


def test_a_learning_rate_too_high(tmp_path):
    def rises(step):                       # falls to the band, then climbs back by 60%
        return healthy(step) * (1 + 0.6 * max(0.0, step - 1000) / 2000)
    found = names(check_run(plant(tmp_path / "r", curve=rises, lr=0.1)))
    assert {"loss_rising", "lr_too_high", "loss_above_band"} <= found


def test_a_learning_rate_too_low(tmp_path):
    def slow(step):
        return 0.3 + 0.5 * np.exp(-step / 2000)
    found = names(check_run(plant(tmp_path / "r", curve=slow, lr=5e-5)))
    assert {"loss_still_falling", "lr_too_low", "loss_above_band"} <= found
    assert "loss_rising" not in found


def test_a_loss_above_the_band(tmp_path):
    found = names(check_run(plant(tmp_path / "r", curve=lambda s: 1.5 * healthy(s))))
    assert "loss_above_band" in found and "loss_rising" not in found


def test_an_ema_too_slow_for_the_run(tmp_path):
    found = names(check_run(plant(tmp_path / "r", curve=healthy, ema_decay=0.9999,
                                  ema_warmup=False)))
    assert "ema_too_slow" in found
    # the warm-up rescues the same decay: min(d, (1 + k) / (10 + k)) follows the run
    found = names(check_run(plant(tmp_path / "w", curve=healthy, ema_decay=0.9999)))
    assert "ema_too_slow" not in found


def test_no_ema_with_a_flat_learning_rate(tmp_path):
    found = names(check_run(plant(tmp_path / "r", curve=healthy, ema_decay=0.0,
                                  lr_decay="none")))
    assert "no_ema" in found


def test_images_in_0_1_saved_as_uint8(tmp_path):
    digits = np.random.default_rng(0).integers(0, 2, size=(50, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "binary.npy", digits)                  # 0/1, not 0/255
    found = names(check_run(plant(tmp_path / "r", dataset=str(tmp_path / "binary.npy"),
                                  curve=healthy, model="tiny")))
    assert "data_range" in found
    np.save(tmp_path / "full.npy", digits * 255)
    found = names(check_run(plant(tmp_path / "f", dataset=str(tmp_path / "full.npy"),
                                  curve=healthy, model="tiny")))
    assert "data_range" not in found


@pytest.mark.parametrize("steps, decay, warmup", [(3000, 0.9999, False), (3000, 0.995, True),
                                                  (200, 0.99, False), (1001, 0.999, True)])
def test_ema_early_weight_matches_an_ema_run(steps, decay, warmup):
    """The formula against the EMA class itself: a weight equal to 1 up to half-way (and
    at the initialisation) and 0 after; the EMA's value is the weight on the first half."""
    net = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = EMA(net, decay, warmup)
    for k in range(steps):
        with torch.no_grad():
            net.weight.fill_(1.0 if k < steps // 2 else 0.0)
        ema.update(net, k)
    assert ema_early_weight(steps, decay, warmup) == pytest.approx(
        float(ema.model.weight), rel=1e-9, abs=1e-12)


def test_memorisation_ratio_of_fresh_data_and_of_copies():
    g = torch.Generator().manual_seed(0)
    train_points = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    fresh = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    assert 0.85 < memorisation_ratio(fresh, train_points) < 1.15
    copies = train_points[torch.randint(0, 1000, (500,), generator=g)]
    copies = copies + 1e-3 * torch.randn(copies.shape, generator=g, dtype=torch.float64)
    assert memorisation_ratio(copies, train_points) < 0.05


def test_reference_bands_are_ordered():
    assert set(REFERENCE_LOSS) >= {"swissroll", "8gaussians", "moons", "checkerboard",
                                   "digits"}
    assert all(0 < low < high < 1 for low, high in REFERENCE_LOSS.values())


def test_the_digits_band_names_a_short_run_and_passes_a_finished_curve(tmp_path):
    """A real 40-step digits run (the default U-Net) ends far above the digits band; a
    curve that settles where the default 2000-step runs ended (0.080-0.083) does not."""
    train(TrainConfig(dataset="digits", out=str(tmp_path / "short"), steps=40,
                      log_every=4, sample_every=0, progress=False))
    cfg = json.loads((tmp_path / "short" / "config.json").read_text())
    short = {f.name: f for f in loss_findings(*read_loss_curve(tmp_path / "short"), cfg)}
    assert short["loss_above_band"].severity == "problem"
    assert short["loss_above_band"].measured["final_loss"] > REFERENCE_LOSS["digits"][1]
    steps = np.arange(50, 2001, 50)
    settled = 0.081 + 0.3 * np.exp(-steps / 100)
    done = {f.name: f for f in loss_findings(steps, settled, cfg)}
    assert done["loss_above_band"].severity == "ok"
    assert "digits band" in done["loss_above_band"].summary


def test_evaluate_check_prints_and_writes_json(blob_run, tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["evaluate", "--run", str(blob_run), "--check", "--num-samples", "100",
                 "--sampler", "ddim", "--steps", "1", "--json", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "PROBLEM] sampler_too_coarse" in printed and "fix:" in printed
    report = json.loads(out.read_text())
    assert "sampler_too_coarse" in report["problems"]
    assert {f["name"] for f in report["findings"]} >= {"loss_rising", "memorisation"}
    assert main(["evaluate", "--run", str(blob_run), "--check", "--num-samples", "100",
                 "--no-progress"]) == 0
    assert json.loads((blob_run / "check.json").read_text())["problems"] == []


@pytest.mark.parametrize("what, expected", [("missing", "no such run folder"),
                                            ("empty", "not a run folder")])
def test_evaluate_check_of_a_bad_folder_exits_2_with_one_line(what, expected, tmp_path,
                                                              capsys):
    folder = tmp_path / what
    if what == "empty":
        folder.mkdir()
    before = sorted(tmp_path.rglob("*"))
    assert main(["evaluate", "--run", str(folder), "--check"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert sorted(tmp_path.rglob("*")) == before
