"""Tests for ebmcmc.adaptation: dual averaging, Welford estimates, Stan's warm-up windows and
the window adaptation driven through ``ebmcmc.sample``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ebmcmc
from ebmcmc.adaptation import Adapter, DualAveraging, Welford, WindowAdaptation, warmup_schedule
from ebmcmc.kernels import HMC, MALA, Langevin, RandomWalk


def std_normal(x):
    return 0.5 * (x**2).sum(-1)


# ----------------------------------------------------------------------------- dual averaging


def test_dual_averaging_finds_the_step_of_a_known_acceptance_curve():
    """With a deterministic acceptance curve a(eps) = exp(-c eps), the fixed point for target
    0.8 is eps* = -log(0.8) / c; dual averaging works elementwise, one step per chain."""
    c = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    da = DualAveraging(torch.ones(3, dtype=torch.float64), target_accept=0.8)
    step = torch.ones(3, dtype=torch.float64)
    for _ in range(3000):
        step = da.update(torch.exp(-c * step))
    expected = -math.log(0.8) / c
    torch.testing.assert_close(da.final_step_size(), expected, rtol=0.02, atol=0)
    assert da.count == 3000


def test_dual_averaging_direction_nan_and_restart():
    da = DualAveraging(torch.tensor(1.0), target_accept=0.8)
    assert float(da.final_step_size()) == pytest.approx(1.0)  # no update yet
    for _ in range(20):
        da.update(torch.tensor(0.1))
    assert da.final_step_size() < 1.0
    up = DualAveraging(torch.tensor(1.0), target_accept=0.5)
    for _ in range(20):
        up.update(torch.tensor(1.0))
    assert up.final_step_size() > 1.0
    # NaN acceptance counts as 0 (a diverging step must shrink the step size)
    nan = DualAveraging(torch.tensor(1.0), target_accept=0.8)
    for _ in range(20):
        s = nan.update(torch.tensor(math.nan))
    assert torch.isfinite(s) and s < 1.0
    # restart centres the search on 10 x the given step, with fresh averages
    da.restart(torch.tensor(0.3))
    assert da.count == 0 and float(da.final_step_size()) == pytest.approx(0.3)
    assert float(da.mu) == pytest.approx(math.log(3.0))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_dual_averaging_target_validation(bad):
    with pytest.raises(ValueError, match="target_accept must lie in"):
        DualAveraging(torch.tensor(1.0), target_accept=bad)
    with pytest.raises(ValueError, match="target_accept must lie in"):
        WindowAdaptation(target_accept=bad)


@pytest.mark.parametrize(
    "kernel, warmup, target, tol",
    [
        (MALA(0.01), 500, 0.574, 0.02),
        (HMC(0.01, 5), 300, 0.8, 0.05),
        (RandomWalk(0.01), 500, 0.234, 0.02),
    ],
    ids=["mala", "hmc", "rw"],
)
def test_step_size_adaptation_reaches_target_acceptance(kernel, warmup, target, tol):
    """After warm-up the mean acceptance over 256 chains x 200 draws (standard error ~0.002) is
    near the target. Dual averaging samples with the *averaged* log step, which lags the
    iterate; with a few hundred warm-up steps that lag is worth up to ~0.01 of acceptance for
    MALA / random walk and ~0.03 for HMC (measured over seeds: MALA 0.575-0.578, HMC
    0.771-0.796, RW 0.234-0.240), hence the tolerances. Starting from a step 100x too small,
    the unadapted acceptance is ~1."""
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(256, 10, generator=g, dtype=torch.float64)
    tr = ebmcmc.sample(
        std_normal, kernel, x0, num_samples=200, num_warmup=warmup, generator=g, progress=False
    )
    acc = float(tr.stats["accept_prob"].mean())
    assert abs(acc - target) < tol, acc
    assert float(tr.kernel.step_size) > 10 * float(kernel.step_size)
    # the recorded step size is the adapted one, constant over the draws
    assert torch.all(tr.stats["step_size"] == float(tr.kernel.step_size))


def test_custom_target_acceptance():
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(256, 10, generator=g, dtype=torch.float64)
    tr = ebmcmc.sample(
        std_normal,
        MALA(0.01),
        x0,
        num_samples=200,
        num_warmup=500,
        generator=g,
        progress=False,
        adaptation=WindowAdaptation(target_accept=0.9),
    )
    assert abs(float(tr.stats["accept_prob"].mean()) - 0.9) < 0.02


# ----------------------------------------------------------------------------- Welford


def _feed(w: Welford, x: np.ndarray):
    for t in range(x.shape[0]):
        w.update(torch.from_numpy(x[t]))


@pytest.mark.parametrize("batch", [(7,), (3, 4)])
def test_welford_pooled_equals_numpy_var(batch, rng):
    x = rng.normal(2.0, 3.0, size=(50, *batch, 2, 3))  # (draw, *batch, *event)
    w = Welford(batch_ndim=len(batch), per_chain=False)
    _feed(w, x)
    flat = x.reshape(-1, 2, 3)
    assert w.n == flat.shape[0]
    np.testing.assert_allclose(w.mean.numpy(), flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        w.variance(regularize=False).numpy(), flat.var(0, ddof=1), rtol=1e-10
    )
    n = flat.shape[0]
    np.testing.assert_allclose(
        w.variance().numpy(), n / (n + 5) * flat.var(0, ddof=1) + 1e-3 * 5 / (n + 5), rtol=1e-10
    )


def test_welford_per_chain_equals_numpy_var(rng):
    x = rng.normal(size=(40, 5, 3)) * np.arange(1, 6)[None, :, None]
    w = Welford(batch_ndim=1, per_chain=True)
    _feed(w, x)
    assert w.variance().shape == (5, 3)
    np.testing.assert_allclose(w.variance(regularize=False).numpy(), x.var(0, ddof=1), rtol=1e-10)


def test_welford_keep_ndim_pools_only_trailing_batch_dims(rng):
    x = rng.normal(size=(30, 2, 4, 3)) * np.array([1.0, 10.0])[None, :, None, None]
    w = Welford(batch_ndim=2, per_chain=False, keep_ndim=1)
    _feed(w, x)
    expected = x.transpose(1, 0, 2, 3).reshape(2, -1, 3).var(1, ddof=1)
    np.testing.assert_allclose(
        w.variance(regularize=False).numpy().reshape(2, 3), expected, rtol=1e-10
    )


def test_welford_reset_and_too_few_draws():
    w = Welford(batch_ndim=1, per_chain=True)
    with pytest.raises(ValueError, match="at least two draws"):
        w.variance()
    w.update(torch.ones(3, 2))
    with pytest.raises(ValueError, match="at least two draws"):
        w.variance()
    w.update(torch.zeros(3, 2))
    assert w.variance(regularize=False).shape == (3, 2)
    w.reset()
    assert w.n == 0 and w.mean is None


# ----------------------------------------------------------------------------- warm-up schedule


def test_warmup_schedule_stan_defaults():
    assert warmup_schedule(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert warmup_schedule(150) == [(75, 100)]
    assert warmup_schedule(19) == []
    assert warmup_schedule(0) == []
    # buffers that do not fit shrink to 15 % / 10 % (Stan)
    assert warmup_schedule(100) == [(15, 90)]


@given(
    num_warmup=st.integers(0, 5000),
    initial_buffer=st.integers(0, 300),
    term_buffer=st.integers(0, 300),
    base_window=st.integers(1, 200),
)
def test_warmup_windows_partition_the_slow_phase(
    num_warmup, initial_buffer, term_buffer, base_window
):
    windows = warmup_schedule(num_warmup, initial_buffer, term_buffer, base_window)
    if num_warmup < 20:
        assert windows == []
        return
    fits = initial_buffer + base_window + term_buffer <= num_warmup
    init = initial_buffer if fits else int(0.15 * num_warmup)
    term = term_buffer if fits else int(0.1 * num_warmup)
    base = base_window if fits else num_warmup - init - term
    assert windows, "there is always a slow phase"
    # contiguous, non-empty, covering exactly [init, num_warmup - term)
    assert windows[0][0] == init
    assert windows[-1][1] == num_warmup - term
    for (_, e0), (s1, _) in zip(windows, windows[1:], strict=False):
        assert e0 == s1
    assert all(e > s for s, e in windows)
    # sizes double; the last one absorbs what is left (at least its doubled size)
    sizes = [e - s for s, e in windows]
    for i, size in enumerate(sizes[:-1]):
        assert size == base * 2**i
    assert sizes[-1] >= base * 2 ** (len(sizes) - 1)


@pytest.mark.parametrize(
    "kwargs", [{"base_window": 0}, {"initial_buffer": -1}, {"term_buffer": -5}]
)
def test_window_validation(kwargs):
    with pytest.raises(ValueError, match="base_window|initial_buffer|term_buffer"):
        WindowAdaptation(**kwargs)
    args = {"initial_buffer": 75, "term_buffer": 50, "base_window": 25} | kwargs
    with pytest.raises(ValueError, match="base_window >= 1 and non-negative buffers"):
        warmup_schedule(1000, **args)


# ----------------------------------------------------------------------------- mass matrix


def test_hmc_mass_matrix_adaptation_learns_the_variances():
    """Diagonal Gaussian with variances 0.01 ... 100 (condition number 1e4). The inverse mass
    matrix after warm-up is the regularized Welford variance of the last slow window
    (steps 150-250 of 300, 128 chains: 12,800 draws). With a measured integrated
    autocorrelation of x^2 of about 2 transitions its relative standard error is
    sqrt(2 * 2 / 12,800) ~ 1.8 %, so 4 standard errors are 7 %; the bound is 10 % to leave
    room for the chains' residual relaxation in the widest coordinate (measured: within
    4 % over three seeds). The identity it starts from is off by up to a factor 100."""
    var = torch.logspace(-2, 2, 10, dtype=torch.float64)

    def energy(x):
        return 0.5 * (x**2 / var).sum(-1)

    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(128, 10, generator=g, dtype=torch.float64)
    tr = ebmcmc.sample(
        energy, HMC(0.01, 6), x0, num_samples=20, num_warmup=300, generator=g, progress=False
    )
    inv_m = tr.kernel.inverse_mass_matrix
    assert inv_m.shape == (10,)
    rel = (inv_m / var - 1).abs()
    assert (rel < 0.10).all(), rel
    # with the learned metric a single step size suits every coordinate
    assert 0.6 < float(tr.stats["accept_prob"].mean()) < 0.95


def test_mass_matrix_off_and_step_size_off(gen):
    x0 = torch.randn(32, 3, generator=gen, dtype=torch.float64)
    tr = ebmcmc.sample(
        std_normal,
        HMC(0.05, 3),
        x0,
        num_samples=5,
        num_warmup=200,
        generator=gen,
        progress=False,
        adaptation=WindowAdaptation(mass_matrix=False),
    )
    assert tr.kernel.inverse_mass_matrix is None
    assert float(tr.kernel.step_size) != 0.05
    tr = ebmcmc.sample(
        std_normal,
        HMC(0.05, 3),
        x0,
        num_samples=5,
        num_warmup=200,
        generator=gen,
        progress=False,
        adaptation=WindowAdaptation(step_size=False),
    )
    assert tr.kernel.step_size == 0.05
    assert tr.kernel.inverse_mass_matrix.shape == (3,)
    tr = ebmcmc.sample(
        std_normal,
        HMC(0.05, 3),
        x0,
        num_samples=5,
        num_warmup=200,
        generator=gen,
        progress=False,
        adaptation=None,
    )
    assert tr.kernel == HMC(0.05, 3)


@pytest.mark.parametrize("batch", [(12,), (3, 4)])
def test_per_chain_adaptation_shapes(batch, gen):
    x0 = torch.randn(*batch, 2, generator=gen, dtype=torch.float64)
    scales = torch.linspace(0.5, 3.0, math.prod(batch), dtype=torch.float64).reshape(*batch, 1)

    def energy(x):
        return 0.5 * ((x / scales) ** 2).sum(-1)

    tr = ebmcmc.sample(
        energy,
        HMC(0.05, 3),
        x0 * scales,
        num_samples=10,
        num_warmup=200,
        generator=gen,
        progress=False,
        adaptation=WindowAdaptation(per_chain=True),
    )
    assert tr.kernel.step_size.shape == batch
    assert tr.kernel.inverse_mass_matrix.shape == (*batch, 2)
    # each chain learned (roughly) its own scale
    learned = tr.kernel.inverse_mass_matrix.mean(-1).sqrt().reshape(-1)
    corr = np.corrcoef(learned.numpy(), scales.reshape(-1).numpy())[0, 1]
    assert corr > 0.8
    assert tr.stats["step_size"].shape == (math.prod(batch), 10)
    # shared adaptation on a 2-D batch gives one value
    tr = ebmcmc.sample(
        energy, MALA(0.05), x0, num_samples=5, num_warmup=100, generator=gen, progress=False
    )
    assert isinstance(tr.kernel.step_size, float)  # one shared value, kept as a float


def test_kernels_without_target_are_not_adapted(gen):
    x0 = torch.randn(16, 2, generator=gen)
    tr = ebmcmc.sample(
        std_normal,
        Langevin(0.05),
        x0,
        num_samples=5,
        num_warmup=100,
        generator=gen,
        progress=False,
    )
    assert tr.kernel == Langevin(0.05)
    assert torch.all(tr.stats["step_size"] == 0.05)


def test_adapter_by_hand_matches_the_driver():
    """Driving the Adapter manually reproduces what sample() does with the same draws."""
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kernel = HMC(0.1, 3)
    state = kernel.init(std_normal, x0)
    adapter = WindowAdaptation().start(kernel, state, num_warmup=150)
    assert isinstance(adapter, Adapter) and adapter.windows == [(75, 100)]
    g = torch.Generator().manual_seed(3)
    for _ in range(150):
        state, info = kernel.step(std_normal, state, g)
        kernel = adapter.update(kernel, state, info)
    kernel = adapter.finalize(kernel)
    tr = ebmcmc.sample(
        std_normal,
        HMC(0.1, 3),
        x0,
        num_samples=1,
        num_warmup=150,
        progress=False,
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(torch.as_tensor(tr.kernel.step_size), torch.as_tensor(kernel.step_size))
    assert torch.equal(tr.kernel.inverse_mass_matrix, kernel.inverse_mass_matrix)


# ----------------------------------------------------------------------------------------------
# ChEES trajectory length: a scale-free gradient and a normaliser that outliers cannot freeze
# ----------------------------------------------------------------------------------------------
def test_scale_free_chees_gradient_does_not_depend_on_the_targets_scale():
    from ebmcmc.adaptation.trajectory import chees_gradient

    g = torch.Generator().manual_seed(0)
    x0, x1, v = (torch.randn(64, 3, generator=g, dtype=torch.float64) for _ in range(3))
    ones, no = torch.ones(64, dtype=torch.float64), torch.zeros(64, dtype=torch.bool)
    raw = [chees_gradient(c * x0, c * x1, c * v, ones, no, 1.0) for c in (1.0, 1e3)]
    free = [chees_gradient(c * x0, c * x1, c * v, ones, no, 1.0, length=0.7) for c in (1.0, 1e3)]
    assert raw[1] / raw[0] == pytest.approx(1e12, rel=1e-9)  # the raw one grows as scale^4
    assert free[1] == pytest.approx(free[0], rel=1e-9) and free[0] != 0.0
    assert math.copysign(1, free[0]) == math.copysign(1, raw[0])


def test_one_outlying_chees_gradient_does_not_freeze_the_trajectory_length():
    from ebmcmc.adaptation.trajectory import (
        trajectory_init,
        trajectory_restart,
        trajectory_update,
    )

    s = trajectory_init(0.1)
    for _ in range(20):
        s = trajectory_update(s, 0.05)
    grown = s.log_length
    s = trajectory_update(s, 6e8)  # one chain thrown far out
    for _ in range(20):
        s = trajectory_update(s, 0.05)
    # the outlier was clipped to 10 RMS, so small positive gradients still move log T up
    assert s.log_length - grown > 20 * 0.025 * 0.5
    # a restart (new mass matrix) folds the history into one update: its scale still bounds
    # the first new gradient, and fades within tens of updates
    r = trajectory_restart(s)
    assert r.num_updates == 1 and r.log_length_avg == r.log_length == s.log_length
    r2 = trajectory_update(r, 1e12)
    assert r2.avg_sq_grad < 100 * s.avg_sq_grad
