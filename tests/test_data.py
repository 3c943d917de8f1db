"""Tests for ebmcmc.data: toy sets against their exact densities, file loaders, batching."""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmcmc.datasets import (
    CIFAR10_CLASSES,
    MNIST_FILES,
    TOY_DATASETS,
    RestrictedUnpickler,
    batches,
    checkerboard,
    eight_gaussians,
    eight_gaussians_target,
    grid25,
    grid25_target,
    load_cifar10,
    load_digits,
    load_mnist,
    random_hflip,
    read_idx,
    rings,
    rings_target,
    swiss_roll,
    toy_dataset,
)
from ebmcmc.targets import Rings

# where this machine keeps MNIST's IDX files (tests that need them skip without)
MNIST_DIR = Path(os.environ.get("EBMCMC_MNIST_DIR", "data/mnist"))
Z = 4.5  # z-score for statistical checks (false-alarm rate ~1e-5 per check)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- toy sets


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toy_shapes_dtype_reproducible(name):
    a = toy_dataset(name, 257, seeded(3))
    b = toy_dataset(name, 257, 3)  # int seed == Generator seeded alike
    assert a.shape == (257, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, toy_dataset(name, 257, seeded(4)))
    assert a.abs().max() < 4.5


def test_toy_dataset_errors():
    with pytest.raises(ValueError, match="checkerboard.*eight_gaussians.*grid25.*rings.*swiss"):
        toy_dataset("moons", 10)
    with pytest.raises(ValueError, match="n must be a positive int"):
        eight_gaussians(0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        rings(2.5)
    with pytest.raises(TypeError, match="generator"):
        grid25(10, generator="seed")
    with pytest.raises(ValueError, match="std"):
        eight_gaussians(10, std=-1.0)
    with pytest.raises(ValueError, match="noise_std"):
        grid25_target(noise_std=-0.1)
    with pytest.raises(ValueError, match="radii"):
        rings(10, radii=[1.0, -2.0])


def check_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> None:
    """|sample moment - exact| < Z * MCSE for the mean and every covariance entry."""
    x = x.to(torch.float64)
    n = x.shape[0]
    m = x.mean(0)
    se_m = (cov.diagonal() / n).sqrt()
    assert ((m - mean).abs() < Z * se_m).all(), (m, mean, se_m)
    c = x - m
    prods = c[:, :, None] * c[:, None, :]  # (n, d, d)
    emp = prods.mean(0)
    se_c = prods.std(0) / math.sqrt(n)
    assert ((emp - cov).abs() < Z * se_c).all(), (emp, cov, se_c)


@pytest.mark.parametrize(
    "sampler, target_fn",
    [(eight_gaussians, eight_gaussians_target), (grid25, grid25_target)],
)
def test_mixture_sets_match_exact_target(sampler, target_fn):
    n = 100_000
    x = sampler(n, seeded(0))
    t = target_fn()
    check_moments(x, t.mean, t.cov)
    # every component is equally likely and has the stated sd
    d = torch.cdist(x.double(), t.means)
    k = d.argmin(1)
    counts = torch.bincount(k, minlength=t.means.shape[0]).double()
    p = 1.0 / t.means.shape[0]
    assert ((counts - n * p).abs() < Z * math.sqrt(n * p * (1 - p))).all()
    resid = x.double() - t.means[k]
    var = float(t.covs[0, 0, 0])
    # variance of a squared N(0, var) residual is 2 var^2
    assert abs(float((resid**2).mean()) - var) < Z * math.sqrt(2 * var**2 / (2 * n))


@pytest.mark.parametrize("target_fn", [eight_gaussians_target, grid25_target])
def test_noise_std_convolves(target_fn):
    n, s = 100_000, 0.3
    g = seeded(1)
    base = {eight_gaussians_target: eight_gaussians, grid25_target: grid25}[target_fn]
    x = base(n, g).double() + s * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = target_fn(noise_std=s)
    assert torch.allclose(t.covs[0], (0.1**2 + s**2) * torch.eye(2, dtype=torch.float64))
    check_moments(x, t.mean, t.cov)
    # DRL level-0 noise
    assert math.isclose(float(target_fn(0.01).covs[0, 0, 0]), 0.1**2 + 0.01**2)


def test_eight_gaussians_geometry():
    t = eight_gaussians_target()
    assert torch.allclose(t.means.norm(dim=-1), torch.full((8,), 2.0, dtype=torch.float64))
    g = grid25_target()
    assert sorted(set(g.means[:, 0].tolist())) == [-2.0, -1.0, 0.0, 1.0, 2.0]


def test_rings_geometry_and_target_moments():
    n = 100_000
    x = rings(n, seeded(2)).double()
    rho = x.norm(dim=-1)
    k = (rho.round().clamp(1, 4) - 1).long()
    counts = torch.bincount(k, minlength=4).double()
    assert ((counts - n / 4).abs() < Z * math.sqrt(n * 0.25 * 0.75)).all()
    radial = rho - (k + 1).double()
    # isotropic noise sd 0.01: radial deviation sd ~ 0.01 (curvature effect ~ s^2/r, tiny)
    assert abs(float(radial.std()) - 0.01) < 5e-4
    t = rings_target()
    check_moments(x, t.mean, t.cov)
    assert math.isclose(float(t.cov[0, 0]), (1 + 4 + 9 + 16) / 4 / 2 + 0.01**2)


def test_rings_log_prob_is_normalized_and_exact():
    t = rings_target(noise_std=0.02)
    s = math.sqrt(0.01**2 + 0.02**2)
    # radial symmetry: integral = int_0^inf p(rho, 0) 2 pi rho d rho (midpoint rule)
    h = 2e-4
    rho = (torch.arange(int(5.0 / h), dtype=torch.float64) + 0.5) * h
    pts = torch.stack([rho, torch.zeros_like(rho)], -1)
    mass = float((t.log_prob(pts).exp() * 2 * math.pi * rho).sum() * h)
    assert abs(mass - 1.0) < 1e-6
    # against a brute-force average over the circle, at a few points near ring 2
    theta = (torch.arange(20_000, dtype=torch.float64) + 0.5) * (2 * math.pi / 20_000)
    for p in ([2.0, 0.0], [1.41, 1.43], [0.0, -2.03]):
        x = torch.tensor(p, dtype=torch.float64)
        dens = 0.0
        for r in (1.0, 2.0, 3.0, 4.0):
            c = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], -1)
            d2 = ((x - c) ** 2).sum(-1)
            dens += 0.25 * float((torch.exp(-d2 / (2 * s * s)) / (2 * math.pi * s * s)).mean())
        assert math.isclose(float(t.log_prob(x[None]).exp()), dens, rel_tol=1e-6)
    # equivalent to a single ring width sqrt(std^2 + noise^2); energy differentiable
    t2 = Rings(std=s)
    y = rings(64, seeded(5)).double().requires_grad_(True)
    assert torch.allclose(t.energy(y), t2.energy(y))
    (gy,) = torch.autograd.grad(t.energy(y).sum(), y)
    assert torch.isfinite(gy).all()
    assert t.sample(10, seeded(0)).dtype == torch.float64


def test_checkerboard_uniform_on_black_squares():
    n = 80_000
    x = checkerboard(n, seeded(0))
    assert (x >= -2).all() and (x <= 2).all()
    cells = x.floor().long()
    assert ((cells.sum(-1) % 2) == 0).all()
    counts = Counter(map(tuple, cells.tolist()))
    assert len(counts) == 8
    for c in counts.values():
        assert abs(c - n / 8) < Z * math.sqrt(n / 8 * 7 / 8)
    frac = x - x.floor()  # uniform within the cell
    assert (frac.mean(0) - 0.5).abs().max() < Z * math.sqrt(1 / 12 / n)


def test_swiss_roll_curve():
    x = swiss_roll(2000, seeded(0), noise=0.0).double()
    s = 2.0 / (4.5 * math.pi)
    t = x.norm(dim=-1) / s
    assert t.min() >= 1.5 * math.pi - 1e-4 and t.max() <= 4.5 * math.pi + 1e-4
    assert torch.allclose(x, s * t[:, None] * torch.stack([t.cos(), t.sin()], -1), atol=1e-5)
    y = swiss_roll(2000, seeded(0)).double()
    assert 0.04 < float((y - x).std()) < 0.06


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(sorted(TOY_DATASETS)),
    n=st.integers(1, 300),
    seed=st.integers(0, 2**31 - 1),
)
def test_toy_property_shapes_and_seed(name, n, seed):
    a = toy_dataset(name, n, seed)
    assert a.shape == (n, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, toy_dataset(name, n, torch.Generator().manual_seed(seed)))


# --------------------------------------------------------------------------- digits


def _row_counter(x: torch.Tensor) -> Counter:
    return Counter(bytes(r.numpy().tobytes()) for r in x.reshape(x.shape[0], -1))


def test_load_digits():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))
    xtr, ytr = load_digits("train")
    xte, yte = load_digits("test")
    assert xtr.shape[0] + xte.shape[0] == 1797 and xte.shape[0] == 359
    assert _row_counter(torch.cat([xtr, xte])) == _row_counter(x)
    assert torch.equal(load_digits("test")[0], xte)  # deterministic
    g = seeded(7)
    state = g.get_state()
    a, _ = load_digits("train", g)
    b, _ = load_digits("test", g)
    assert torch.equal(g.get_state(), state)  # the generator is not advanced
    assert _row_counter(torch.cat([a, b])) == _row_counter(x)
    assert not torch.equal(a, xtr)
    assert load_digits("test", 7)[0].shape[0] == 359
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits("train", test_fraction=1.5)


# --------------------------------------------------------------------------- IDX / MNIST


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(dt).tobytes()


def write_mnist(root: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool):
    root.mkdir(parents=True, exist_ok=True)
    for stem, arr in zip(MNIST_FILES[split], (images, labels), strict=True):
        data = idx_bytes(arr)
        if gz:
            (root / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (root / stem).write_bytes(data)


@pytest.fixture
def tiny_mnist():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_tiny(tmp_path, tiny_mnist, gz):
    images, labels = tiny_mnist
    write_mnist(tmp_path, "train", images, labels, gz)
    write_mnist(tmp_path, "test", images[:2], labels[:2], gz)
    x, y = load_mnist(tmp_path)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == [3, 1, 4, 1, 5]
    assert float(x[0, 0, 0, 0]) == -1.0 and float(x[0, 0, 0, 1]) == 1.0
    back = ((x[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(back, images)
    xt, yt = load_mnist(str(tmp_path), "test")
    assert xt.shape == (2, 1, 28, 28) and yt.tolist() == [3, 1]
    assert torch.equal(load_mnist(tmp_path, "t10k")[0], xt)


def test_read_idx_types(tmp_path):
    for code, arr in [
        (0x0C, np.array([[1, -2, 3], [2**30, 0, -(2**31)]], dtype=np.int32)),
        (0x0E, np.array([1.5, -2.25, 1e300])),
        (0x0B, np.arange(-6, 6, dtype=np.int16).reshape(2, 2, 3)),
    ]:
        p = tmp_path / f"a{code}.idx"
        p.write_bytes(idx_bytes(arr, code))
        out = read_idx(p)
        assert out.shape == arr.shape and np.array_equal(out, arr)
        assert out.dtype.isnative


def test_mnist_corrupt_files(tmp_path, tiny_mnist):
    images, labels = tiny_mnist
    good_img, good_lab = idx_bytes(images), idx_bytes(labels)
    img, lab = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"

    def write(i, l_):
        img.write_bytes(gzip.compress(i))
        lab.write_bytes(gzip.compress(l_))

    cases = [
        (b"\x01\x00" + good_img[2:], good_lab, "magic"),  # not two zero bytes
        (good_img[:2] + b"\x07" + good_img[3:], good_lab, "type code"),
        (good_img[:-1], good_lab, "payload"),  # truncated
        (good_img + b"\x00", good_lab, "payload"),  # trailing junk
        (good_img[:10], good_lab, "truncated IDX header"),
        (good_lab, good_lab, "0x00000803"),  # labels where images belong
        (good_img, idx_bytes(labels[:4]), "5 images .* 4 labels"),
        (good_img, idx_bytes(np.array([1, 2, 3, 4, 12], dtype=np.uint8)), "0..9"),
    ]
    for i, l_, msg in cases:
        write(i, l_)
        with pytest.raises(ValueError, match=msg):
            load_mnist(tmp_path)
    img.write_bytes(gzip.compress(good_img)[:-20])  # corrupt gzip stream
    with pytest.raises(ValueError, match="gzip"):
        load_mnist(tmp_path)


def test_mnist_missing(tmp_path, tiny_mnist):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path / "nowhere")
    images, labels = tiny_mnist
    write_mnist(tmp_path, "train", images, labels, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "val")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.idx")


def test_load_real_mnist():
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    x, y = load_mnist(MNIST_DIR, "train")
    assert x.shape == (60000, 1, 28, 28) and y.shape == (60000,)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(y).tolist()[:3] == [5923, 6742, 5958]
    xt, yt = load_mnist(MNIST_DIR, "test")
    assert xt.shape == (10000, 1, 28, 28) and yt[:5].tolist() == [7, 2, 1, 0, 4]


# --------------------------------------------------------------------------- CIFAR-10


class Py2Pickler(pickle._Pickler):
    """Writes every ``str``/``bytes`` as a Python 2 ``str`` (BINSTRING), as cPickle did."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin1")
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)

    dispatch[str] = _save_str
    dispatch[bytes] = _save_str


def batch_blob(data: np.ndarray, labels: list[int], style: str = "py3") -> bytes:
    d = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    if style == "py3":
        return pickle.dumps(d, protocol=2)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(d)
    # numpy 1.x (as in the original files) names the module numpy.core.multiarray
    return buf.getvalue().replace(
        b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
    )


def make_cifar(root: Path, style: str = "py3", n_per: int = 3) -> dict:
    """Write a tiny cifar-10-batches-py/ under root; return the raw arrays per split."""
    rng = np.random.default_rng(1)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(n_per, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n_per)]
        (d / f"data_batch_{i}").write_bytes(batch_blob(data, labels, style))
        train_x.append(data)
        train_y += labels
    test = np.zeros((2, 3072), dtype=np.uint8)
    # pixel (row 1, col 2) of image 0: R = 10, G = 20, B = 30; image 1 all 255
    test[0, 0 * 1024 + 1 * 32 + 2] = 10
    test[0, 1 * 1024 + 1 * 32 + 2] = 20
    test[0, 2 * 1024 + 1 * 32 + 2] = 30
    test[1] = 255
    (d / "test_batch").write_bytes(batch_blob(test, [9, 0], style))
    (d / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, protocol=2)
    )
    return {"train": (np.concatenate(train_x), train_y), "test": (test, [9, 0]), "dir": d}


def make_tar(src_dir: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src_dir, arcname="cifar-10-batches-py")
        for name, blob in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out


def check_cifar(x, y, raw):
    data, labels = raw
    assert x.dtype == torch.float32 and x.shape == (data.shape[0], 3, 32, 32)
    assert y.dtype == torch.int64 and y.tolist() == list(labels)
    back = ((x + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(back.reshape(data.shape[0], 3072), data)


@pytest.mark.parametrize("style", ["py3", "py2"])
def test_cifar_extracted_dir(tmp_path, style):
    raw = make_cifar(tmp_path, style)
    for where in (raw["dir"], tmp_path, str(tmp_path)):
        check_cifar(*load_cifar10(where), raw["train"])
    x, y = load_cifar10(raw["dir"], "test")
    check_cifar(x, y, raw["test"])
    # layout: channel planes, row-major 32 x 32
    assert float(x[0, 0, 1, 2]) == pytest.approx(10 / 127.5 - 1)
    assert float(x[0, 1, 1, 2]) == pytest.approx(20 / 127.5 - 1)
    assert float(x[0, 2, 1, 2]) == pytest.approx(30 / 127.5 - 1)
    assert float(x[0, 0, 2, 1]) == -1.0 and float(x[1].min()) == 1.0


def test_cifar_tar(tmp_path):
    raw = make_cifar(tmp_path / "src")
    (tmp_path / "dl").mkdir()
    tar = make_tar(raw["dir"], tmp_path / "dl" / "cifar-10-python.tar.gz")
    for where in (tar, tar.parent):
        check_cifar(*load_cifar10(where), raw["train"])
        check_cifar(*load_cifar10(where, "test"), raw["test"])
    # nothing was extracted next to the archive
    assert sorted(os.listdir(tar.parent)) == ["cifar-10-python.tar.gz"]


def test_cifar_tar_rejects_unexpected_members(tmp_path):
    raw = make_cifar(tmp_path / "src")
    for i, name in enumerate(
        ["evil.sh", "cifar-10-batches-py/../../evil", "cifar-10-batches-py/data_batch_9"]
    ):
        tar = make_tar(raw["dir"], tmp_path / f"bad{i}.tar.gz", {name: b"x"})
        with pytest.raises(ValueError, match="unexpected archive member"):
            load_cifar10(tar)
    # a link posing as a batch
    tar_path = tmp_path / "link.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match="not a regular file"):
        load_cifar10(tar_path)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar at all")
    with pytest.raises(ValueError, match="tar"):
        load_cifar10(tmp_path / "junk.tar.gz")


def test_cifar_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        load_cifar10(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path)
    raw = make_cifar(tmp_path / "a")
    (raw["dir"] / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(raw["dir"])
    check_cifar(*load_cifar10(raw["dir"], "test"), raw["test"])  # test split still fine
    tar = make_tar(raw["dir"], tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tar)
    with pytest.raises(ValueError, match="split"):
        load_cifar10(raw["dir"], "valid")


class _SystemCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


class _Eval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload", [_SystemCall, _Eval])
@pytest.mark.parametrize("container", ["dir", "tar"])
def test_cifar_malicious_pickle_rejected(tmp_path, payload, container):
    marker = tmp_path / "PWNED"
    raw = make_cifar(tmp_path / "src")
    evil = {b"data": payload(marker), b"labels": [0]}
    (raw["dir"] / "test_batch").write_bytes(pickle.dumps(evil, protocol=2))
    where = raw["dir"]
    if container == "tar":
        where = make_tar(raw["dir"], tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_cifar10(where, "test")
    assert not marker.exists()
    # the payload really would have run with the plain unpickler
    pickle.loads(pickle.dumps(evil, protocol=2))
    assert marker.exists()


def test_restricted_unpickler_allows_arrays_only():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for proto in (2, 3, 4):  # protocol 5 arrays use _frombuffer, deliberately not allowed
        blob = pickle.dumps({b"a": arr, "b": [1, 2.5, "s", None, (3,)]}, protocol=proto)
        out = RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
        assert np.array_equal(out[b"a"], arr)
    scalar = pickle.dumps(np.float64(2.5), protocol=2)
    assert RestrictedUnpickler(io.BytesIO(scalar)).load() == 2.5
    for bad in (pickle.dumps(Path("x")), pickle.dumps(Counter("ab")), pickle.dumps(print)):
        with pytest.raises(pickle.UnpicklingError, match="not allowed"):
            RestrictedUnpickler(io.BytesIO(bad)).load()


def test_cifar_bad_batch_contents(tmp_path):
    raw = make_cifar(tmp_path)
    tb = raw["dir"] / "test_batch"
    bad = [
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "3072"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "labels"),
        ({b"pixels": np.zeros((2, 3072), np.uint8)}, "keys"),
    ]
    for d, msg in bad:
        tb.write_bytes(pickle.dumps(d, protocol=2))
        with pytest.raises(ValueError, match=msg):
            load_cifar10(raw["dir"], "test")
    tb.write_bytes(pickle.dumps({b"data": 1}, protocol=2)[:-5])
    with pytest.raises(ValueError, match="corrupt pickle"):
        load_cifar10(raw["dir"], "test")


# --------------------------------------------------------------------------- batching


def test_batches_partition_and_order():
    x = torch.arange(10)
    y = x * 10
    out = list(batches((x, y), 3, seeded(0)))
    assert [len(b[0]) for b in out] == [3, 3, 3, 1]
    xs = torch.cat([b[0] for b in out])
    assert sorted(xs.tolist()) == list(range(10)) and xs.tolist() != list(range(10))
    for bx, by in out:
        assert torch.equal(by, bx * 10)
    assert [len(b) for b in batches(x, 3, seeded(0), drop_last=True)] == [3, 3, 3]
    again = torch.cat(list(batches(x, 3, seeded(0))))
    assert torch.equal(again, xs)
    assert torch.cat(list(batches(x, 4, shuffle=False))).tolist() == list(range(10))


def test_batches_errors():
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(torch.zeros(3), 0))
    with pytest.raises(ValueError, match="leading size"):
        list(batches((torch.zeros(3), torch.zeros(4)), 2))
    with pytest.raises(TypeError, match="tensor"):
        list(batches([1, 2, 3], 2))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 50), bs=st.integers(1, 60), seed=st.integers(0, 1000))
def test_batches_property(n, bs, seed):
    parts = list(batches(torch.arange(n), bs, seed))
    assert sorted(torch.cat(parts).tolist()) == list(range(n))
    assert all(len(p) == bs for p in parts[:-1]) and 1 <= len(parts[-1]) <= bs


def test_random_hflip():
    x = torch.randn(400, 3, 4, 5, generator=seeded(0))
    assert torch.equal(random_hflip(x, seeded(1), p=0.0), x)
    assert torch.equal(random_hflip(x, seeded(1), p=1.0), x.flip(-1))
    out = random_hflip(x, seeded(2))
    flipped = (out != x).flatten(1).any(1)
    assert torch.equal(out[flipped], x[flipped].flip(-1))
    assert abs(int(flipped.sum()) - 200) < Z * math.sqrt(400 * 0.25)
    assert torch.equal(out, random_hflip(x, seeded(2)))
    with pytest.raises(ValueError, match="p must be"):
        random_hflip(x, p=1.5)
    with pytest.raises(ValueError, match="shape"):
        random_hflip(torch.zeros(3))


def test_toy_target_is_the_twin_of_toy_dataset():
    from ebmcmc.datasets import TOY_TARGETS, toy_target

    assert set(TOY_TARGETS) == {"eight_gaussians", "grid25", "rings"}
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    for name, fn in TOY_TARGETS.items():
        torch.testing.assert_close(toy_target(name, 0.03).log_prob(x), fn(0.03).log_prob(x))
    torch.testing.assert_close(
        toy_target("eight_gaussians", std=0.2).log_prob(x),
        eight_gaussians_target(std=0.2).log_prob(x),
    )
    for name in ("swiss_roll", "checkerboard", "bogus"):
        with pytest.raises(ValueError, match="no exact density"):
            toy_target(name)
