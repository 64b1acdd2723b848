"""Tests for diffusion_lib.data: every dataset loads offline, batches are pure and sharded,
the output maps invert, the 8gaussians density is exact, and bad input raises DataError.

MNIST-like and CIFAR-10 files are written here by small independent writers in the
real IDX and CIFAR binary formats; nothing touches the network.
"""

from __future__ import annotations

import gzip
import math
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_lib.data import DATASETS, DataError, Dataset, epoch_indices, load_dataset, toys

TOYS = ["swissroll", "moons", "8gaussians", "checkerboard"]


# ---------------------------------------------------------------- independent writers

def write_idx(path: Path, images: np.ndarray, *, magic: int = 0x00000803, gz: bool = False,
              cut: int = 0) -> Path:
    """IDX3 uint8: big-endian magic, N, rows, cols, then the pixels row-major."""
    N, H, W = images.shape
    payload = struct.pack(">IIII", magic, N, H, W) + images.astype(np.uint8).tobytes()
    payload = payload[:len(payload) - cut]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_cifar_batch(path: Path, images_hwc: np.ndarray, labels: np.ndarray) -> Path:
    """CIFAR-10 binary: per image a label byte, then 1024 R, 1024 G, 1024 B bytes."""
    records = bytearray()
    for image, label in zip(images_hwc, labels):
        records.append(int(label))
        for c in range(3):
            records += image[:, :, c].tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(records))
    return path


def random_images(n: int, h: int, w: int, c: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (n, h, w) if c is None else (n, h, w, c)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture
def no_torchvision(monkeypatch):
    """Make `import torchvision` fail even where it is installed."""
    monkeypatch.setitem(sys.modules, "torchvision", None)


@pytest.fixture(scope="module")
def toy_sets():
    return {name: load_dataset(name) for name in TOYS}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits"), load_dataset("digits", split="test")


# ---------------------------------------------------------------- toys

def test_names_are_the_documented_ones():
    assert DATASETS == ("swissroll", "moons", "8gaussians", "checkerboard",
                        "digits", "mnist", "fashion-mnist", "cifar10")


@pytest.mark.parametrize("name", TOYS)
def test_toy_shapes_and_standardization(toy_sets, name):
    ds = toy_sets[name]
    assert isinstance(ds, Dataset)
    assert (ds.name, ds.kind, ds.sample_shape, ds.num_examples) == (name, "points", (2,), 100_000)
    assert not ds.bits_per_dim_ready
    x0 = ds.all_data()
    assert x0.shape == (100_000, 2) and x0.dtype == torch.float32
    assert x0.mean(0).abs().max() < 0.03            # standardized: mean ~0, std ~1
    assert (x0.std(0) - 1).abs().max() < 0.03
    batch = ds.get_batch(0, 64)
    assert batch.shape == (64, 2) and batch.dtype == torch.float32 and batch.device == ds.device
    assert torch.equal(ds.all_data(), x0)            # a fixed draw


@pytest.mark.parametrize("name", TOYS)
def test_toy_sampler_is_deterministic_given_the_generator(name):
    sample = toys.TOY_SAMPLERS[name]
    a = sample(500, torch.Generator().manual_seed(1))
    b = sample(500, torch.Generator().manual_seed(1))
    c = sample(500, torch.Generator().manual_seed(2))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_toys_have_their_shape_in_data_space():
    g = torch.Generator().manual_seed(0)
    x = toys.sample_checkerboard(4000, g).double()
    assert x.min() >= -2 and x.max() <= 2
    col, row = torch.floor(x[:, 0]) + 2, torch.floor(x[:, 1]) + 2
    assert ((col + row) % 2 == 0).all()               # only the dark squares
    x = toys.sample_8gaussians(4000, g).double()
    assert (x.norm(dim=1) - 2).abs().max() < 8 * toys.EIGHT_GAUSSIANS_STD
    x = toys.sample_moons(4000, g).double()
    on_outer = (x.norm(dim=1) - 1).abs() < 0.4
    on_inner = ((x - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs() < 0.4
    assert (on_outer | on_inner).float().mean() > 0.99
    x = toys.sample_swissroll(4000, g).double()
    radius = x.norm(dim=1)
    assert radius.min() > 1.5 * math.pi - 2 and radius.max() < 4.5 * math.pi + 2


def test_toy_to_output_inverts_standardization(toy_sets):
    ds = toy_sets["swissroll"]
    x = toys.sample_swissroll(100, torch.Generator().manual_seed(3)).numpy()
    x0 = ds.from_output(x)
    assert x0.dtype == torch.float32
    out = ds.to_output(x0)
    assert out.dtype == np.float32 and out.shape == (100, 2)
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x0.numpy(), (x - ds.mean.numpy()) / ds.std.numpy(), atol=1e-5)


def test_toy_batches_are_pure_and_differ_by_step_rank_seed(toy_sets):
    ds = toy_sets["moons"]
    b = ds.get_batch(7, 32, seed=1, rank=1, world_size=2)
    for step in range(7):
        ds.get_batch(step, 32, seed=1, rank=1, world_size=2)
    assert torch.equal(ds.get_batch(7, 32, seed=1, rank=1, world_size=2), b)        # resume
    assert torch.equal(load_dataset("moons").get_batch(7, 32, seed=1, rank=1, world_size=2), b)
    assert not torch.equal(ds.get_batch(8, 32, seed=1, rank=1, world_size=2), b)
    assert not torch.equal(ds.get_batch(7, 32, seed=1, rank=0, world_size=2), b)
    assert not torch.equal(ds.get_batch(7, 32, seed=2, rank=1, world_size=2), b)


def test_toy_all_data_depends_on_seed_and_split_but_stats_do_not(toy_sets):
    ds = toy_sets["checkerboard"]
    other = load_dataset("checkerboard", seed=5)
    test = load_dataset("checkerboard", split="test")
    assert not torch.equal(ds.all_data(), other.all_data())
    assert not torch.equal(ds.all_data(), test.all_data())
    assert torch.equal(ds.mean, other.mean) and torch.equal(ds.std, test.std)
    assert torch.equal(load_dataset("checkerboard", seed=5).all_data(), other.all_data())


# ---------------------------------------------------------------- 8gaussians density

def numpy_mixture_log_prob(x: np.ndarray) -> np.ndarray:
    """Independent formula: log (1/8 sum_k N(x; 2 (cos, sin)(2 pi k / 8), s^2 I))."""
    s = toys.EIGHT_GAUSSIANS_STD
    densities = np.zeros(len(x))
    for k in range(8):
        m = 2.0 * np.array([np.cos(2 * np.pi * k / 8), np.sin(2 * np.pi * k / 8)])
        densities += np.exp(-((x - m) ** 2).sum(1) / (2 * s * s)) / (2 * np.pi * s * s) / 8
    return np.log(densities)


def test_8gaussians_log_prob_is_exact(toy_sets):
    ds = toy_sets["8gaussians"]
    x = ds.to_output(ds.all_data()[:500]).astype(np.float64)
    x = np.concatenate([x, np.random.default_rng(0).uniform(-2.5, 2.5, size=(20, 2))])
    lp = ds.log_prob(torch.from_numpy(x))
    assert lp.shape == (520,) and lp.dtype == torch.float64
    np.testing.assert_allclose(lp.numpy(), numpy_mixture_log_prob(x), rtol=1e-9, atol=1e-9)


def test_8gaussians_density_integrates_to_one_and_prefers_samples(toy_sets):
    ds = toy_sets["8gaussians"]
    grid = torch.linspace(-3, 3, 301, dtype=torch.float64)          # step 0.02, std 0.15
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    p = ds.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    assert abs(p.sum().item() * (6 / 300) ** 2 - 1) < 1e-3
    samples = torch.from_numpy(ds.to_output(ds.get_batch(0, 2000))).double()
    assert ds.log_prob(samples).mean() > ds.log_prob(samples + 0.5).mean() + 2


def test_8gaussians_mixture_matches_log_prob(toy_sets):
    pytest.importorskip("diffusion_lib.oracle")
    ds = toy_sets["8gaussians"]
    x = torch.from_numpy(ds.to_output(ds.get_batch(1, 300))).double()
    np.testing.assert_allclose(ds.mixture.log_prob(x).numpy(), ds.log_prob(x).numpy(), rtol=1e-9)
    # in training space the density changes by the Jacobian of x0 = (x - mean) / std
    x0 = ds.from_output(x.numpy()).double()
    jacobian = torch.log(ds.std).sum()
    np.testing.assert_allclose(ds.training_mixture.log_prob(x0).numpy(),
                               (ds.log_prob(x) + jacobian).numpy(), rtol=1e-5, atol=1e-4)


def test_only_8gaussians_has_a_density(toy_sets):
    assert not hasattr(toy_sets["moons"], "log_prob")


# ---------------------------------------------------------------- sharding: epochs of permutations

def test_one_epoch_is_split_into_disjoint_rank_shards(digits):
    ds = digits[0]
    N, B, W = ds.num_examples, 50, 3                     # 1500 = 10 steps x 3 ranks x 50
    seen = [ds.batch_indices(s, B, seed=4, rank=r, world_size=W)
            for s in range(10) for r in range(W)]
    everything = torch.cat(seen)
    assert sorted(everything.tolist()) == list(range(N))           # each example exactly once
    by_rank = [set(torch.cat(seen[r::W]).tolist()) for r in range(W)]
    assert all(not (by_rank[i] & by_rank[j]) for i in range(W) for j in range(i + 1, W))
    # the batch rows are the rows of all_data at those indices
    assert torch.equal(ds.get_batch(3, B, seed=4, rank=2, world_size=W),
                       ds.all_data()[seen[3 * W + 2]])


def test_image_batches_are_pure_and_resumable(digits):
    ds = digits[0]
    b = ds.get_batch(40, 64, seed=2, rank=1, world_size=2)         # in epoch 3 of 1500 examples
    assert b.shape == (64, 1, 8, 8) and b.dtype == torch.float32
    for step in range(40):
        ds.get_batch(step, 64, seed=2, rank=1, world_size=2)
    assert torch.equal(ds.get_batch(40, 64, seed=2, rank=1, world_size=2), b)
    assert not torch.equal(ds.get_batch(41, 64, seed=2, rank=1, world_size=2), b)
    assert not torch.equal(ds.get_batch(40, 64, seed=2, rank=0, world_size=2), b)
    assert not torch.equal(ds.get_batch(40, 64, seed=3, rank=1, world_size=2), b)


def test_epochs_are_reshuffled():
    first = epoch_indices(0, 10, 10, seed=0)
    second = epoch_indices(1, 10, 10, seed=0)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)


@settings(max_examples=60, deadline=None)
@given(num_examples=st.integers(1, 40), batch_size=st.integers(1, 17),
       world_size=st.integers(1, 4), seed=st.integers(0, 2**40))
def test_every_epoch_is_a_permutation(num_examples, batch_size, world_size, seed):
    """Concatenating the batches of all steps and ranks, in stream order, gives whole epochs."""
    per_step = batch_size * world_size
    steps = -(-3 * num_examples // per_step)                      # enough for 3 epochs
    stream = torch.cat([epoch_indices(s, batch_size, num_examples, seed=seed, rank=r,
                                      world_size=world_size)
                        for s in range(steps) for r in range(world_size)])
    for e in range(3):
        epoch = stream[e * num_examples:(e + 1) * num_examples]
        assert sorted(epoch.tolist()) == list(range(num_examples))


# ---------------------------------------------------------------- digits and image scaling

def test_digits_split_shapes_and_scaling(digits):
    train, test = digits
    assert train.num_examples + test.num_examples == 1797
    assert (train.num_examples, test.num_examples) == (1500, 297)
    for ds in digits:
        assert (ds.kind, ds.sample_shape, ds.bits_per_dim_ready) == ("images", (1, 8, 8), True)
        x0 = ds.all_data()
        assert x0.dtype == torch.float32 and x0.min() == -1 and x0.max() == 1
    from sklearn.datasets import load_digits
    expected = np.round(load_digits().images * 255 / 16).astype(np.uint8)   # (1797, 8, 8)
    out = np.concatenate([train.to_output(train.all_data()), test.to_output(test.all_data())])
    assert out.shape == (1797, 8, 8, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_allclose(train.all_data()[:, 0].numpy(), expected[:1500] / 127.5 - 1,
                               atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_image_output_round_trip(digits, seed, n):
    ds = digits[0]
    a = random_images(n, 8, 8, 1, seed=seed)
    x0 = ds.from_output(a)
    assert x0.shape == (n, 1, 8, 8) and x0.min() >= -1 and x0.max() <= 1
    np.testing.assert_array_equal(ds.to_output(x0), a)
    np.testing.assert_array_equal(ds.to_output(ds.from_output(a[..., 0])), a)   # (N, H, W)


def test_image_to_output_clamps_and_rounds(digits):
    ds = digits[0]
    x0 = torch.full((1, 1, 8, 8), 3.0)
    x0[0, 0, 0, :4] = torch.tensor([-5.0, -1.0, 0.0, 1 / 127.5 - 1 + 0.003])
    out = ds.to_output(x0)
    assert out[0, 0, :5, 0].tolist() == [0, 0, 128, 1, 255]      # 127.5 rounds half to even


# ---------------------------------------------------------------- MNIST, Fashion-MNIST: IDX files

@pytest.mark.parametrize("name,layout,gz", [("mnist", "", False), ("mnist", "MNIST/raw", True),
                                            ("fashion-mnist", "fashion-mnist", True),
                                            ("fashion-mnist", "FashionMNIST/raw", False)])
def test_mnist_family_reads_idx_files(tmp_path, name, layout, gz, no_torchvision):
    train, test = random_images(12, 28, 28, seed=1), random_images(5, 28, 28, seed=2)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / layout / f"train-images-idx3-ubyte{suffix}", train, gz=gz)
    write_idx(tmp_path / layout / f"t10k-images-idx3-ubyte{suffix}", test, gz=gz)
    for split, images in [("train", train), ("test", test)]:
        ds = load_dataset(name, split=split, data_dir=str(tmp_path))
        assert (ds.name, ds.kind, ds.sample_shape, ds.num_examples) == (name, "images", (1, 28, 28),
                                                                        len(images))
        x0 = ds.all_data()
        assert x0.min() >= -1 and x0.max() <= 1
        np.testing.assert_array_equal(ds.to_output(x0)[..., 0], images)


def test_cifar10_reads_binary_batches(tmp_path, no_torchvision):
    folder = tmp_path / "cifar-10-batches-bin"
    batches = [random_images(3, 32, 32, 3, seed=i) for i in range(6)]
    for i in range(5):
        write_cifar_batch(folder / f"data_batch_{i + 1}.bin", batches[i], np.arange(3) + i)
    write_cifar_batch(folder / "test_batch.bin", batches[5], np.array([9, 0, 1]))
    train = load_dataset("cifar10", data_dir=str(tmp_path))
    assert (train.sample_shape, train.num_examples) == ((3, 32, 32), 15)
    assert train.bits_per_dim_ready
    np.testing.assert_array_equal(train.to_output(train.all_data()), np.concatenate(batches[:5]))
    test = load_dataset("cifar10", split="test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(test.to_output(test.all_data()), batches[5])
    # the red plane really is channel 0
    red = torch.from_numpy(batches[5][..., 0]).float() / 127.5 - 1
    assert torch.equal(test.all_data()[:, 0], red)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            self.data = torch.from_numpy(random_images(4, 28, 28, seed=9))

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=FakeMNIST)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    ds = load_dataset("mnist", data_dir=str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True, True)]
    np.testing.assert_array_equal(ds.to_output(ds.all_data())[..., 0],
                                  random_images(4, 28, 28, seed=9))


# ---------------------------------------------------------------- bring your own: arrays, folders

def test_npy_points(tmp_path):
    points = np.random.default_rng(0).normal([3.0, -1.0, 10.0], [2.0, 0.5, 4.0], size=(400, 3))
    np.save(tmp_path / "points.npy", points.astype(np.float32))
    ds = load_dataset(str(tmp_path / "points.npy"))
    assert (ds.kind, ds.sample_shape, ds.num_examples) == ("points", (3,), 400)
    x0 = ds.all_data()
    np.testing.assert_allclose(x0.mean(0).numpy(), np.zeros(3), atol=1e-5)
    np.testing.assert_allclose(x0.std(0, correction=0).numpy(), np.ones(3), atol=1e-5)
    np.testing.assert_allclose(ds.to_output(x0), points, rtol=1e-5, atol=1e-5)
    assert ds.get_batch(0, 1000).shape == (1000, 3)                 # a batch larger than N
    np.save(tmp_path / "ints.npy", np.arange(20).reshape(10, 2))      # integer points are cast
    assert load_dataset(str(tmp_path / "ints.npy")).all_data().dtype == torch.float32


@pytest.mark.parametrize("key,shape,expected", [("x", (7, 12, 10), (1, 12, 10)),
                                                ("images", (7, 6, 6, 3), (3, 6, 6)),
                                                ("data", (7, 5, 5, 1), (1, 5, 5))])
def test_npz_images(tmp_path, key, shape, expected):
    images = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", **{key: images, "labels": np.arange(7)})
    ds = load_dataset(str(tmp_path / "imgs.npz"))
    assert (ds.kind, ds.sample_shape, ds.num_examples) == ("images", expected, 7)
    out = ds.to_output(ds.all_data())
    np.testing.assert_array_equal(out.reshape(images.shape), images)


def test_paths_and_names_are_accepted_in_any_form(tmp_path):
    np.save(tmp_path / "p.npy", np.ones((3, 2)))
    constant = load_dataset(tmp_path / "p.npy")                      # a Path, not only a str
    assert constant.num_examples == 3 and not constant.all_data().any()   # std 0: only centred
    np.testing.assert_array_equal(constant.to_output(constant.all_data()), np.ones((3, 2)))
    assert load_dataset("Moons").name == "moons"


def test_integer_images_in_range_are_cast(tmp_path):
    np.save(tmp_path / "a.npy", np.full((2, 4, 4), 200, dtype=np.int64))
    assert load_dataset(str(tmp_path / "a.npy")).to_output(torch.ones(1, 1, 4, 4)).max() == 255


def test_image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rgb = random_images(3, 6, 5, 3, seed=3)
    for i, a in enumerate(rgb):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    (tmp_path / "sub").mkdir()
    grey = random_images(1, 6, 5, seed=4)[0]
    Image.fromarray(grey).save(tmp_path / "sub" / "z.png")               # grey among RGB -> RGB
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(str(tmp_path))
    assert (ds.kind, ds.sample_shape, ds.num_examples) == ("images", (3, 6, 5), 4)
    out = ds.to_output(ds.all_data())
    np.testing.assert_array_equal(out[:3], rgb)
    np.testing.assert_array_equal(out[3], np.repeat(grey[:, :, None], 3, axis=2))
    from diffusion_lib.data.images import load_image_folder
    streamed = load_image_folder(tmp_path, max_in_memory_bytes=0)
    assert type(streamed).__name__ == "StreamedImages"
    assert torch.equal(streamed.get_batch(2, 3, seed=1), ds.get_batch(2, 3, seed=1))


def test_grey_image_folder_has_one_channel(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    grey = random_images(2, 4, 4, seed=5)
    for i, a in enumerate(grey):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert ds.sample_shape == (1, 4, 4)
    np.testing.assert_array_equal(ds.to_output(ds.all_data())[..., 0], grey)


# ---------------------------------------------------------------- every bad input raises DataError

def raises(match: str):
    return pytest.raises(DataError, match=match)


def test_unknown_name_lists_the_valid_ones():
    with raises("unknown dataset 'mnsit'.*swissroll.*fashion-mnist.*cifar10"):
        load_dataset("mnsit")
    with raises("split"):
        load_dataset("moons", split="valid")


def test_bad_batch_arguments(toy_sets, digits):
    for ds in (toy_sets["moons"], digits[0]):
        with raises("batch_size"):
            ds.get_batch(0, 0)
        with raises("batch_size"):
            ds.get_batch(0, -3)
        with raises("rank"):
            ds.get_batch(0, 4, rank=2, world_size=2)
        with raises("step"):
            ds.get_batch(-1, 4)


def test_array_file_errors(tmp_path):
    def load(name, array=None, **arrays):
        path = tmp_path / name
        if array is not None:
            np.save(path, array)
        elif arrays:
            np.savez(path, **arrays)
        return load_dataset(str(path))

    with raises("missing.npy: no such file"):
        load("missing.npy")
    with raises(r"found shape \(10,\); expected \(N, D\) points"):
        load("flat.npy", np.zeros(10))
    with raises(r"\(4, 8, 8, 2\) with 2 channels; expected \(N, H, W, C\)"):
        load("two.npy", np.zeros((4, 8, 8, 2), np.uint8))
    with raises(r"channel-first: use np.moveaxis"):
        load("chw.npy", np.zeros((4, 3, 8, 8), np.uint8))
    with raises(r"must be uint8 0..255, found float64 values in \[0.*\(a \* 255\)\.round\(\)"):
        load("float01.npy", np.random.default_rng(0).random((4, 8, 8)))
    with raises(r"must be uint8.*values in \[-3, 300\]"):
        load("wide.npy", np.array([-3, 300] * 32).reshape(2, 4, 8))
    with raises("NaN or inf"):
        load("nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with raises("NaN or inf"):
        load("inf.npy", np.array([[0.0, np.inf]]))
    with raises("empty"):
        load("empty.npy", np.zeros((0, 2)))
    with raises("real numbers"):
        load("complex.npy", np.ones((3, 2), np.complex64))
    with raises("holds arrays.*'a', 'b'.*expected a single array or one named x, data, images"):
        load("two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with raises("objects.npy: holds Python objects"):
        load_dataset(str(tmp_path / "objects.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with raises("junk.npy: not a .npy or .npz file"):
        load_dataset(str(tmp_path / "junk.npy"))
    (tmp_path / "table.csv").write_text("1,2\n")
    with raises("unsupported file type '.csv'"):
        load_dataset(str(tmp_path / "table.csv"))


def test_folder_errors(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "empty").mkdir()
    with raises("no images"):
        load_dataset(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(random_images(1, 4, 4)[0]).save(bad / "a.png")
    (bad / "b.png").write_bytes(b"garbage, not a png")
    with raises("cannot read image .*b.png"):
        load_dataset(str(bad))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(random_images(1, 4, 4)[0]).save(mixed / "a.png")
    Image.fromarray(random_images(1, 5, 4)[0]).save(mixed / "b.png")
    Image.fromarray(random_images(1, 6, 4)[0]).save(mixed / "c.png")
    with raises(r"size mismatch: .*b\.png is 4x5 but .*a\.png is 4x4"):
        load_dataset(str(mixed))


def test_damaged_data_files(tmp_path):
    """Files cut short, empty or of the wrong kind: one DataError each, naming the file."""
    a = np.random.default_rng(0).normal(size=(50, 2))
    np.save(tmp_path / "whole.npy", a)
    raw = (tmp_path / "whole.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:len(raw) - 100])       # the data cut short
    with raises("cut.npy: cannot read it as a numpy file"):
        load_dataset(str(tmp_path / "cut.npy"))
    (tmp_path / "zero.npy").write_bytes(b"")
    with raises(r"zero.npy: not a .npy or .npz file \(it starts with b''\)"):
        load_dataset(str(tmp_path / "zero.npy"))
    np.savez(tmp_path / "nothing.npz")
    with raises(r"nothing.npz: holds arrays \(none\)"):
        load_dataset(str(tmp_path / "nothing.npz"))
    np.save(tmp_path / "words.npy", np.array([["a", "b"], ["c", "d"]]))
    with raises("words.npy: points must be real numbers, found dtype <U1"):
        load_dataset(str(tmp_path / "words.npy"))
    np.save(tmp_path / "no_rows.npy", np.zeros((0, 8, 8), np.uint8))
    with raises(r"the array is empty \(shape \(0, 8, 8\)\)"):
        load_dataset(str(tmp_path / "no_rows.npy"))
    np.save(tmp_path / "nan_images.npy", np.full((2, 4, 4), np.nan))
    with raises("nan_images.npy: images must be uint8 0..255, found float64"):
        load_dataset(str(tmp_path / "nan_images.npy"))


def test_image_cut_short_in_a_folder(tmp_path):
    """A PNG whose header reads but whose pixels are cut off fails when decoded."""
    Image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(random_images(3, 16, 16)):
        Image.fromarray(image).save(folder / f"{i}.png")
    raw = (folder / "1.png").read_bytes()
    (folder / "1.png").write_bytes(raw[:len(raw) // 2])
    with raises(r"cannot read image .*1\.png"):
        load_dataset(str(folder))
    (folder / "1.png").unlink()
    (folder / "hidden_dir.png").mkdir()                    # a folder named like an image
    (folder / "notes.txt").write_text("not an image")
    assert load_dataset(str(folder)).num_examples == 2


def test_missing_mnist_offline_says_what_to_do(tmp_path, no_torchvision):
    for download in (False, True):
        with raises(r"mnist: no IDX files under .*--data-dir.*train-images-idx3-ubyte"
                    r".*install torchvision"):
            load_dataset("mnist", data_dir=str(tmp_path), download=download)
    write_idx(tmp_path / "train-images-idx3-ubyte", random_images(2, 28, 28))
    with raises("t10k-images-idx3-ubyte"):                               # train alone is not enough
        load_dataset("fashion-mnist", split="test", data_dir=str(tmp_path))


def test_corrupt_idx_files(tmp_path, no_torchvision):
    images = random_images(3, 28, 28)
    cases = {"magic": dict(magic=0x00000801), "truncated": dict(cut=100),
             "trailing": dict(cut=-5), "empty": dict()}
    for what, kwargs in cases.items():
        folder = tmp_path / what
        data = images[:0] if what == "empty" else images
        if what == "trailing":
            path = write_idx(folder / "train-images-idx3-ubyte", data)
            path.write_bytes(path.read_bytes() + b"12345")
        else:
            write_idx(folder / "train-images-idx3-ubyte", data, **kwargs)
    for what, match in [("magic", "magic number 0x00000801, expected 0x00000803"),
                        ("truncated", "truncated: header says 3 images of 28x28"),
                        ("trailing", "trailing bytes"), ("empty", "empty")]:
        with raises(match):
            load_dataset("mnist", data_dir=str(tmp_path / what))
    gz = tmp_path / "gz" / "train-images-idx3-ubyte.gz"
    write_idx(gz, images, gz=True)
    gz.write_bytes(gz.read_bytes()[:-40])
    with raises("train-images-idx3-ubyte.gz: corrupt or truncated"):
        load_dataset("mnist", data_dir=str(tmp_path / "gz"))
    write_idx(tmp_path / "short" / "train-images-idx3-ubyte", images,
              cut=len(images.tobytes()) + 10)
    with raises("less than the 16-byte IDX header"):
        load_dataset("mnist", data_dir=str(tmp_path / "short"))


def test_cifar10_errors(tmp_path, no_torchvision):
    with raises(r"cifar10: no binary batches .*--data-dir.*torchvision"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    py = tmp_path / "py" / "cifar-10-batches-py"
    py.mkdir(parents=True)
    (py / "data_batch_1").write_bytes(b"\x80\x04pickled")
    with raises("python \\(pickled\\) version.*binary"):
        load_dataset("cifar10", data_dir=str(tmp_path / "py"))
    folder = tmp_path / "some" / "cifar-10-batches-bin"
    write_cifar_batch(folder / "data_batch_1.bin", random_images(1, 32, 32, 3), np.array([0]))
    with raises("data_batch_2.bin is missing"):
        load_dataset("cifar10", data_dir=str(tmp_path / "some"))
    cut = tmp_path / "cut" / "cifar-10-batches-bin" / "test_batch.bin"
    write_cifar_batch(cut, random_images(2, 32, 32, 3), np.array([0, 1]))
    cut.write_bytes(cut.read_bytes()[:-7])
    with raises("test_batch.bin is truncated or not a CIFAR-10 binary batch"):
        load_dataset("cifar10", split="test", data_dir=str(tmp_path / "cut"))
    label = tmp_path / "label" / "cifar-10-batches-bin" / "test_batch.bin"
    write_cifar_batch(label, random_images(1, 32, 32, 3), np.array([200]))
    with raises("corrupt: a label byte is 200"):
        load_dataset("cifar10", split="test", data_dir=str(tmp_path / "label"))


def test_output_maps_check_shapes(toy_sets, digits):
    with raises(r"expected shape \(N, 2\)"):
        toy_sets["moons"].to_output(torch.zeros(4, 3))
    with raises(r"expected points of shape \(N, 2\)"):
        toy_sets["moons"].from_output(np.zeros((4, 3)))
    with raises("uint8"):
        digits[0].from_output(np.zeros((2, 8, 8, 1), np.float32))
    with raises(r"expected uint8 images of shape \(N, 8, 8, 1\)"):
        digits[0].from_output(np.zeros((2, 9, 8, 1), np.uint8))
    with raises(r"expected shape \(N, 1, 8, 8\)"):
        digits[0].to_output(torch.zeros(2, 8, 8, 1))


# ---------------------------------------------------------------- class labels (for the metrics)

def write_idx_labels(path: Path, labels: np.ndarray, *, magic: int = 0x00000801,
                     gz: bool = False) -> Path:
    """IDX1 uint8: big-endian magic, N, then one byte per label."""
    payload = struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def test_digits_labels_are_sklearns_targets_aligned_with_batches(digits):
    from sklearn.datasets import load_digits
    target = load_digits().target
    train, test = digits
    for ds, expected in [(train, target[:1500]), (test, target[1500:])]:
        labels = ds.labels()
        assert labels.dtype == torch.int64 and labels.shape == (ds.num_examples,)
        np.testing.assert_array_equal(labels.numpy(), expected)
    # labels()[batch_indices] are the labels of get_batch: match images back to all_data
    indices = train.batch_indices(3, 16, seed=2)
    assert torch.equal(train.get_batch(3, 16, seed=2), train.all_data()[indices])
    np.testing.assert_array_equal(train.labels()[indices].numpy(), target[:1500][indices.numpy()])


def test_datasets_without_labels_say_none(toy_sets, tmp_path):
    for name in ("swissroll", "checkerboard"):          # 8gaussians and moons have labels
        assert toy_sets[name].labels() is None and toy_sets[name].num_classes is None
    np.save(tmp_path / "p.npy", np.ones((3, 2)))
    np.save(tmp_path / "i.npy", random_images(3, 4, 4))
    assert load_dataset(str(tmp_path / "p.npy")).labels() is None
    assert load_dataset(str(tmp_path / "i.npy")).labels() is None


@pytest.mark.parametrize("layout,gz", [("", False), ("MNIST/raw", True)])
def test_mnist_labels_from_idx1_files(tmp_path, layout, gz, no_torchvision):
    suffix = ".gz" if gz else ""
    for split, stem, n in [("train", "train", 12), ("test", "t10k", 5)]:
        images, labels = random_images(n, 28, 28, seed=n), np.arange(n) % 10
        write_idx(tmp_path / layout / f"{stem}-images-idx3-ubyte{suffix}", images, gz=gz)
        assert load_dataset("mnist", split=split, data_dir=str(tmp_path)).labels() is None
        write_idx_labels(tmp_path / layout / f"{stem}-labels-idx1-ubyte{suffix}", labels, gz=gz)
        ds = load_dataset("mnist", split=split, data_dir=str(tmp_path))
        np.testing.assert_array_equal(ds.labels().numpy(), labels)
        assert ds.labels().dtype == torch.int64


def test_bad_mnist_label_files(tmp_path, no_torchvision):
    write_idx(tmp_path / "a" / "train-images-idx3-ubyte", random_images(3, 28, 28))
    write_idx_labels(tmp_path / "a" / "train-labels-idx1-ubyte", np.arange(4))
    with raises("has 4 labels for the 3 images"):
        load_dataset("mnist", data_dir=str(tmp_path / "a"))
    write_idx(tmp_path / "b" / "train-images-idx3-ubyte", random_images(3, 28, 28))
    write_idx_labels(tmp_path / "b" / "train-labels-idx1-ubyte", np.arange(3), magic=0x803)
    with raises("not an IDX label file: magic number 0x00000803"):
        load_dataset("mnist", data_dir=str(tmp_path / "b"))
    path = write_idx_labels(tmp_path / "c" / "train-labels-idx1-ubyte", np.arange(3))
    write_idx(tmp_path / "c" / "train-images-idx3-ubyte", random_images(3, 28, 28))
    path.write_bytes(path.read_bytes()[:-1])
    with raises("header says 3 labels, found 2 bytes"):
        load_dataset("mnist", data_dir=str(tmp_path / "c"))


def test_cifar10_labels_are_the_first_byte_of_each_record(tmp_path, no_torchvision):
    folder = tmp_path / "cifar-10-batches-bin"
    for i in range(5):
        write_cifar_batch(folder / f"data_batch_{i + 1}.bin", random_images(2, 32, 32, 3, seed=i),
                          np.array([i, 9 - i]))
    write_cifar_batch(folder / "test_batch.bin", random_images(3, 32, 32, 3), np.array([7, 0, 3]))
    train = load_dataset("cifar10", data_dir=str(tmp_path))
    assert train.labels().tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
    test = load_dataset("cifar10", split="test", data_dir=str(tmp_path))
    assert test.labels().tolist() == [7, 0, 3] and test.labels().dtype == torch.int64


def test_torchvision_targets_become_labels(tmp_path, monkeypatch):
    class FakeMNIST:
        def __init__(self, root, train, download):
            self.data = torch.from_numpy(random_images(4, 28, 28, seed=9))
            self.targets = torch.tensor([3, 1, 4, 1])

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=FakeMNIST)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    ds = load_dataset("mnist", data_dir=str(tmp_path), download=True)
    assert ds.labels().tolist() == [3, 1, 4, 1]
