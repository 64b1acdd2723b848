"""``python -m diffusion_lib``: train -> sample -> evaluate end to end, and every user
mistake answered with one line on stderr, exit code 2, and nothing written."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from diffusion_lib.cli import main
from diffusion_lib.training import list_checkpoints

TINY_TOY = ["--model-override", "hidden=32", "--model-override", "depth=1",
            "--model-override", "time_embed_dim=16", "--num-timesteps", "40",
            "--batch-size", "64", "--no-progress"]


def run_cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "diffusion_lib", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.slow
def test_train_sample_evaluate_end_to_end(tmp_path, capsys):
    """The real command (two subprocesses), with the steps between run in-process to save time."""
    run = tmp_path / "run"
    train = ["train", "--dataset", "swissroll", "--out", str(run), "--steps", "20",
             "--checkpoint-every", "10", "--sample-every", "20", "--num-preview", "100", *TINY_TOY]
    p = run_cli(*train)
    assert p.returncode == 0, p.stderr
    assert "trained swissroll to step 20" in p.stdout
    assert [c.name for c in list_checkpoints(run)] == ["step-00000010.safetensors",
                                                        "step-00000020.safetensors"]
    assert (run / "samples" / "step-00000020.png").is_file()
    assert json.loads((run / "config.json").read_text())["steps"] == 20

    # the same command again resumes, here to a later step
    assert main([*train[:5], "--steps", "30", *train[7:]]) == 0
    assert "resuming" in capsys.readouterr().err
    assert list_checkpoints(run)[-1].name == "step-00000030.safetensors"

    p = run_cli("sample", "--run", run, "--num-samples", "50", "--out", tmp_path / "s.npy",
                "--no-progress")
    assert p.returncode == 0, p.stderr
    points = np.load(tmp_path / "s.npy")
    assert points.shape == (50, 2) and points.dtype == np.float32 and np.isfinite(points).all()
    assert 1 < np.abs(points).max() < 100          # data space (the swiss roll spans ~ +-12)

    assert main(["sample", "--run", str(run), "--num-samples", "50", "--out",
                 str(tmp_path / "s.png"), "--sampler", "ddim", "--steps", "10",
                 "--no-progress"]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"

    pytest.importorskip("diffusion_lib.metrics")
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--num-samples", "200", "--sampler", "ddim",
                 "--steps", "10", "--no-progress"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["step"] == 30 and report["num_samples"] == 200
    assert report["energy_distance"] > 0 and report["nn_ratio"] > 0
    assert "energy_distance" in capsys.readouterr().out


def test_images_train_and_sample_in_process(tmp_path, capsys):
    run = tmp_path / "digits"
    assert main(["train", "--dataset", "digits", "--out", str(run), "--model", "tiny",
                 "--steps", "2", "--batch-size", "4", "--num-timesteps", "20", "--sample-every",
                 "2", "--num-preview", "4", "--no-progress"]) == 0
    assert (run / "samples" / "step-00000002.png").is_file()
    out = tmp_path / "d.npy"
    assert main(["sample", "--run", str(run), "--num-samples", "3", "--out", str(out),
                 "--no-progress", "--no-ema"]) == 0
    images = np.load(out)
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8
    assert "wrote 3 samples" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--dataset", "swissroll", "--out", str(run), "--steps", "2",
                 *TINY_TOY]) == 0
    return run


def error_cases(tmp, run):
    a_file = tmp / "a_file.txt"
    a_file.write_text("x")
    empty_run = tmp / "empty_run"
    empty_run.mkdir(exist_ok=True)
    new = str(tmp / "new_run")
    train = ["train", "--dataset", "swissroll", "--out", new]
    np.save(tmp / "ten.npy", np.random.default_rng(0).normal(size=(10, 2)))
    np.save(tmp / "nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0]]))
    broken = tmp / "broken_run" / "checkpoints"           # a truncated checkpoint
    broken.mkdir(parents=True, exist_ok=True)
    raw = list_checkpoints(run)[-1].read_bytes()
    (broken / "step-00000002.safetensors").write_bytes(raw[:len(raw) // 2])
    planted = tmp / "planted_run" / "checkpoints"         # a pickle under a checkpoint's name
    planted.mkdir(parents=True, exist_ok=True)
    (planted / "step-00000002.safetensors").write_bytes(pickle.dumps({"step": 2}, protocol=4))
    (tmp / "folder.npy").mkdir(exist_ok=True)
    sample = ["sample", "--run", str(run), "--num-samples", "2", "--out", str(tmp / "x.npy")]
    return {
        "unknown dataset": (["train", "--dataset", "nope", "--out", new], "unknown dataset"),
        "missing file": (["train", "--dataset", str(tmp / "missing.npy"), "--out", new],
                         "no such file"),
        "steps 0": ([*train, "--steps", "0"], "--steps"),
        "steps negative": ([*train, "--steps", "-3"], "--steps"),
        "batch size 0": ([*train, "--batch-size", "0"], "--batch-size"),
        "lr negative": ([*train, "--lr", "-1e-3"], "--lr"),
        "not a number": ([*train, "--lr", "fast"], "--lr"),
        "unknown preset": ([*train, "--model", "resnet9000"], "unknown model preset"),
        "preset for images": ([*train, "--model", "tiny"], "images"),
        "bf16 on cpu": ([*train, "--precision", "bf16", "--device", "cpu"], "bf16"),
        "unknown device": ([*train, "--device", "tpu"], "device"),
        "out under a file": (["train", "--dataset", "swissroll", "--out", str(a_file / "run")],
                             "not a folder"),
        "out is a file": (["train", "--dataset", "swissroll", "--out", str(a_file)], "file"),
        "unknown command": (["fly"], "invalid choice"),
        "sample without checkpoint": (["sample", "--run", str(empty_run), "--num-samples", "2",
                                       "--out", str(tmp / "x.npy")], "no checkpoint"),
        "sample missing run": (["sample", "--run", str(tmp / "nowhere"), "--num-samples", "2",
                                "--out", str(tmp / "x.npy")], "no such run folder"),
        "evaluate without checkpoint": (["evaluate", "--run", str(empty_run)], "no checkpoint"),
        "ddim steps > T": (["sample", "--run", str(run), "--num-samples", "2", "--out",
                            str(tmp / "x.npy"), "--sampler", "ddim", "--steps", "5000"], "T = 40"),
        "steps without ddim": (["sample", "--run", str(run), "--num-samples", "2", "--out",
                                str(tmp / "x.npy"), "--steps", "5"], "ddim"),
        "num samples 0": (["sample", "--run", str(run), "--num-samples", "0", "--out",
                           str(tmp / "x.npy")], "--num-samples"),
        "bad suffix": (["sample", "--run", str(run), "--num-samples", "2", "--out",
                        str(tmp / "x.txt")], ".npy or .png"),
        "sample out under a file": (["sample", "--run", str(run), "--num-samples", "2", "--out",
                                     str(a_file / "x.npy")], "not a folder"),
        "other settings in the run": (["train", "--dataset", "swissroll", "--out", str(run),
                                       "--lr", "0.5", *TINY_TOY], "other settings"),
        "batch larger than the data": (["train", "--dataset", str(tmp / "ten.npy"), "--out", new,
                                        "--batch-size", "64"], "more than the 10 examples"),
        "NaN in the data": (["train", "--dataset", str(tmp / "nan.npy"), "--out", new], "NaN"),
        "points preset for images": (["train", "--dataset", "digits", "--out", new,
                                      "--model", "mlp"], "for points"),
        "lr nan": ([*train, "--lr", "nan"], "--lr"),
        "timesteps 0": ([*train, "--num-timesteps", "0"], "--num-timesteps"),
        "ema decay 1": ([*train, "--ema-decay", "1"], "--ema-decay"),
        "seed negative": ([*train, "--seed", "-1"], "--seed"),
        "threads 0": ([*train, "--threads", "0"], "--threads"),
        "unknown prediction type": ([*train, "--prediction-type", "score"], "invalid choice"),
        "override without =": ([*train, "--model-override", "hidden"], "KEY=VALUE"),
        "unknown override": ([*train, "--model-override", "widht=3"],
                             "unknown model override"),
        "override of a bad value": ([*train, "--model-override", "hidden=-3"], "hidden"),
        "no --out": (["train", "--dataset", "swissroll"], "required"),
        "steps below the run's": (["train", "--dataset", "swissroll", "--out", str(run),
                                   "--steps", "1", *TINY_TOY], "already at step 2"),
        "ddim eta negative": ([*sample, "--sampler", "ddim", "--eta", "-0.5"], "--eta"),
        "ddim eta nan": ([*sample, "--sampler", "ddim", "--eta", "nan"], "--eta"),
        "eta without ddim": ([*sample, "--eta", "0.5"], "ddim"),
        "unknown sampler": ([*sample, "--sampler", "plms"], "invalid choice"),
        "sample out is a folder": ([*sample[:-1], str(tmp / "folder.npy")], "is a folder"),
        "truncated checkpoint": (["sample", "--run", str(tmp / "broken_run"), "--num-samples",
                                  "2", "--out", str(tmp / "x.npy")], "truncated or corrupt"),
        "pickle as checkpoint": (["sample", "--run", str(tmp / "planted_run"), "--num-samples",
                                  "2", "--out", str(tmp / "x.npy")], "refused unopened"),
        "evaluate missing run": (["evaluate", "--run", str(tmp / "nowhere")],
                                 "no such run folder"),
    }


MISTAKES = [
    "unknown dataset", "missing file", "steps 0", "steps negative", "batch size 0",
    "lr negative", "not a number", "unknown preset", "preset for images", "bf16 on cpu",
    "unknown device", "out under a file", "out is a file", "unknown command",
    "sample without checkpoint", "sample missing run", "evaluate without checkpoint",
    "ddim steps > T", "steps without ddim", "num samples 0", "bad suffix",
    "sample out under a file", "other settings in the run", "batch larger than the data",
    "NaN in the data", "points preset for images", "lr nan", "timesteps 0", "ema decay 1",
    "seed negative", "threads 0", "unknown prediction type", "override without =",
    "unknown override", "override of a bad value", "no --out", "steps below the run's",
    "ddim eta negative", "ddim eta nan", "eta without ddim", "unknown sampler",
    "sample out is a folder", "truncated checkpoint", "pickle as checkpoint",
    "evaluate missing run"]


def test_the_catalogue_is_complete(tmp_path):
    """Every case above is run, and they are at least the issue's 20."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step-00000002.safetensors").write_bytes(b"x" * 100)
    assert sorted(error_cases(tmp_path, tmp_path / "run")) == sorted(MISTAKES)
    assert len(set(MISTAKES)) == len(MISTAKES) >= 40


@pytest.mark.parametrize("case", MISTAKES)
def test_user_mistakes_exit_2_with_one_line(case, trained_run, tmp_path, capsys):
    argv, expected = error_cases(tmp_path, trained_run)[case]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    run_before = sorted(p.name for p in trained_run.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before      # nothing written
    assert sorted(p.name for p in trained_run.rglob("*")) == run_before


def test_the_default_batch_shrinks_to_a_small_array(tmp_path, capsys):
    """Points' default batch is 512; 10 points train with batches of 10 (an explicit
    --batch-size above 10 is a mistake, see the catalogue)."""
    np.save(tmp_path / "ten.npy", np.random.default_rng(0).normal(size=(10, 2)))
    assert main(["train", "--dataset", str(tmp_path / "ten.npy"), "--out", str(tmp_path / "r"),
                 "--steps", "2", "--no-progress", "--sample-every", "0"]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["batch_size"] == 10


def test_a_mistake_in_a_real_process_has_no_traceback(tmp_path):
    p = run_cli("train", "--dataset", "swissroll", "--out", tmp_path / "r", "--batch-size", "0")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ["error: argument --batch-size: must be >= 1, got 0"]
    assert sorted(tmp_path.iterdir()) == []


def test_help_lists_the_defaults_per_dataset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("swissroll", "digits", "cifar10", "lr 0.0002", "batch 128", "steps 800000"):
        assert word in out
