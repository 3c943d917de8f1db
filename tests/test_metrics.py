"""Tests for ebmcmc.metrics: MMD, sliced Wasserstein, grid KL, Frechet distance, classifier FID."""

from __future__ import annotations

import math
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ebmcmc.datasets import eight_gaussians, eight_gaussians_target, load_digits, load_mnist
from ebmcmc.evaluation import (
    DEFAULT_MMD_SCALES,
    ClassifierFID,
    default_cache_dir,
    frechet_distance,
    kl_on_grid,
    median_bandwidth,
    mmd,
    model_log_prob_on_grid,
    sliced_wasserstein,
)
from ebmcmc.targets import Gaussian

# where this machine keeps MNIST's IDX files (tests that need them skip without)
MNIST_DIR = Path(os.environ.get("EBMCMC_MNIST_DIR", "data/mnist"))
Z = 4.5


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    """Nothing in these tests may write to the user's ~/.cache."""
    monkeypatch.setenv("EBMCMC_CACHE", str(tmp_path / "env-cache"))


# --------------------------------------------------------------------------- MMD


def naive_mmd(x, y, bws):
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bws)

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return (
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def test_mmd_matches_naive_formula_and_blocks():
    g = seeded(0)
    x = torch.randn(37, 3, generator=g, dtype=torch.float64)
    y = torch.randn(23, 3, generator=g, dtype=torch.float64) * 1.3 + 0.2
    bws = [0.3, 1.0, 2.5]
    ref = naive_mmd(x, y, bws)
    assert torch.allclose(mmd(x, y, bws), ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(mmd(x, y, bws, block_size=5), ref, rtol=1e-10, atol=1e-12)
    # symmetric under a fixed kernel
    assert torch.allclose(mmd(y, x, bws), ref, rtol=1e-10, atol=1e-12)
    # default bandwidths: median heuristic of x times DEFAULT_MMD_SCALES
    h = median_bandwidth(x)
    ref = naive_mmd(x, y, [s * h for s in DEFAULT_MMD_SCALES])
    assert torch.allclose(mmd(x, y), ref, rtol=1e-10)


def test_mmd_unbiased_and_discriminates():
    # unbiased: mean over repeats of MMD^2 between samples of one law is 0 within MCSE
    g = seeded(1)
    vals = torch.stack(
        [
            mmd(torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g), [1.0])
            for _ in range(200)
        ]
    ).double()
    assert abs(float(vals.mean())) < Z * float(vals.std()) / math.sqrt(200)
    # a biased (V-statistic) estimator would sit clearly above 0 here
    assert float(vals.mean()) < 0.5 * (2.0 / 40)
    # same law: ~0.003; modes three times too wide: ~0.026 (default multiscale kernel)
    x = eight_gaussians(1000, seeded(2))
    assert float(mmd(x, eight_gaussians(1000, seeded(3)))) < 0.01
    assert float(mmd(x, eight_gaussians(1000, seeded(3), std=0.3))) > 0.015


def test_mmd_shapes_dtypes_errors():
    g = seeded(4)
    a, b = torch.rand(20, 1, 4, 4, generator=g), torch.rand(30, 1, 4, 4, generator=g)
    out = mmd(a, b, [1.0])
    assert out.shape == () and out.dtype == torch.float32
    assert torch.allclose(out, mmd(a.reshape(20, -1), b.reshape(30, -1), [1.0]))
    with pytest.raises(ValueError, match="same number of features"):
        mmd(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        mmd(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(a, b, [1.0, -1.0])
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        mmd(np.zeros((3, 2)), b)
    with pytest.raises(ValueError, match="non-finite"):
        mmd(torch.tensor([[0.0], [float("nan")]]), torch.zeros(3, 1))


# --------------------------------------------------------------------------- sliced W


def quantile_wp(a: np.ndarray, b: np.ndarray, p: float, k: int = 600_000) -> float:
    u = (np.arange(k) + 0.5) / k
    qa = np.sort(a)[np.minimum((u * len(a)).astype(int), len(a) - 1)]
    qb = np.sort(b)[np.minimum((u * len(b)).astype(int), len(b) - 1)]
    return float(np.mean(np.abs(qa - qb) ** p) ** (1 / p))


def test_sliced_wasserstein_one_dimensional_exact():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(1.0, 2.0, size=73)
    x, y = torch.tensor(a)[:, None], torch.tensor(b)[:, None]
    # in 1-D every direction is +-1, so SW_p = W_p
    w1 = float(sliced_wasserstein(x, y, 4, generator=0, p=1))
    assert w1 == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12)
    w2 = float(sliced_wasserstein(x, y, 4, generator=0, p=2))
    assert w2 == pytest.approx(quantile_wp(a, b, 2), rel=1e-4)
    w3 = float(sliced_wasserstein(x, y, 4, generator=0, p=3))
    assert w3 == pytest.approx(quantile_wp(a, b, 3), rel=1e-4)
    # equal sizes: sorted matching
    c = rng.normal(size=50)
    ref = np.sqrt(np.mean((np.sort(a) - np.sort(c)) ** 2))
    assert float(sliced_wasserstein(x, torch.tensor(c)[:, None], 2, generator=1)) == (
        pytest.approx(ref, rel=1e-12)
    )


def test_sliced_wasserstein_shift_in_2d():
    x = torch.randn(300, 2, generator=seeded(0), dtype=torch.float64)
    c = torch.tensor([3.0, -4.0], dtype=torch.float64)  # |c| = 5
    L = 4000
    sw = float(sliced_wasserstein(x, x + c, L, generator=seeded(1)))
    # each projection moves by |theta.c|, so SW_2^2 = E (theta.c)^2 = |c|^2 / 2,
    # and (theta.c)^2 = 25 cos^2(phi) has sd 25 / sqrt(8)
    assert abs(sw**2 - 12.5) < Z * 25 / math.sqrt(8) / math.sqrt(L)
    assert float(sliced_wasserstein(x, x.clone(), 16, generator=0)) == 0.0
    a = sliced_wasserstein(x, x + c, 8, generator=seeded(5))
    assert torch.equal(a, sliced_wasserstein(x, x + c, 8, generator=seeded(5)))
    assert a.dtype == torch.float64


def test_sliced_wasserstein_errors():
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="num_projections"):
        sliced_wasserstein(x, x, 0)
    with pytest.raises(ValueError, match="p must be"):
        sliced_wasserstein(x, x, p=0.5)
    with pytest.raises(ValueError, match="same number of features"):
        sliced_wasserstein(x, torch.zeros(5, 3))
    with pytest.raises(TypeError, match="generator"):
        sliced_wasserstein(x, x, generator="0")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_sliced_wasserstein_property_1d_w1(n, m, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=m)
    got = float(sliced_wasserstein(torch.tensor(a)[:, None], torch.tensor(b)[:, None], 1, p=1))
    assert got == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- grid KL


def gauss_kl(m1, c1, m2, c2) -> float:
    m1, c1, m2, c2 = (torch.as_tensor(v, dtype=torch.float64) for v in (m1, c1, m2, c2))
    p2 = torch.linalg.inv(c2)
    d = m2 - m1
    return float(
        0.5 * (torch.trace(p2 @ c1) + d @ p2 @ d - 2 + torch.logdet(c2) - torch.logdet(c1))
    )


def test_kl_on_grid_gaussians_closed_form():
    m1, c1 = [0.2, -0.1], [[1.0, 0.3], [0.3, 0.6]]
    m2, c2 = [0.7, 0.4], [[1.5, -0.2], [-0.2, 1.1]]
    p, q = Gaussian(m1, c1), Gaussian(m2, c2)
    kl = kl_on_grid(p.log_prob, q, 8.0, 300)
    assert abs(kl - gauss_kl(m1, c1, m2, c2)) < 1e-3
    assert abs(kl_on_grid(q.log_prob, p, 8.0, 300) - gauss_kl(m2, c2, m1, c1)) < 1e-3
    # the model's normalizer is irrelevant: shift the energy
    assert abs(kl_on_grid(p.log_prob, lambda x: q(x) + 17.0, 8.0, 300) - kl) < 1e-9


def test_kl_on_grid_target_with_itself():
    t = eight_gaussians_target(noise_std=0.01)
    kl = kl_on_grid(t.log_prob, t, 3.0, 300)
    assert abs(kl) < 1e-6
    # a slightly wider model: modes are far apart, so KL = 2-D Gaussian KL per component,
    # v1/v2 - 1 - log(v1/v2) with v the per-coordinate variances
    v1, v2 = 0.1**2 + 0.01**2, 0.1**2 + 0.05**2
    ref = v1 / v2 - 1 - math.log(v1 / v2)
    assert abs(kl_on_grid(t.log_prob, eight_gaussians_target(0.05), 3.0, 300) - ref) < 1e-3


def test_kl_on_grid_module_float32_and_device_dtype():
    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(2.0))  # float32

        def forward(self, x):
            assert x.dtype == torch.float32
            return 0.5 * self.scale * (x**2).sum(-1)

    p = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    kl = kl_on_grid(p.log_prob, Quadratic(), 8.0, 300)
    # KL(N(0, I) || N(0, I/2)) = 0.5 (tr(2 I) - 2 + log det(I/2)^-1 ...) = 1 - log 2
    assert abs(kl - (1 - math.log(2))) < 1e-3


def test_kl_on_grid_warns_when_grid_too_small():
    p = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    with pytest.warns(RuntimeWarning, match="integrates to"):
        kl_on_grid(p.log_prob, p, 1.5, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kl_on_grid(p.log_prob, p, 7.0, 64)


def test_model_log_prob_on_grid():
    lp = model_log_prob_on_grid(
        lambda x: 0.5 * (x**2).sum(-1), ((-7.0, 7.0), (-6.0, 8.0)), (70, 50)
    )
    assert lp.log_prob.shape == (50, 70)
    assert lp.log_z == pytest.approx(math.log(2 * math.pi), abs=1e-8)
    assert float(lp.log_prob.exp().sum() * lp.cell_area) == pytest.approx(1.0, abs=1e-12)
    assert lp.extent == pytest.approx((-7.0, 7.0, -6.0, 8.0))
    # row i is y = ys[i], column j is x = xs[j]
    t = Gaussian([1.0, -2.0], [[0.5, 0.0], [0.0, 0.5]])
    lp = model_log_prob_on_grid(t, 6.0, 120)
    i, j = divmod(int(lp.log_prob.argmax()), 120)
    assert abs(float(lp.xs[j]) - 1.0) < 0.06 and abs(float(lp.ys[i]) + 2.0) < 0.06


def test_grid_errors():
    e = lambda x: (x**2).sum(-1)  # noqa: E731
    with pytest.raises(ValueError, match="lim"):
        model_log_prob_on_grid(e, -1.0)
    with pytest.raises(ValueError, match="lim"):
        model_log_prob_on_grid(e, (2.0, 1.0))
    with pytest.raises(ValueError, match="resolution"):
        model_log_prob_on_grid(e, 1.0, 1)
    with pytest.raises(ValueError, match=r"energy must map points \(N, 2\)"):
        model_log_prob_on_grid(lambda x: x, 1.0, 10)
    with pytest.raises(ValueError, match="NaN"):
        model_log_prob_on_grid(lambda x: x[:, 0] * float("nan"), 1.0, 10)
    with pytest.raises(TypeError, match="log_p_data must be callable"):
        kl_on_grid(3.0, e, 1.0, 10)


# --------------------------------------------------------------------------- Frechet


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    ref = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(ref, rel=1e-10)
    # rotation invariance (commuting covariances in a rotated basis)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    got = frechet_distance(q @ m1, q @ np.diag(a) @ q.T, q @ m2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(ref, rel=1e-8)
    # a generic pair against tr sqrt(C1^1/2 C2 C1^1/2) by eigendecompositions
    x, y = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = x @ x.T + 0.1 * np.eye(6), y @ y.T + 0.1 * np.eye(6)
    w, v = np.linalg.eigh(c1)
    s1 = (v * np.sqrt(w)) @ v.T
    tr = np.sum(np.sqrt(np.linalg.eigvalsh(s1 @ c2 @ s1)))
    ref2 = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr
    assert frechet_distance(torch.tensor(m1), torch.tensor(c1), m2, c2) == pytest.approx(ref2)
    assert abs(frechet_distance(m1, c1, m1, c1)) < 1e-8
    # singular covariances (dead features) stay finite and accurate
    c3 = np.diag([1.0, 2.0, 0.0])
    assert abs(frechet_distance(np.zeros(3), c3, np.zeros(3), c3)) < 1e-6


def test_frechet_distance_errors():
    with pytest.raises(ValueError, match="cov2 must have shape"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="mu1 must have 1 dimension"):
        frechet_distance(np.zeros((2, 1)), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))


# --------------------------------------------------------------------------- classifier FID


@pytest.fixture(scope="module")
def digits_fid(tmp_path_factory):
    cache = tmp_path_factory.mktemp("fid-cache")
    return ClassifierFID("digits", cache_dir=cache), cache


def test_digits_classifier_fid(digits_fid):
    fid, cache = digits_fid
    assert not fid.loaded_from_cache
    assert fid.test_accuracy > 0.9
    xte, yte = load_digits("test")
    xtr, _ = load_digits("train")
    assert fid.accuracy(xte, yte) == pytest.approx(fid.test_accuracy)
    f = fid.features(xte)
    assert f.shape == (xte.shape[0], fid.feature_dim) and f.dtype == torch.float32
    noise = torch.rand(xte.shape, generator=seeded(0)) * 2 - 1
    real = fid.fid(xte, xtr)
    bad = fid.fid(xte, noise)
    assert real < bad / 10, (real, bad)
    assert abs(fid.fid(xte, xte)) < 1e-6
    # precomputed statistics and (N, 8, 8) inputs are accepted
    assert fid.fid(fid.statistics(xte), xtr[:, 0]) == pytest.approx(real)
    # cache layout
    assert fid.cache_path.parent == cache / "classifier_fid"
    assert fid.cache_path.name == "digits-v1-seed0-ep8-nall.pt"
    assert not list(fid.cache_path.parent.glob(".tmp-*"))


def test_digits_classifier_loaded_from_cache(digits_fid, monkeypatch):
    fid, cache = digits_fid
    x = load_digits("test")[0][:50]
    again = ClassifierFID("digits", cache_dir=cache)
    assert again.loaded_from_cache and again.test_accuracy == fid.test_accuracy
    assert torch.equal(again.features(x), fid.features(x))
    # the environment variable selects the cache when no argument is given
    monkeypatch.setenv("EBMCMC_CACHE", str(cache))
    assert default_cache_dir() == cache
    assert ClassifierFID("digits").loaded_from_cache


def test_classifier_training_is_deterministic_and_cache_is_safe(tmp_path):
    a = ClassifierFID("digits", cache_dir=tmp_path / "a", epochs=1)
    b = ClassifierFID("digits", cache_dir=tmp_path / "b", epochs=1)
    sa, sb = a.classifier.state_dict(), b.classifier.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.get_num_threads() >= 1
    # a cache file that is not a weights-only checkpoint is never unpickled: it is
    # replaced, and the payload does not run
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {marker}",))

    b.cache_path.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.warns(RuntimeWarning, match="retraining"):
        c = ClassifierFID("digits", cache_dir=tmp_path / "b", epochs=1)
    assert not marker.exists() and not c.loaded_from_cache
    sc = c.classifier.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    assert ClassifierFID("digits", cache_dir=tmp_path / "b", epochs=1).loaded_from_cache


def test_classifier_fid_errors(tmp_path, digits_fid):
    with pytest.raises(ValueError, match="dataset must be one of"):
        ClassifierFID("cifar10", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="data_path is required"):
        ClassifierFID("mnist", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="epochs"):
        ClassifierFID("digits", cache_dir=tmp_path, epochs=0)
    fid, _ = digits_fid
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\)"):
        fid.fid(torch.zeros(10, 1, 28, 28), torch.zeros(10, 1, 8, 8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fid.features(np.zeros((3, 1, 8, 8)))


def test_mnist_classifier_fid(tmp_path):
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    fid = ClassifierFID("mnist", cache_dir=tmp_path, data_path=MNIST_DIR)
    assert fid.test_accuracy > 0.9
    assert fid.cache_path.name == "mnist-v1-seed0-ep1-n10000.pt"
    x, _ = load_mnist(MNIST_DIR, "test")
    a, b = x[:1000], x[5000:6000]
    noise = torch.rand(a.shape, generator=seeded(0)) * 2 - 1
    real, bad = fid.fid(a, b), fid.fid(a, noise)
    assert real < bad / 10, (real, bad)
    # once cached, no data path is needed
    assert ClassifierFID("mnist", cache_dir=tmp_path).loaded_from_cache


def test_mmd_v_statistic_matches_direct_formula_and_is_positive():
    from ebmcmc.evaluation import mmd

    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 2, generator=g), torch.randn(30, 2, generator=g)
    bw = [0.5, 1.0]

    def k(a, b):
        d2 = torch.cdist(a.double(), b.double()).pow(2)
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bw)

    want = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    got = mmd(x, y, bandwidths=bw, unbiased=False)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-9)
    same = torch.randn(200, 2, generator=g)
    assert float(mmd(same, same[torch.randperm(200, generator=g)], bandwidths=bw,
                     unbiased=False)) >= 0  # fmt: skip
    assert float(mmd(x, torch.randn(40, 2, generator=g), bandwidths=bw, unbiased=False)) > 0
