"""Evaluation metrics: each checked against an independent computation (scipy, closed
forms), and the reports against real data (floor) and broken samples."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from scipy import linalg, stats
from scipy.spatial.distance import cdist

from diffusion_lib import NoiseSchedule, variational_bound
from diffusion_lib.data import load_dataset
from diffusion_lib.metrics import (
    CLASSIFIER_FILENAME,
    bits_per_dim,
    energy_distance,
    extract_features,
    fitted_mixture_kl,
    frechet_distance,
    gaussian_frechet_distance,
    image_report,
    inception_fid,
    load_feature_classifier,
    mmd_rbf,
    mode_counts,
    nearest_neighbour_distance,
    toy_report,
    train_feature_classifier,
)

CLASSIFIER_STEPS = 150   # ~95% on digits in a few seconds


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- energy distance, MMD

def test_energy_distance_matches_scipy_cdist():
    x, y = rng(0).normal(size=(60, 3)), rng(1).normal(0.3, 1.2, size=(45, 3))
    dxy, dxx, dyy = cdist(x, y), cdist(x, x), cdist(y, y)
    N, M = len(x), len(y)
    u = 2 * dxy.mean() - dxx.sum() / (N * (N - 1)) - dyy.sum() / (M * (M - 1))
    v = 2 * dxy.mean() - dxx.mean() - dyy.mean()
    assert energy_distance(x, y) == pytest.approx(u, rel=1e-7)      # |a|^2 + |b|^2 - 2ab rounding
    assert energy_distance(x, y, unbiased=False) == pytest.approx(v, rel=1e-7)
    # chunking changes nothing; tensors and arrays are accepted alike
    as_float32 = torch.from_numpy(x).float()
    assert energy_distance(as_float32, y, chunk_size=7) == pytest.approx(u, rel=1e-6)


def test_energy_distance_in_1d_is_twice_the_integrated_squared_cdf_gap():
    x, y = rng(2).normal(size=70), rng(3).exponential(size=50)
    grid = np.sort(np.concatenate([x, y]))                   # F_N - G_M is constant between
    F = np.searchsorted(np.sort(x), grid[:-1], side="right") / len(x)
    G = np.searchsorted(np.sort(y), grid[:-1], side="right") / len(y)
    integral = np.sum((F - G) ** 2 * np.diff(grid))
    assert energy_distance(x, y, unbiased=False) == pytest.approx(2 * integral, rel=1e-7)


def test_energy_distance_estimates_the_population_value():
    """N(0, 1) vs N(mu, 1) in 1-D: 2 E|N(mu, 2)| - 2 E|N(0, 2)|, E|N(m, s^2)| folded normal."""
    def folded_mean(m, s):
        return (s * math.sqrt(2 / math.pi) * math.exp(-m**2 / (2 * s**2))
                + m * (1 - 2 * stats.norm.cdf(-m / s)))

    mu, s = 0.5, math.sqrt(2)
    exact = 2 * folded_mean(mu, s) - 2 * folded_mean(0, s)
    x, y, x2 = rng(4).normal(size=4000), rng(5).normal(mu, 1, size=4000), rng(6).normal(size=4000)
    assert energy_distance(x, y) == pytest.approx(exact, abs=0.04)   # 0.140; the std is 0.015
    assert abs(energy_distance(x, x2)) < 0.003                            # same law: ~0
    assert energy_distance(x, x2, unbiased=False) > 0                     # the V-statistic is not


def test_mmd_matches_a_direct_computation():
    x, y = rng(7).normal(size=(50, 2)), rng(8).normal(0.5, 1, size=(40, 2))
    h = 0.8
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * h * h))   # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    expected = ((kxx.sum() - np.trace(kxx)) / (50 * 49) + (kyy.sum() - np.trace(kyy)) / (40 * 39)
                - 2 * k(x, y).mean())
    assert mmd_rbf(x, y, bandwidth=h, chunk_size=9) == pytest.approx(expected, rel=1e-10)
    same = mmd_rbf(rng(9).normal(size=(1000, 2)), rng(10).normal(size=(1000, 2)))
    shifted = mmd_rbf(rng(9).normal(size=(1000, 2)), rng(10).normal(0.5, 1, size=(1000, 2)))
    assert abs(same) < 0.005 < 0.02 < shifted


# ---------------------------------------------------------------- Frechet distance

def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    m1, m2 = rng(11).normal(size=5), rng(12).normal(size=5)
    s1, s2 = rng(13).uniform(0.1, 3, size=5), rng(14).uniform(0.1, 3, size=5)
    expected = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert gaussian_frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected,
                                                                                        rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    a = rng(15).normal(size=(300, 6)) @ rng(16).normal(size=(6, 6))     # correlated features
    b = rng(17).normal(size=(200, 6))
    mu1, mu2, c1, c2 = a.mean(0), b.mean(0), np.cov(a.T), np.cov(b.T)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert gaussian_frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0, abs=1e-9)


def test_nearest_neighbour_distance_against_brute_force():
    x, y = rng(30).normal(size=(300, 2)), rng(31).normal(size=(200, 2)) + 0.2
    d = cdist(x, y)                                                      # scipy, (300, 200)
    expected = (d.min(1).mean() + d.min(0).mean()) / 2
    assert nearest_neighbour_distance(x, y, chunk_size=7) == pytest.approx(expected, rel=1e-12)
    assert nearest_neighbour_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same dimension"):
        nearest_neighbour_distance(x, np.zeros((5, 3)))


def test_nearest_neighbour_ratio_is_steady_and_sees_blur():
    """A noisy circle: two data samples give a ratio within 5% of 1 (the floor is
    steady); the same points blurred by noise of std 0.1 (7% of the data's std) > 1.3."""
    def circle(seed, n=2000):
        angle = rng(seed).uniform(0, 2 * np.pi, n)
        return (np.stack([np.cos(angle), np.sin(angle)], 1)
                + 0.02 * rng(seed + 100).normal(size=(n, 2)))
    a, b, c = circle(40), circle(41), circle(42)
    floor = nearest_neighbour_distance(b, a)
    assert 0.95 < nearest_neighbour_distance(c, a) / floor < 1.05
    blurred = c + 0.1 * rng(43).normal(size=c.shape)
    assert nearest_neighbour_distance(blurred, a) / floor > 1.3


def test_frechet_distance_is_small_for_two_samples_of_one_law():
    cov = np.diag([1.0, 2.0, 0.5])
    x = rng(18).multivariate_normal(np.zeros(3), cov, 5000)
    x2 = rng(19).multivariate_normal(np.zeros(3), cov, 5000)
    assert frechet_distance(x, x2) < 0.01 < 0.25 < frechet_distance(x, x2 + 0.5)   # shift: 0.75


# ---------------------------------------------------------------- toys

@pytest.fixture(scope="module")
def eight():
    return load_dataset("8gaussians")


@pytest.fixture(scope="module")
def exact_report(eight):
    x = eight.to_output(eight.get_batch(0, 3000, seed=11))               # exact: the train split
    return toy_report(x, eight, seed=0)


def test_toy_report_on_data_is_at_its_floor(exact_report):
    r = exact_report
    assert r["num_samples"] == 3000 and r["num_nonfinite"] == 0
    assert 0.3 < r["energy_ratio"] < 3                                   # 1 on average
    assert abs(r["energy_distance_unbiased"]) < 3 * r["energy_floor"]
    assert 0.9 < r["nn_ratio"] < 1.1                                     # steady: +-3% measured
    # KL: the fitting error ~47 / (2 N) nats for data, like the floor's
    assert 0 < r["kl"] < 0.02 and 0 < r["kl_floor"] < 0.02
    assert abs(r["kl"] - r["kl_floor"]) < 0.01
    assert 0 < r["kl_se"] < 0.002
    assert r["mode_coverage"] == 1.0
    assert r["in_mode_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)


def test_toy_report_on_broken_samples(eight, exact_report):
    x = eight.to_output(eight.get_batch(0, 3000, seed=11))
    shifted = toy_report(x + np.array([0.3, 0.0], np.float32), eight, kl_points=20_000)
    assert shifted["energy_ratio"] > 10 * exact_report["energy_ratio"]
    assert shifted["nn_ratio"] > 2
    assert shifted["kl"] > 1 and shifted["in_mode_fraction"] < 0.9
    points, k = eight.mixture.sample(3000, generator=torch.Generator().manual_seed(1),
                                     return_components=True)
    half = toy_report(points[k < 4], eight, kl_points=20_000)            # 4 of the 8 modes
    assert half["mode_coverage"] == 0.5
    assert half["kl"] > 10 and half["energy_ratio"] > 100 and half["nn_ratio"] > 2


def test_mode_counts_against_brute_force(eight):
    x = eight.mixture.sample(500, generator=torch.Generator().manual_seed(3)).numpy()
    x[:50] += 0.4                                                         # some off the modes
    angles = 2 * np.pi * np.arange(8) / 8
    centres = 2 * np.stack([np.cos(angles), np.sin(angles)], 1)
    expected = (cdist(x, centres) <= 3 * 0.15).sum(0)
    np.testing.assert_array_equal(mode_counts(torch.from_numpy(x), eight.mixture).numpy(), expected)


def test_kl_is_the_mean_log_ratio_of_the_fitted_mixture(eight):
    from sklearn.mixture import GaussianMixture
    x = eight.mixture.sample(800, generator=torch.Generator().manual_seed(4))
    kl, se = fitted_mixture_kl(x, eight.mixture, num_points=5000, seed=2)
    q = GaussianMixture(8, covariance_type="full", n_init=3, random_state=2).fit(x.numpy())
    z = eight.mixture.sample(5000, generator=torch.Generator().manual_seed(2))
    log_ratio = eight.log_prob(z).numpy() - q.score_samples(z.numpy())
    assert kl == pytest.approx(log_ratio.mean(), rel=1e-9)
    assert se == pytest.approx(log_ratio.std(ddof=1) / math.sqrt(5000), rel=1e-9)


def test_toy_report_other_toys_and_point_files(tmp_path):
    moons = load_dataset("moons")
    x = moons.to_output(moons.get_batch(0, 2000, seed=5))
    report = toy_report(x, "Moons")                                       # a name works too
    assert 0.3 < report["energy_ratio"] < 3 and "kl" not in report
    assert 0.9 < report["nn_ratio"] < 1.1
    x[:100] = np.nan                                                       # a diverged sampler
    broken = toy_report(x * 1.2, moons)
    assert broken["num_nonfinite"] == 100 and broken["num_samples"] == 1900
    assert broken["energy_ratio"] > 10 and broken["nn_ratio"] > 1.5
    points = rng(20).normal(size=(900, 2))
    np.save(tmp_path / "p.npy", points)
    own = toy_report(rng(21).normal(size=(1200, 2)), load_dataset(str(tmp_path / "p.npy")))
    # two disjoint halves of the file: the reference and the floor's second sample
    assert own["num_samples"] == 450 and 0.3 < own["energy_ratio"] < 3
    assert 0.8 < own["nn_ratio"] < 1.2


# ---------------------------------------------------------------- image metrics

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits"), load_dataset("digits", split="test")


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / CLASSIFIER_FILENAME
    classifier, accuracy = train_feature_classifier(*digits, steps=CLASSIFIER_STEPS, seed=0,
                                                    cache_path=path)
    return classifier, accuracy, path


def test_classifier_learns_digits_and_is_cached(digits, trained, tmp_path):
    classifier, accuracy, path = trained
    assert accuracy > 0.9
    assert sum(p.numel() for p in classifier.parameters()) < 150_000
    saved = path.stat().st_mtime_ns
    again, accuracy_again = train_feature_classifier(*digits, steps=CLASSIFIER_STEPS, seed=0,
                                                     cache_path=path)
    assert path.stat().st_mtime_ns == saved and accuracy_again == accuracy   # loaded, not trained
    x = digits[1].all_data()[:20]
    assert torch.equal(extract_features(again, x), extract_features(classifier, x))
    loaded, metadata = load_feature_classifier(path)
    assert (metadata["dataset"], metadata["steps"], metadata["seed"]) == ("digits", "150", "0")
    other = tmp_path / "other.safetensors"                               # another key: retrained
    other.write_bytes(path.read_bytes())
    train_feature_classifier(*digits, steps=2, seed=1, cache_path=other)
    assert load_feature_classifier(other)[1]["seed"] == "1"
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_feature_classifier(tmp_path / "bad.safetensors")


def test_image_report_floor_is_below_noise(digits, trained):
    train, test = digits
    classifier = trained[0]
    real = train.to_output(train.get_batch(3, 297, seed=9))
    noise = rng(22).integers(0, 256, size=(297, 8, 8, 1), dtype=np.uint8)
    good = image_report(real, train, test, classifier=classifier)
    bad = image_report(noise[..., 0], train, test, classifier=classifier)   # (N, H, W) works too
    assert good["frechet_floor"] == bad["frechet_floor"]
    assert good["frechet_floor"] < bad["frechet_distance"] / 3
    assert good["frechet_ratio"] < 2 < 3 < bad["frechet_ratio"]
    assert good["classifier_accuracy"] == trained[1]
    assert "bits_per_dim" not in good


def test_image_report_without_labels_has_no_frechet_distance(tmp_path):
    images = rng(23).integers(0, 256, size=(40, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "i.npy", images)
    ds = load_dataset(str(tmp_path / "i.npy"))
    schedule = NoiseSchedule.linear(num_timesteps=20)
    report = image_report(images[:8], ds, ds, lambda x, t: torch.zeros_like(x), schedule,
                          bpd_examples=6, bpd_batch_size=4)
    assert set(report) == {"num_samples", "bits_per_dim", "bits_per_dim_se"}
    assert report["bits_per_dim"] > 0 and report["bits_per_dim_se"] > 0
    with pytest.raises(ValueError, match="no class labels"):
        train_feature_classifier(ds, ds, steps=1)


class DropoutDenoiser(torch.nn.Module):
    """A linear map of x_t with dropout: its output depends on train / eval mode."""

    def __init__(self, dim: int):
        super().__init__()
        self.dropout, self.linear = torch.nn.Dropout(0.5), torch.nn.Linear(dim, dim)

    def forward(self, x, t):
        return self.linear(self.dropout(x.flatten(1))).reshape(x.shape)


def test_bits_per_dim_is_the_mean_of_the_variational_bound():
    schedule = NoiseSchedule.linear(num_timesteps=30)
    x0 = torch.from_numpy(rng(24).integers(0, 256, size=(10, 1, 4, 4))).float() / 127.5 - 1
    torch.manual_seed(0)
    model = DropoutDenoiser(16).train()
    mean, se = bits_per_dim(model, schedule, x0, batch_size=3,
                            generator=torch.Generator().manual_seed(5))
    assert model.training                                                  # its mode is restored
    model.eval()                                                           # what bits_per_dim used
    generator = torch.Generator().manual_seed(5)
    total = torch.cat([variational_bound(schedule, model, x0[i:i + 3], generator=generator)
                       .total_bpd for i in range(0, 10, 3)])               # (10,): 3 + 3 + 3 + 1
    assert mean == pytest.approx(float(total.mean()), rel=1e-6)            # not of batch means
    assert se == pytest.approx(float(total.std() / math.sqrt(10)), rel=1e-6)
    one = bits_per_dim(model, schedule, x0[:1])
    assert math.isfinite(one[0]) and math.isnan(one[1])


def test_inception_fid_is_optional_and_never_downloads(monkeypatch, tmp_path):
    images = np.zeros((2, 8, 8, 1), np.uint8)
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    with pytest.raises(ImportError, match="torchmetrics"):
        inception_fid(images, images)
    fake = types.ModuleType("torchmetrics")
    fake_fid = types.ModuleType("torchmetrics.image.fid")
    fake_fid.FrechetInceptionDistance = lambda **kwargs: pytest.fail("must not be built")
    monkeypatch.setitem(sys.modules, "torchmetrics", fake)
    monkeypatch.setitem(sys.modules, "torchmetrics.image", types.ModuleType("torchmetrics.image"))
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", fake_fid)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        inception_fid(images, images, weights_path=tmp_path / "missing.pth")


def test_classifier_takes_rgb_and_larger_images():
    from diffusion_lib.data.images import InMemoryImages
    images = torch.from_numpy(rng(25).integers(0, 256, size=(40, 3, 32, 32), dtype=np.uint8))
    ds = InMemoryImages("rgb", images, labels=torch.arange(40) % 3)
    state = torch.random.get_rng_state()
    classifier, accuracy = train_feature_classifier(ds, ds, steps=2, batch_size=8)
    assert torch.equal(torch.random.get_rng_state(), state)             # the caller's RNG untouched
    assert (classifier.config.in_channels, classifier.config.num_classes) == (3, 3)
    assert extract_features(classifier, ds.all_data()).shape == (40, 128)
    report = image_report(ds.to_output(ds.all_data())[:10], ds, ds, classifier=classifier)
    assert 0 <= accuracy <= 1 and report["frechet_distance"] >= 0
